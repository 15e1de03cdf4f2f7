"""The merge of a sharded extraction (`mlaflow merge-features`): N shard stores into one feature store.

With runtime.extraction_shards N > 1, N extraction jobs (`mlaflow extract --shard k --shards N`) each write a
feature store of their own rows (`mlaflow.features.extract`); this job streams them into the modality's store,
which then has the schema and the attributes of a store extracted in one job (`mlaflow.features.store`), rows in
manifest order. Before writing anything it checks that the shards are complete stores of the job's modality and
width, written with the job's config (the same `params_hash`) by the same encoder, and that their ids are
exactly the manifest's, none held twice; otherwise an InputError names the shard.

Rows are copied in blocks of `MERGE_ROWS` (contiguous reads of each shard; the whole matrix is never in memory)
through the store's own writer: the output appears atomically, and a killed merge resumes from its partial file.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from mlaflow.errors import InputError
from mlaflow.features.store import (
    FeatureStoreWriter,
    _checked_attrs,
    _name_some,
    _python_value,
    _read_strings,
)

log = logging.getLogger(__name__)

MERGE_ROWS = 4096  # rows copied at a time
# besides modality, dim and params_hash; input_shape: a store of prepared inputs (train.encoder resnet18) only
SAME_IN_EVERY_SHARD = ("encoder", "model_source", "pretrained", "input_shape")
REDO = "delete it and re-run the workflow, which extracts that shard again"
REDO_ALL = "delete the modality's shard stores and re-run the workflow, which extracts them again"


def merge_job(
    config: dict, manifest_path: str | Path, shard_paths: Sequence[str | Path], out_path: str | Path
) -> dict:
    """The merge job: `config` is the extraction's config file (its hash is every shard's `params_hash`)."""
    from mlaflow.keys import config_hash

    manifest = pd.read_csv(manifest_path, dtype={"utterance_id": str, "transcript": str})
    for column in ("utterance_id", "label"):
        if column not in manifest.columns:
            raise InputError(manifest_path, f"the manifest has no column `{column}`", "rebuild the manifest")
    return merge_shards(
        shard_paths,
        out_path,
        [str(value) for value in manifest["utterance_id"]],
        [str(value) for value in manifest["label"]],
        modality=config["modality"],
        dim=int(config["encoder"]["dim"]),
        params_hash=config_hash(config),
    )


def merge_shards(
    shard_paths: Sequence[str | Path],
    out_path: str | Path,
    ids: Sequence[str],
    labels: Sequence[str],
    modality: str,
    dim: int,
    params_hash: str,
    block_rows: int = MERGE_ROWS,
) -> dict:
    """Stream the shard stores into the store at `out_path`, whose rows are `ids` (with `labels`) in this order."""
    started = time.perf_counter()
    ids, labels = [str(i) for i in ids], [str(label) for label in labels]
    repeated = [item for item, count in Counter(ids).items() if count > 1]
    if repeated:
        raise InputError(
            None, f"the manifest repeats utterance id(s) {_name_some(repeated)}", "keep one row each"
        )
    position = {item: row for row, item in enumerate(ids)}
    shards = [_checked_shard(Path(path), position, modality, dim, params_hash) for path in shard_paths]
    _check_partition(shards, ids)
    first_path, first_attrs, _ = shards[0]
    for path, attrs, _ in shards[1:]:
        for name in SAME_IN_EVERY_SHARD:
            if attrs.get(name) != first_attrs.get(name):
                raise InputError(
                    path,
                    f"its `{name}` is {attrs.get(name)!r} but {first_path}'s is {first_attrs.get(name)!r}",
                    REDO,
                )
    store_attrs = {"modality": modality, "params_hash": params_hash}
    # (input_shape only where the shards have it: a store of features has none, and the unsharded store neither)
    store_attrs.update(
        {
            name: first_attrs.get(name, "unknown")
            for name in SAME_IN_EVERY_SHARD
            if name != "input_shape" or name in first_attrs
        }
    )

    n_copied = 0
    with FeatureStoreWriter(out_path, ids, labels, dim, store_attrs) as writer:
        pending = np.zeros(len(ids), dtype=bool)
        pending[writer.pending_rows()] = True
        for path, _, rows in shards:
            n_copied += _copy_shard(path, rows, pending, writer, block_rows)
        writer.finish()
    stats = {
        "modality": modality,
        "n": len(ids),
        "shards": len(shards),
        "n_copied": n_copied,
        "n_resumed": writer.n_resumed,
        "resume": writer.resume_note,
        "seconds": round(time.perf_counter() - started, 3),
    }
    log.info("%s: merged %d shard stores: %s", out_path, len(shards), stats)
    return stats


def _checked_shard(
    path: Path, position: dict[str, int], modality: str, dim: int, params_hash: str
) -> tuple[Path, dict[str, Any], np.ndarray]:
    """(path, attributes, the manifest row of each of its rows) of a shard store fit to merge."""
    if not path.exists():
        raise InputError(path, "shard store not found", "run its extraction job (snakemake runs it)")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise InputError(path, f"not a readable HDF5 file ({err})", REDO) from err
    with handle:
        attrs = _checked_attrs(path, handle, modality)  # datasets there, complete, this modality
        features = handle["features"]
        if features.ndim != 2 or features.shape[1] != dim or _python_value(attrs.get("dim", dim)) != dim:
            raise InputError(
                path,
                f"holds features of shape {features.shape} (dim attribute {attrs.get('dim')}), "
                f"but the extraction's config says {dim}-d",
                REDO,
            )
        if attrs.get("params_hash") != params_hash:
            raise InputError(
                path,
                f"was extracted with other params (params_hash {attrs.get('params_hash')!r}, the job's config "
                f"gives {params_hash!r})",
                REDO,
            )
        try:
            shard_ids = _read_strings(handle["ids"])
        except OSError as err:
            raise InputError(path, f"its ids cannot be read ({err})", REDO) from err
        if len(shard_ids) != features.shape[0] or handle["labels"].shape != (len(shard_ids),):
            raise InputError(path, "`ids`, `labels` and `features` differ in length", REDO)
    repeated = [item for item, count in Counter(shard_ids).items() if count > 1]
    if repeated:
        raise InputError(path, f"repeats utterance id(s) {_name_some(repeated)}", REDO)
    foreign = [item for item in shard_ids if item not in position]
    if foreign:
        raise InputError(
            path,
            f"holds {len(foreign)} utterance id(s) that are not in the manifest: {_name_some(foreign)}",
            REDO,
        )
    return path, attrs, np.array([position[item] for item in shard_ids], dtype=np.int64)


def _check_partition(shards: list[tuple[Path, dict, np.ndarray]], ids: list[str]) -> None:
    """Every manifest row in exactly one shard."""
    owner = np.full(len(ids), -1, dtype=np.int64)
    for number, (path, _, rows) in enumerate(shards):
        taken = owner[rows] >= 0
        if taken.any():
            others = sorted({str(shards[owner[row]][0]) for row in rows[taken]})
            raise InputError(
                path,
                f"holds {int(taken.sum())} utterance(s) that {', '.join(others)} holds too: the shards come "
                "from different shard counts or manifests",
                REDO_ALL,
            )
        owner[rows] = number
    missing = np.flatnonzero(owner < 0)
    if len(missing):
        raise InputError(
            shards[0][0].parent,
            f"the shard stores {', '.join(str(path) for path, _, _ in shards)} hold {len(ids) - len(missing)} "
            f"of the manifest's {len(ids)} utterances: none holds {_name_some([ids[row] for row in missing])}",
            REDO_ALL,
        )


def _copy_shard(
    path: Path, rows: np.ndarray, pending: np.ndarray, writer: FeatureStoreWriter, block_rows: int
) -> int:
    """Copy a shard's rows not yet written into the writer's rows `rows`, a block at a time; rows copied."""
    n_copied = 0
    with h5py.File(path, "r") as handle:
        features = handle["features"]
        for start in range(0, len(rows), block_rows):
            stop = min(start + block_rows, len(rows))
            todo = pending[rows[start:stop]]
            if not todo.any():
                continue
            block = features[start:stop].astype(np.float32)[todo]
            if not np.isfinite(block).all():
                raise InputError(path, "holds NaN or inf features", REDO)
            writer.write(rows[start:stop][todo], block)
            n_copied += int(todo.sum())
    return n_copied
