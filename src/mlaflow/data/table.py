"""The `features` corpus kind: the user's own label table (corpus.table) -> the manifest.

The table is a UTF-8 CSV with one row per utterance: `id` (unique, the ids of the HDF5 stores), `label` (one of
corpus.classes) and, optionally, either `split` (train, validation or test: one fold, run as given) or `fold`
(positive integers: fold k tests on the rows of fold k, validation drawn from the others), or neither
(stratified folds drawn by mlaflow.data.folds). Every class must have training rows: a split column's are
checked here, a fold column's and drawn folds' by the folds job (mlaflow.data.folds: they depend on
splits.folds), both naming this table. There are no media: the features are given, one HDF5 store per
modality (features.<modality>.precomputed), checked against this table when training starts.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pandas as pd

from mlaflow.data.manifest import MANIFEST_COLUMNS
from mlaflow.errors import InputError

SPLITS = {"train": "train", "validation": "val", "val": "val", "test": "test"}
SHOWN = 5


def build_manifest(path: Path, classes: list[str]) -> tuple[pd.DataFrame, dict]:
    """The manifest (MANIFEST_COLUMNS, plus `split` with a split column) of the table at `path`, and counts.
    Every problem is an InputError naming the file, the offending values and the fix."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            path,
            "label table not found",
            "point corpus.table at the CSV of id, label (see docs/data-formats.md)",
        )
    text = _utf8_text(path)
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except Exception as err:
        raise InputError(path, f"cannot be read as CSV ({err})", "write it as CSV with a header row") from err
    missing = [c for c in ("id", "label") if c not in table.columns]
    if missing:
        raise InputError(
            path,
            f"has no column(s) {missing} (columns: {list(table.columns)})",
            "name the columns id and label (and optionally split or fold)",
        )
    if "split" in table.columns and "fold" in table.columns:
        raise InputError(path, "has both a split and a fold column", "keep one of them")
    empty = table.index[table["id"].str.strip() == ""].tolist()
    if empty:
        raise InputError(
            path, f"{len(empty)} row(s) without an id (first data row {empty[0] + 1})", "fill in the ids"
        )
    twice = [i for i, n in Counter(table["id"]).items() if n > 1]
    if twice:
        raise InputError(
            path, f"{len(twice)} id(s) appear more than once: {twice[:SHOWN]}", "keep one row per id"
        )
    unknown = sorted(set(table["label"]) - set(classes))
    if unknown:
        raise InputError(
            path,
            f"label(s) {unknown[:SHOWN]} are not in corpus.classes {classes}",
            "add them to corpus.classes, or correct the table",
        )
    n = len(table)
    manifest = pd.DataFrame(
        {
            "utterance_id": table["id"],
            "session": 0,
            "speaker": "",
            "label": table["label"],
            "label_index": table["label"].map(classes.index),
            "wav_path": "",
            "transcript": "",
            "frames_dir": "",
            "n_frames": 0,
            "image_path": "",
        },
        columns=MANIFEST_COLUMNS,
    )
    if "split" in table.columns:
        manifest["split"] = _splits(table["split"], path)
        manifest["session"] = 1
        _every_class_in_training(manifest, classes, path)
    elif "fold" in table.columns:
        manifest["session"] = _folds(table["fold"], path)
    manifest = manifest.sort_values("utterance_id", ignore_index=True)
    counts = {
        "n_kept": n,
        "n_dropped": 0,
        "kept_per_class": {c: int((manifest["label"] == c).sum()) for c in classes},
        "dropped_per_label": {},
    }
    return manifest, counts


def _utf8_text(path: Path) -> str:
    """The table's text; a table in another encoding (a spreadsheet's latin-1 or cp1252 export) is named with
    the line of its first byte that is not UTF-8, rather than left to the CSV parser's generic error."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")  # a byte order mark (Excel's "CSV UTF-8") is not part of the header
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise InputError(
            path,
            f"is not UTF-8 text: line {line} holds byte 0x{raw[err.start]:02x}, which UTF-8 cannot decode",
            'encode it as UTF-8 (e.g. save it as "CSV UTF-8", or iconv -f latin1 -t utf-8); non-ASCII ids '
            "and labels are fine once it is",
        ) from err


def _splits(column: pd.Series, path: Path) -> pd.Series:
    values = column.str.strip().str.lower()
    unknown = sorted(set(values) - set(SPLITS))
    if unknown:
        raise InputError(
            path,
            f"split value(s) {unknown[:SHOWN]}; expected train, validation or test",
            "correct the split column",
        )
    if "test" not in set(values) or "train" not in set(values):
        raise InputError(path, "the split column needs train and test rows", "assign rows to train and test")
    return values.map(SPLITS)


def _folds(column: pd.Series, path: Path) -> pd.Series:
    bad = sorted({v for v in column if not v.strip().isdigit() or int(v) < 1})
    if bad:
        raise InputError(
            path, f"fold value(s) {bad[:SHOWN]}; expected positive integers", "correct the fold column"
        )
    return column.astype(int)


def _every_class_in_training(manifest: pd.DataFrame, classes: list[str], path: Path) -> None:
    trained = set(manifest.loc[manifest["split"] == "train", "label"])
    absent = [c for c in classes if c not in trained]
    if absent:
        raise InputError(
            path,
            f"class(es) {absent} have no train row",
            "give every class of corpus.classes train rows, or remove the class from corpus.classes",
        )


def manifest_for(config: dict, source: Path) -> tuple[pd.DataFrame, dict]:
    """The manifest job's entry (mlaflow.data.manifest): the table at `source` (corpus.table)."""
    return build_manifest(Path(source), config["classes"])
