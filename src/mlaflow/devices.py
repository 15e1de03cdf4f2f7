"""Device choice shared by extraction and training: `auto` means CUDA when present, else CPU."""

from __future__ import annotations

import os

import torch

from mlaflow.errors import ParamsError


def resolve_device(spec: str, key: str = "device") -> torch.device:
    """Turn a params device string (auto | cpu | cuda | cuda:N) into a torch.device.

    With `auto` and several GPUs visible, the GPU is picked from CUDA_VISIBLE_DEVICES as set by the scheduler
    (SLURM sets it per job); locally Snakemake assigns no GPU ids, so every job would land on cuda:0.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ParamsError(
            key,
            f"`{spec}` requested but no CUDA device is visible "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})",
            "set it to auto or cpu on this machine",
        )
    return torch.device(spec)
