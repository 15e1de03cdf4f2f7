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


@pytest.fixture(scope="session")
def full_disk(tmp_path_factory):
    """A disk that fills up under HDF5 (tests/full_disk.py)."""
    from full_disk import FullDisk

    return FullDisk(tmp_path_factory.mktemp("full_disk"))
