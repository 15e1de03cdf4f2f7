import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def single_torch_thread():
    """One intra-op thread, as the workflow's jobs use: tiny models gain nothing from more, and spinning
    threads on a shared CPU slow everything down many-fold."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
