"""Provenance recorded with every result: git commit, package versions, host."""
from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from importlib import metadata

from mlaflow.params import REPO_ROOT

PACKAGES = ("mlaflow", "torch", "torchvision", "torchaudio", "transformers", "snakemake", "dvc", "h5py",
            "pandas", "numpy")


@lru_cache(maxsize=1)
def git_commit() -> str:
    """`git describe --always --dirty` of the repository, or 'unknown' outside a git checkout."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=REPO_ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
