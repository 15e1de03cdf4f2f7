"""One live attempt per job: a long-running job (training, a tuning worker) holds an exclusive lock beside its
outputs while it runs.

A process of a failed or killed job can outlive it (a killed shell leaves its child running where the kernel
does not stop it: see `mlaflow.cli.die_with_parent`); a rerun beside it would write the same files. So every
attempt first takes an exclusive `flock` on `<output folder>/.done/<stem of its first output>.lock`, without
waiting: while a live earlier attempt holds it, the rerun fails at once, naming that attempt's pid. The kernel
releases the lock when its process dies, however it dies, so a killed attempt never blocks a rerun. The file
holds the holder's pid and host (for that message); the holder removes it when the job ends.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlaflow.errors import InputError


def lock_path(output: str | Path) -> Path:
    """The lock file of the job whose first output is `output`."""
    output = Path(output)
    return output.parent / ".done" / f"{output.stem}.lock"


@contextmanager
def job_lock(output: str | Path, path: Path | None = None) -> Iterator[Path]:
    """Hold the lock of the job whose first output is `output` (or the lock file `path`) while the block runs;
    fail at once (InputError) if a live earlier attempt of the job holds it."""
    path = path or lock_path(output)
    fd = _acquire(path)
    try:
        yield path
    finally:
        # removed while still held, then released: an attempt that opened this file before and locks it after
        # sees that the path no longer names it (_acquire) and locks the path's new file instead
        path.unlink(missing_ok=True)
        os.close(fd)


def _acquire(path: Path) -> int:
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise InputError(
                path,
                f"cannot create the job's lock file ({err.strerror or err})",
                "make the folder writable (or free disk space) and re-run",
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").split()
            os.close(fd)
            raise InputError(
                path,
                f"an earlier attempt of this job ({_describe(holder)}) is still running",
                "wait for it or kill it, then re-run",
            ) from None
        except OSError as err:
            os.close(fd)
            raise InputError(
                path,
                f"cannot be locked ({err.strerror or err})",
                "put the outputs on a file system that supports flock, then re-run",
            ) from err
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(current, os.fstat(fd)):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            return fd
        os.close(fd)  # its holder removed this file as it finished: lock the one now at the path


def _describe(holder: list[str]) -> str:
    if not holder or not holder[0].isdigit():
        return "its pid is not written yet"
    return f"pid {holder[0]}" + (f" on {holder[1]}" if len(holder) > 1 else "")
