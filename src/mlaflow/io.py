"""Atomic file writes: a killed job never leaves a file that looks complete.

Everything mlaflow writes goes to a temporary sibling first and is renamed into place only once it is whole
(`os.replace` is atomic on POSIX within one file system).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` if the block succeeds.

    Works for files and directories. On error the temporary is removed and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a killed earlier attempt at this same output (SIGKILL skips `finally`) left its temporary: remove it, so
    # that it neither piles up nor enters a DVC output's hash
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp{glob.escape(suffix)}"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # the caller creates it (a file or a directory)
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_json(path: str | Path, obj: Any, sort_keys: bool = True) -> None:
    """`obj` as JSON, atomically. Job configs keep their key order (sort_keys=False): lists of the config's
    order (variants, sections) are iterated in it; hashes never depend on it (keys.config_hash sorts)."""
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json_text(obj, sort_keys))


def json_text(obj: Any, sort_keys: bool = True) -> str:
    """The text `write_json` writes."""
    return json.dumps(obj, indent=2, sort_keys=sort_keys, default=_json_default) + "\n"


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays appear in metrics; convert without importing numpy here
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
