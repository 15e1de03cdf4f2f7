"""Provenance recorded with every result: git commit, package versions, host."""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

PACKAGES = (
    "mlaflow",
    "torch",
    "torchvision",
    "torchaudio",
    "transformers",
    "snakemake",
    "dvc",
    "h5py",
    "pandas",
    "numpy",
    "opencv-python-headless",
)


# Files the pipeline itself writes into tracked paths: DVC rewrites dvc.lock between stages and the report
# stages write reports/. Their changes do not make the code that produced a result differ from the commit.
PIPELINE_OUTPUTS = ("dvc.lock", "reports")


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The checked-out commit (12 hex digits), with "-dirty" if tracked files other than the pipeline's own
    outputs (PIPELINE_OUTPUTS) differ from it; 'unknown' outside a git checkout."""
    try:

        def git(*args: str) -> str:
            return subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
            ).stdout

        commit = git("rev-parse", "--short=12", "HEAD").strip()
        changed = git(
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            *(f":(exclude){path}" for path in PIPELINE_OUTPUTS),
        )
        return f"{commit}-dirty" if changed.strip() else commit
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
