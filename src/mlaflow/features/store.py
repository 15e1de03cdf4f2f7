"""The HDF5 feature store: one file per modality holding one feature vector per utterance.

Schema (every store mlaflow writes, and every `features.<modality>.precomputed` file it reads)
------------------------------------------------------------------------------------------------
Datasets
    ids        utf-8 variable-length strings [N]   utterance ids, unique (row i of every dataset is utterance i)
    features   float32 [N, D]                        one utterance-level feature vector per row, all finite
    labels     utf-8 variable-length strings [N]   class name of each utterance (e.g. "ang"), as in the manifest
Attributes
    modality        str    audio | visual | text
    encoder         str    architecture that produced the features (e.g. "bert", "wav2vec2", "manet")
    model_source    str    "embedded" (randomly initialised encoder built by mlaflow) or the model directory
    pretrained      bool   whether the encoder weights were pretrained (False for embedded encoders)
    dim             int    D
    params_hash     str    hash of the params.yaml sections the features depend on (corpus, features)
    mlaflow_version str    version of mlaflow that wrote the file
    complete        bool   True once every row is written; a file with complete=False is never read

For a precomputed store only `ids`, `features`, `labels` and the `modality` attribute are required: `dim`
defaults to the width of `features`, `complete` to True, the others to "unknown". Fixed-length byte strings
are accepted for `ids` and `labels`, and any float dtype for `features` (it is read as float32).

Writing (`FeatureStoreWriter`)
------------------------------
Extraction never holds the whole [N, D] matrix in memory. The writer preallocates `features` in
`<out stem>.partial.h5` next to the output, together with a bool dataset `written` [N], and writes and
flushes each batch (features first, then their `written` flags, so a flag never reaches the disk before its
row). A killed job leaves that partial file behind; the next run reopens it and computes only the rows
still unwritten, provided its `params_hash` and `ids` are those of the new run. Otherwise, or if the file
cannot be read (a job killed mid-write can leave a truncated HDF5 file), it is deleted and extraction starts
over. When every row is written, `written` is dropped, `complete` set to True and the file renamed atomically
onto the output path, so a file at the output path is always whole.

A write that fails (a full disk, a lost mount) stops extraction at once with an InputError naming the partial
file and the operating system's reason. The file is closed and kept, holding every row written before with its
flag, so a re-run resumes from there; a re-run that cannot write to it either fails the same way and keeps it
(only a file HDF5 cannot read is deleted). Closing may fail too on a full disk: that is logged, never raised
over the first error. The partial file is opened with HDF5's raw-data cache (the sieve buffer) off, so that a
batch reaches the disk within the h5py call that writes it and fails there: HDF5 would otherwise write cached
rows when a dataset handle is released, and h5py only prints a failure there, the rows silently lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mlaflow.errors import InputError

log = logging.getLogger(__name__)

MODALITIES = ("audio", "visual", "text")
REQUIRED_DATASETS = ("ids", "features", "labels")
STRING_DTYPE = h5py.string_dtype(encoding="utf-8")
MAX_NAMED = 5  # how many offending ids an error message names before summarising with a count
VALIDATION_ROWS = 4096  # rows read at a time when checking a partial file (keeps memory flat)


@dataclass
class FeatureTable:
    """A feature store read into memory: row i of `features` belongs to `ids[i]` with label `labels[i]`."""

    ids: list[str]
    features: np.ndarray  # float32 [N, D]
    labels: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return len(self.ids)


def mlaflow_version() -> str:
    try:
        from importlib.metadata import version

        return version("mlaflow")
    except Exception:  # not installed (e.g. run from a source tree)
        return "unknown"


def partial_path_for(out_path: str | Path) -> Path:
    """`data/features/audio.h5` -> `data/features/audio.partial.h5` (git-ignored by `*.partial.h5`)."""
    out_path = Path(out_path)
    stem = out_path.name[: -len(".h5")] if out_path.name.endswith(".h5") else out_path.name
    return out_path.with_name(f"{stem}.partial.h5")


# ----------------------------------------------------------------------------------------------- reading


def _python_value(value: Any) -> Any:
    """HDF5 attribute -> plain Python (numpy scalars and bytes do not survive JSON or comparisons well)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _os_reason(err: Exception) -> str:
    """The operating system's reason in a few words ("No space left on device"), not HDF5's whole trace."""
    import errno as errno_codes

    text = str(err)
    for code in (errno_codes.ENOSPC, errno_codes.EACCES, errno_codes.EROFS, errno_codes.EDQUOT):
        if getattr(err, "errno", None) == code or f"errno = {code}," in text:
            return os.strerror(code)
    return text.splitlines()[0][:200]


