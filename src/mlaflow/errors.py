"""Errors that a user can act on.

Every error raised for bad input names the file (or parameter) at fault and says how to fix it, so that a
failed Snakemake job's log is enough to repair the input without reading code.
"""

from __future__ import annotations

from pathlib import Path


class MlaflowError(Exception):
    """Base class of all errors mlaflow raises on purpose."""


class InputError(MlaflowError):
    """Bad input data: a corrupt, missing or inconsistent file.

    >>> raise InputError("data/x.wav", "cannot be decoded", "re-export it as 16 kHz PCM wav")
    """

    def __init__(self, path: str | Path | None, problem: str, fix: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{problem}. Fix: {fix}")


class ParamsError(MlaflowError):
    """A wrong key or value in params.yaml (or a CLI argument that refers to it)."""

    def __init__(self, key: str, problem: str, fix: str = "edit params.yaml"):
        self.key = key
        super().__init__(f"params.yaml: `{key}`: {problem}. Fix: {fix}")
