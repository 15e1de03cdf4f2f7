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
    """A wrong key or value of the config. `source` names where the config came from: params.yaml, or the files
    (and --config values) Snakemake merged it from (`mlaflow.pipeline.params.validate(..., source=...)`)."""

    def __init__(self, key: str, problem: str, fix: str = "edit the config", source: str = "params.yaml"):
        self.key, self.problem, self.fix, self.source = key, problem, fix, source
        super().__init__(f"{source}: `{key}`: {problem}. Fix: {fix}")

    def from_source(self, source: str) -> ParamsError:
        """The same error, naming `source` as where the config came from."""
        return ParamsError(self.key, self.problem, self.fix, source)