def _os_failure(err: Exception) -> bool:
    """Whether the operating system refused a read or write: an OSError with an errno, or the RuntimeError
    h5py raises when HDF5 cannot flush or close a file (the errno only in HDF5's message, "errno = 28,"). An
    OSError without one is HDF5 finding a file damaged (e.g. "file signature not found")."""
    if not isinstance(err, (OSError, RuntimeError)):
        return False
    code = getattr(err, "errno", None)
    found = re.search(r"errno = (\d+)", str(err))
    return bool(code) or (found is not None and int(found.group(1)) != 0)


def _open_partial(path: Path, create: bool) -> h5py.File:
    """Create (or open for writing) a partial file with HDF5's raw-data cache off: a write reaches the file in
    the h5py call that makes it, and fails there (see the module docstring)."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_LATEST)  # as h5py.File sets it
    fapl.set_sieve_buf_size(0)
    name = os.fsencode(path)
    if not create:
        return h5py.File(h5py.h5f.open(name, h5py.h5f.ACC_RDWR, fapl=fapl))
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)  # as h5py.File sets it: no timestamps, the same rows give the same bytes
    return h5py.File(h5py.h5f.create(name, h5py.h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl))


def _read_strings(dataset: h5py.Dataset) -> list[str]:
    return [str(s) for s in dataset.asstr()[()]]


def _name_some(items: Sequence[str]) -> str:
    named = ", ".join(items[:MAX_NAMED])
    return named + (f" and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")


def read_store(
    path: str | Path, modality: str | None = None, expected_dim: int | None = None
) -> FeatureTable:
    """Read and validate a feature store; raise InputError naming the file for anything a user must fix.

    `modality` (if given) must match the file's `modality` attribute and `expected_dim` (if given) its width;
    the error for a wrong width names `features.<modality>.dim`, the params key to change.
    """
    path = Path(path)
    key = f"features.{modality}" if modality else "features.<modality>"
    redo = f"delete it and re-run the extraction, or point `{key}.precomputed` at a valid store"
    with _open_store(path, key, redo) as handle:
        attrs = _checked_attrs(path, handle, modality)
        ids, features, labels = _read_rows(path, handle, redo)
    _check_shape(path, ids, features, labels, attrs, expected_dim, redo)
    _check_rows(path, ids, features)
    attrs.setdefault("dim", features.shape[1])
    attrs.setdefault("complete", True)
    for name in ("encoder", "model_source", "pretrained", "params_hash", "mlaflow_version"):
        attrs.setdefault(name, "unknown")
    return FeatureTable(ids=ids, features=features, labels=labels, attrs=attrs)


def _open_store(path: Path, key: str, redo: str) -> h5py.File:
    """The store, open for reading: it exists and HDF5 reads it."""
    if not path.exists():
        raise InputError(
            path,
            "feature store not found",
            f"run the extraction first, or correct `{key}.precomputed` in params.yaml",
        )
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise InputError(path, f"not a readable HDF5 file ({err})", redo) from err


def _checked_attrs(path: Path, handle: h5py.File, modality: str | None) -> dict[str, Any]:
    """The store's attributes, once its datasets are there, it is complete and it holds `modality` features."""
    missing = [name for name in REQUIRED_DATASETS if name not in handle]
    if missing:
        raise InputError(
            path,
            f"missing dataset(s) {missing}; a feature store needs {list(REQUIRED_DATASETS)}",
            "write it in the schema of mlaflow/features/store.py (see docs/data-formats.md)",
        )
    attrs = {name: _python_value(value) for name, value in handle.attrs.items()}
    if "written" in handle or not attrs.get("complete", True):
        raise InputError(
            path,
            "incomplete feature store (an extraction was interrupted or failed)",
            "re-run the extraction; it resumes from the rows already written",
        )
    found_modality = attrs.get("modality")
    if found_modality is None:
        raise InputError(
            path,
            "has no `modality` attribute",
            "set it, e.g. h5py.File(path, 'a').attrs['modality'] = 'audio'",
        )
    if modality is not None and found_modality != modality:
        raise InputError(
            path,
            f"holds `{found_modality}` features, but `{modality}` features were expected",
            f"point `features.{modality}.precomputed` at a {modality} store",
        )
    return attrs


