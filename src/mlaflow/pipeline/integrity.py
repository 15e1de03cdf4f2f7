"""`mlaflow verify`: every file of a stage's outputs reads back whole, before DVC records it in dvc.lock.

Snakemake decides staleness from timestamps, checksums of small files and its own metadata: a feature store
truncated in place with its timestamp kept looks up to date to it, and `dvc repro` would then seal the damaged
file's hash into dvc.lock. So each DVC stage runs `snakemake <stage> && mlaflow verify <its outputs>`: a file
that cannot be read whole fails the stage, naming the file and the fix, and nothing is recorded.

What "reads whole" means per file: a feature store passes `read_store` (every row, the `complete` flag, and,
when the manifest is among the paths, one row per utterance of it); any other HDF5 file reads every dataset;
JSON parses; CSV parses. Other files (encoder weights, images) are not opened.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pandas as pd

from mlaflow.errors import InputError

MANIFEST = "manifest.csv"
SHOWN = 5


def _files(paths: list[str]) -> list[Path]:
    out = []
    for path in map(Path, paths):
        if path.is_dir():
            # hidden entries (a training job's .done/ resume records, temporaries) are not outputs
            out += sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.is_file():
            out.append(path)
        else:
            raise InputError(
                path, "output not found", "run `dvc repro` again (the stage's target remakes it)"
            )
    return out


def _check_hdf5(path: Path, manifest_ids: list[str] | None) -> None:
    from mlaflow.features.store import read_store

    with h5py.File(path, "r") as f:
        is_store = "features" in f and "modality" in f.attrs
        if not is_store:
            f.visititems(lambda name, node: node[()] if isinstance(node, h5py.Dataset) else None)
            return
    table = read_store(path)
    if manifest_ids is not None and sorted(table.ids) != sorted(manifest_ids):
        raise InputError(
            path,
            f"holds {len(table.ids)} rows, the manifest {len(manifest_ids)} utterances",
            "delete it and run `dvc repro` again (it is re-extracted)",
        )


def check(path: Path, manifest_ids: list[str] | None = None) -> None:
    """Raise if `path` does not read back whole (see the module docstring)."""
    try:
        if path.suffix == ".h5":
            _check_hdf5(path, manifest_ids)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".csv":
            pd.read_csv(path)
        elif path.suffix == ".journal":  # Optuna's journal storage: one JSON object per line
            for line in path.read_text().splitlines():
                if line.strip():
                    json.loads(line)
    except InputError:
        raise
    except Exception as err:  # h5py/OSError (truncated), JSON, CSV, UnicodeDecodeError: the file is damaged
        raise InputError(
            path,
            f"cannot be read whole ({type(err).__name__}: {err})",
            "delete it and run `dvc repro` again (it is recomputed)",
        ) from err


def verify(paths: list[str]) -> int:
    """Check every file under `paths`; raise one InputError naming the damaged ones. Returns the count checked."""
    files = _files(paths)
    # a store <data>/features/x.h5 is checked against its own workflow's manifest, <data>/manifest/manifest.csv,
    # when that is among the paths (the table1 stage's folder holds one workflow per corpus)
    manifests = {p.parent.parent: p for p in files if p.name == MANIFEST and p.parent.name == "manifest"}
    manifest_ids = {
        root: pd.read_csv(path, dtype={"utterance_id": str})["utterance_id"].tolist()
        for root, path in manifests.items()
    }
    bad = []
    for path in files:
        try:
            check(path, manifest_ids.get(path.parent.parent) if path.parent.name == "features" else None)
        except InputError as err:
            bad.append(err)
    if bad:
        listed = "; ".join(f"{err.path}: {err.problem}" for err in bad[:SHOWN])
        more = f" (and {len(bad) - SHOWN} more)" if len(bad) > SHOWN else ""
        raise InputError(
            None,
            f"{len(bad)} output file(s) are damaged: {listed}{more}",
            "delete the damaged files and run `dvc repro` again: they are recomputed, nothing else is",
        )
    return len(files)
