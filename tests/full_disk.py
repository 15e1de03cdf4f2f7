"""A disk that fills up, under HDF5's own file driver: tests/full_disk.c, preloaded into a Python subprocess,
fails every write to a `*.partial.h5` file with ENOSPC once the flag file exists, as write(2) fails on a full
disk (a copy-on-write file system fails even the writes that overwrite a file in place).

Building it needs a C compiler (cc or gcc); without one the tests that use it fail saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).with_name("full_disk.c")


class FullDisk:
    def __init__(self, directory: Path):
        compiler = shutil.which("cc") or shutil.which("gcc")
        assert compiler, (
            "the full-disk tests build tests/full_disk.c: they need a C compiler (apt-get install gcc)"
        )
        self.library = directory / "full_disk.so"
        subprocess.run([compiler, "-shared", "-fPIC", "-o", self.library, SOURCE, "-ldl"], check=True)
        self.flag = directory / "disk_full"  # the script creates it when the disk is to fill up

    def run(self, script: str, *args: str | Path) -> dict:
        """Run `script` (python, with `args`) on this disk; return its last line of output, a JSON object. The
        disk has space again afterwards."""
        env = {**os.environ, "LD_PRELOAD": str(self.library), "FULL_DISK_FLAG": str(self.flag)}
        try:
            job = subprocess.run(
                [sys.executable, "-c", script, *map(str, args)],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
        finally:
            self.flag.unlink(missing_ok=True)
        assert job.returncode == 0 and job.stdout.strip(), f"exit {job.returncode}: {job.stderr[-3000:]}"
        return json.loads(job.stdout.splitlines()[-1])