def _read_rows(path: Path, handle: h5py.File, redo: str) -> tuple[list[str], np.ndarray, list[str]]:
    """ids, features (float32 [N, D]) and labels, read whole."""
    features_ds = handle["features"]
    if features_ds.ndim != 2:
        raise InputError(path, f"`features` has shape {features_ds.shape}, expected [N, D]", redo)
    try:
        features = features_ds.astype(np.float32)[()]
        ids = _read_strings(handle["ids"])
        labels = _read_strings(handle["labels"])
    except OSError as err:  # a damaged data region: the header opened, the rows do not read
        raise InputError(path, f"cannot be read whole ({err})", redo) from err
    return ids, features, labels


def _check_shape(
    path: Path,
    ids: list[str],
    features: np.ndarray,
    labels: list[str],
    attrs: dict[str, Any],
    expected_dim: int | None,
    redo: str,
) -> None:
    """As many ids and labels as rows, at least one, and the width the `dim` attribute and `expected_dim` say."""
    n_rows, dim = features.shape
    if not (len(ids) == len(labels) == n_rows):
        raise InputError(
            path,
            f"`ids` ({len(ids)}), `labels` ({len(labels)}) and `features` ({n_rows} rows) differ in length",
            redo,
        )
    if n_rows == 0:
        raise InputError(path, "holds no utterances", redo)
    if int(attrs.get("dim", dim)) != dim:
        raise InputError(
            path,
            f"attribute dim={attrs['dim']} but `features` is {dim}-d",
            "correct the `dim` attribute or re-run the extraction",
        )
    modality_key = f"features.{attrs['modality']}"
    if expected_dim is not None and dim != expected_dim:
        raise InputError(
            path,
            f"features are {dim}-d but `{modality_key}.dim` is {expected_dim}",
            f"set `{modality_key}.dim: {dim}` in params.yaml to use this store, "
            "or re-extract it with the current encoder",
        )


def _check_rows(path: Path, ids: list[str], features: np.ndarray) -> None:
    """One row per utterance id, every feature finite."""
    duplicates = [item for item, count in Counter(ids).items() if count > 1]
    if duplicates:
        raise InputError(
            path,
            f"{len(duplicates)} duplicate utterance id(s): {_name_some(duplicates)}",
            "keep one row per utterance",
        )
    finite_rows = np.isfinite(features).all(axis=1)
    if not finite_rows.all():
        bad_ids = [ids[i] for i in np.flatnonzero(~finite_rows)]
        raise InputError(
            path,
            f"NaN or inf features in {len(bad_ids)} utterance(s): {_name_some(bad_ids)}",
            "re-extract these utterances (check their input files) or drop them from the store",
        )


# ----------------------------------------------------------------------------------------------- writing


class FeatureStoreWriter:
    """Resumable, streaming writer of one feature store (see the module docstring for the protocol).

    >>> with FeatureStoreWriter(out, ids, labels, dim, attrs) as writer:   # doctest: +SKIP
    ...     for rows in batches(writer.pending_rows()):
    ...         writer.write(rows, encode(rows))
    ...     writer.finish()          # only when every row is written; else the partial file stays for a re-run

    `attrs` must hold `modality`, `encoder`, `model_source`, `pretrained` and `params_hash`; `dim`,
    `mlaflow_version` and `complete` are set by the writer.
    """

    def __init__(
        self, out_path: str | Path, ids: Sequence[str], labels: Sequence[str], dim: int, attrs: dict[str, Any]
    ):
        if len(ids) != len(labels):
            raise ValueError("ids and labels differ in length")
        self.out_path = Path(out_path)
        self.partial_path = partial_path_for(self.out_path)
        self.ids = [str(i) for i in ids]
        self.labels = [str(label) for label in labels]
        self.dim = int(dim)
        self.attrs = {**attrs, "dim": self.dim, "mlaflow_version": mlaflow_version(), "complete": False}
        self.n_resumed = 0  # rows found already written in a partial file when the writer opened
        self.resume_note = "no partial file"  # why a partial file was (not) reused, for logs and stats
        self._file: h5py.File | None = None

    # -- opening --------------------------------------------------------------------------------------

    def __enter__(self) -> FeatureStoreWriter:
        self.open()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc is None:
            self.close()
        else:
            self._close_after(exc)

    def open(self) -> None:
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._reopen_partial()
        if self._file is None:
            self._file = self._create_partial()
        self.n_resumed = int(self._file["written"][()].sum())
        log.info(
            "%s: %s; %d of %d rows already written",
            self.partial_path,
            self.resume_note,
            self.n_resumed,
            len(self.ids),
        )

    def _reopen_partial(self) -> h5py.File | None:
        """The partial file of an interrupted run, if it is readable and belongs to this run; else None."""
        if not self.partial_path.exists():
            return None
        handle = None
        try:
            handle = _open_partial(self.partial_path, create=False)
            problem = self._mismatch(handle)
            if problem is None:
                self._distrust_nonfinite_rows(handle)
                if self.labels != _read_strings(handle["labels"]):
                    # labels do not affect features
                    handle["labels"][...] = np.array(self.labels, dtype=object)
                    handle.flush()
                self.resume_note = "resuming the partial file"
                return handle
            self.resume_note = f"partial file not reused ({problem}); starting over"
        except Exception as err:  # truncated or garbage file: h5py raises OSError, KeyError, ValueError...
            if _os_failure(err):  # the file may be fine, the disk full: keep its rows for a later run
                if handle is not None:
                    self._close_quietly(handle, err)
                raise self._write_error(err) from err
            self.resume_note = f"partial file unreadable ({type(err).__name__}: {err}); starting over"
        if handle is not None:
            with contextlib.suppress(Exception):
                handle.close()
        log.warning("%s: %s", self.partial_path, self.resume_note)
        self.partial_path.unlink()
        return None

    def _mismatch(self, handle: h5py.File) -> str | None:
        """Why `handle` cannot be resumed by this run, or None if it can."""
        for name in (*REQUIRED_DATASETS, "written"):
            if name not in handle:
                return f"no `{name}` dataset"
        if _python_value(handle.attrs.get("params_hash")) != self.attrs["params_hash"]:
            return "written with other params (params_hash differs)"
        if _python_value(handle.attrs.get("modality")) != self.attrs["modality"]:
            return "other modality"
        if handle["features"].shape != (len(self.ids), self.dim) or handle["written"].shape != (
            len(self.ids),
        ):
            return f"shape {handle['features'].shape} instead of {(len(self.ids), self.dim)}"
        if _read_strings(handle["ids"]) != self.ids:
            return "other utterance ids"
        return None

    @staticmethod
    def _distrust_nonfinite_rows(handle: h5py.File) -> None:
        """Mark rows flagged written but holding NaN/inf (never flushed, or damaged) as unwritten again."""
        written = handle["written"][()]
        features = handle["features"]
        for start in range(0, len(written), VALIDATION_ROWS):
            stop = min(start + VALIDATION_ROWS, len(written))
            if not written[start:stop].any():
                continue
            finite = np.isfinite(features[start:stop]).all(axis=1)
            written[start:stop] &= finite
        if not np.array_equal(written, handle["written"][()]):  # else write nothing (the disk may be full)
            handle["written"][...] = written
            handle.flush()

    def _create_partial(self) -> h5py.File:
        handle = None
        try:
            handle = _open_partial(self.partial_path, create=True)
            handle.create_dataset("ids", data=np.array(self.ids, dtype=object), dtype=STRING_DTYPE)
            handle.create_dataset("labels", data=np.array(self.labels, dtype=object), dtype=STRING_DTYPE)
            # NaN fill: a row that was never written can never pass for a feature vector
            handle.create_dataset(
                "features", shape=(len(self.ids), self.dim), dtype=np.float32, fillvalue=np.nan
            )
            handle.create_dataset("written", shape=(len(self.ids),), dtype=bool, fillvalue=False)
            for name, value in self.attrs.items():
                handle.attrs[name] = value
            handle.flush()
        except Exception as err:
            if not _os_failure(err):
                raise
            if handle is not None:  # it holds no row: a re-run finds it unreadable or empty and starts over
                self._close_quietly(handle, err)
            raise self._write_error(err) from err
        return handle

    # -- writing --------------------------------------------------------------------------------------

    @property
    def file(self) -> h5py.File:
        if self._file is None:
            raise RuntimeError("FeatureStoreWriter is not open")
        return self._file

    def pending_rows(self) -> np.ndarray:
        """Indices (into `ids`) of the rows not yet written, ascending."""
        return np.flatnonzero(~self.file["written"][()])

    def write(self, rows: Sequence[int], features: np.ndarray) -> None:
        """Write `features[k]` as row `rows[k]`, then flush, so a kill after this call loses nothing.

        If the file cannot be written (a full disk), the writer closes it, keeping the rows written before, and
        raises an InputError naming it and the operating system's reason."""
        rows = np.asarray(rows, dtype=np.int64)
        features = np.asarray(features, dtype=np.float32)
        if features.shape != (len(rows), self.dim):
            raise ValueError(f"features of shape {features.shape} for {len(rows)} rows of width {self.dim}")
        if len(rows) == 0:
            return
        order = np.argsort(rows)  # h5py point selections need increasing indices
        rows, features = rows[order], features[order]
        if len(np.unique(rows)) != len(rows):
            raise ValueError("duplicate rows in one write")
        handle = self.file
        try:
            handle["features"][rows, :] = features
            handle.flush()  # rows reach the file before the flags that vouch for them
            handle["written"][rows] = True
            handle.flush()
        except Exception as err:
            if not _os_failure(err):
                raise
            # a full disk, a lost mount: stop now. The flags of this batch are set only once its rows are
            # written, so closing keeps exactly the rows written before
            self._close_after(err)
            raise self._write_error(err) from err

    def _write_error(self, err: Exception) -> InputError:
        return InputError(
            self.partial_path,
            f"cannot be written ({_os_reason(err)})",
            "free disk space (or fix the folder's permissions) and re-run the extraction: the "
            "rows written so far are kept and only the others are computed",
        )

    def finish(self) -> Path:
        """Seal the store: drop `written`, set complete=True and rename it atomically onto the output path."""
        handle = self.file
        n_missing = int((~handle["written"][()]).sum())
        if n_missing:
            raise RuntimeError(
                f"{n_missing} rows of {self.partial_path} were never written: finish() before "
                "every row is written is a bug of the caller"
            )
        try:
            del handle["written"]
            handle.attrs["complete"] = True
            handle.flush()
            self._file = None  # not closed twice
            handle.close()
            with open(self.partial_path, "rb") as stream:
                os.fsync(stream.fileno())
            os.replace(self.partial_path, self.out_path)
        except Exception as err:
            if not _os_failure(err):
                raise
            self._close_after(err)
            raise InputError(
                self.partial_path,
                f"cannot be sealed into {self.out_path} ({_os_reason(err)})",
                "free disk space (or fix the folder's permissions) and re-run the extraction",
            ) from err
        return self.out_path

    def close(self) -> None:
        """Close the partial file (kept on disk for a later run to resume)."""
        handle, self._file = self._file, None
        if handle is None:
            return
        try:
            handle.close()
        except Exception as err:
            if not _os_failure(err):
                raise
            raise self._write_error(err) from err

    def _close_after(self, failure: BaseException) -> None:
        """Close the partial file after `failure`, which is being raised: a second error must not hide it."""
        handle, self._file = self._file, None
        if handle is not None:
            self._close_quietly(handle, failure)

    def _close_quietly(self, handle: h5py.File, failure: BaseException) -> None:
        try:
            handle.close()
        except Exception as err:  # e.g. the disk is still full: what was written before is in the file
            log.warning(
                "%s: closing it after %s also failed (%s)",
                self.partial_path,
                type(failure).__name__,
                _os_reason(err) if _os_failure(err) else f"{type(err).__name__}: {err}",
            )
