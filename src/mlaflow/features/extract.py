"""Feature extraction driver shared by every encoder: one pooled feature vector per utterance, into HDF5.

`extract_features` loads the encoder that `features.<modality>.encoder` names (bert, wav2vec2, manet,
fbank: the registry of `mlaflow.features.protocol`, which also describes what an encoder must provide)
from a model directory with its `from_pretrained`, and streams one feature vector per utterance of a
manifest into the HDF5 store (`mlaflow.features.store`). `build_embedded_encoder` writes the randomly
initialised (NOT pretrained) model directory of that encoder (features.<modality>.model: embedded).
Encoder modules are imported only when used: this module imports none of them (transformers alone takes
seconds to import).

How extraction keeps fast and safe:
  * utterances are sorted by length (audio: samples, text: tokens, visual: frames) so a batch holds
    similar lengths and little padding; the padding fraction is reported;
  * the next batch's files are read in a background thread while the current one is encoded;
  * `torch.inference_mode()`; on CUDA, pinned host memory + non-blocking copies, and fp16 autocast when
    `features.half_precision` is true (features are pooled and stored in float32);
  * each batch is written and flushed as it is computed, so memory does not grow with the corpus and a
    killed job resumes from the rows already written; a batch that cannot be written (a full disk) stops
    the job with an InputError naming the partial store and the reason, its finished rows kept for the re-run;
  * a bad input file does not stop the run: every good utterance is still computed and written, then one
    InputError lists the bad files; after fixing them a re-run computes only the missing rows.

Sharded extraction (`mlaflow extract --shard k --shards N`, runtime.extraction_shards): the N jobs share the
batches of the one length-sorted order of the whole manifest, batch j going to shard (j mod N) + 1, so every
utterance is encoded in exactly the batch it would be in unsharded and the merged store
(`mlaflow.features.merge`) holds the same features. Shard k writes a feature store of its own rows (in manifest
order), resumable like any store. The shards can only be told apart once every utterance's length is read: an
utterance whose length cannot be read (a missing or unreadable wav) stops every shard before it encodes anything,
with one InputError listing such files. A shard resumed from its partial store encodes its remaining rows in their
own batches (less the rows already written), so a run killed between batches resumes to the same features.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mlaflow.devices import resolve_device
from mlaflow.errors import InputError, ParamsError
from mlaflow.features.protocol import INPUT_COLUMNS, Encoder, encoder_for, input_kind

log = logging.getLogger(__name__)

ID_COLUMNS = ("utterance_id", "label")  # besides the columns of the modality's input (INPUT_COLUMNS)
MAX_LISTED_BAD_FILES = 5


# ------------------------------------------------------------------------------------ dispatch


def build_embedded_encoder(modality: str, out_dir: str | Path, features_cfg: dict) -> Path:
    """Build the randomly initialised encoder that features.<modality>.encoder names (seed
    features.embedded_seed) into out_dir."""
    encoder_class = encoder_for(modality, features_cfg)  # checks the name and the input kind
    module = importlib.import_module(encoder_class.__module__)  # build_embedded lives beside the class
    return module.build_embedded(out_dir, features_cfg[modality], features_cfg["embedded_seed"])


def load_encoder(modality: str, model_dir: str | Path, features_cfg: dict, device: torch.device) -> Encoder:
    """The encoder that features.<modality>.encoder names, from `model_dir` (embedded or pretrained: the same
    from_pretrained path)."""
    return encoder_for(modality, features_cfg).from_pretrained(model_dir, features_cfg[modality], device)


# ------------------------------------------------------------------------------------ extraction


def _manifest_rows(manifest: pd.DataFrame, modality: str) -> list[dict]:
    columns = [*ID_COLUMNS, *INPUT_COLUMNS[input_kind(modality)]]
    missing = [column for column in columns if column not in manifest.columns]
    if missing:
        raise InputError(None, f"the manifest has no column(s) {missing}", "rebuild the manifest")
    ids = manifest["utterance_id"].astype(str)
    duplicated = ids[ids.duplicated()].unique().tolist()
    if duplicated:
        raise InputError(
            None,
            f"the manifest repeats utterance id(s) {duplicated[:MAX_LISTED_BAD_FILES]}",
            "keep one row per utterance",
        )
    return manifest[columns].to_dict("records")


def _bad_files_error(bad: dict[int, InputError], n_total: int, n_written: int, partial: Path) -> InputError:
    messages = [str(error) for _, error in sorted(bad.items())]
    listed = "; ".join(messages[:MAX_LISTED_BAD_FILES])
    more = (
        f" (and {len(messages) - MAX_LISTED_BAD_FILES} more, all listed in the log above)"
        if len(messages) > MAX_LISTED_BAD_FILES
        else ""
    )
    error = InputError(
        None,
        f"{len(bad)} of {n_total} utterances could not be encoded: {listed}{more}",
        f"repair or replace these files (or drop the utterances from the manifest) and re-run; "
        f"the {n_written} rows already computed are kept in {partial} and only the missing rows "
        "are computed",
    )
    error.bad_files = {index: err.path for index, err in bad.items()}  # type: ignore[attr-defined]
    return error


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    """(k, N): shard k of N, 1 <= k <= N."""
    k, n = (int(value) for value in shard)
    if not 1 <= k <= n:
        raise InputError(None, f"shard {k} of {n} does not exist", "pass 1 <= --shard <= --shards")
    return k, n


def extraction_job(
    config: dict,
    manifest_path: str | Path,
    model_dir: str | Path,
    out_path: str | Path,
    threads: int | None = None,
    device: str = "auto",
    shard: tuple[int, int] = (1, 1),
) -> dict:
    """The extraction job (`mlaflow extract`): `config` is its config file (the modality, half precision and the
    options of the modality's encoder); its hash is recorded in the store and decides whether a partial store
    may be resumed. `threads` and `device` (runtime.device) say how it runs, not what it computes; so does
    `shard` (k, N): with N > 1 the job writes shard k's rows only (runtime.extraction_shards)."""
    from mlaflow.keys import config_hash

    manifest = pd.read_csv(manifest_path, dtype={"utterance_id": str, "transcript": str})
    modality = config["modality"]
    features_cfg = {"half_precision": config["half_precision"], modality: config["encoder"]}
    return extract_features(
        modality,
        manifest,
        Path(model_dir),
        Path(out_path),
        features_cfg,
        config_hash(config),
        device=resolve_device(device, "runtime.device"),
        threads=threads,
        shard=shard,
    )


def build_encoder_job(config: dict, out_dir: str | Path) -> Path:
    """The encoder-building job (`mlaflow build-encoder`): the embedded encoder its config describes."""
    modality = config["modality"]
    return build_embedded_encoder(
        modality, Path(out_dir), {"embedded_seed": config["embedded_seed"], modality: config["encoder"]}
    )


def extract_features(
    modality: str,
    manifest: pd.DataFrame,
    model_dir: str | Path,
    out_path: str | Path,
    features_cfg: dict,
    params_hash: str,
    device: str | torch.device | None = None,
    threads: int | None = None,
    shard: tuple[int, int] = (1, 1),
) -> dict:
    """Encode every utterance of `manifest` with the encoder in `model_dir` into the store at `out_path`.

    `features_cfg` is params `features`; `device`: where to run (None: CUDA when visible); `threads` sets torch's CPU
    threads for the call (pass the Snakemake job's `threads`: several jobs each using every core
    oversubscribe the CPU, and spinning OpenMP threads then slow everything down several-fold).
    `shard` (k, N): encode only shard k of N (see the module docstring) into a store of its rows.
    Resumes a partial store left by an interrupted run. Returns stats: n, n_computed, n_resumed, seconds,
    utterances_per_second, padding_fraction, device, dtype, batch_size, shard.
    """
    shard = check_shard(shard)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _extract(modality, manifest, model_dir, out_path, features_cfg, params_hash, device, shard)
    finally:
        torch.set_num_threads(previous_threads)


def _extract(
    modality: str,
    manifest: pd.DataFrame,
    model_dir: str | Path,
    out_path: str | Path,
    features_cfg: dict,
    params_hash: str,
    device: str | torch.device | None,
    shard: tuple[int, int],
) -> dict:
    from mlaflow.features.store import FeatureStoreWriter

    cfg = features_cfg[modality]
    device = torch.device(device) if device is not None else resolve_device("auto")
    rows = _manifest_rows(manifest, modality)
    load_started = time.perf_counter()
    encoder = load_encoder(modality, model_dir, features_cfg, device)
    load_seconds = time.perf_counter() - load_started
    if encoder.output_dim != cfg["dim"]:
        raise ParamsError(
            f"features.{modality}.dim",
            f"is {cfg['dim']} but the encoder in {model_dir} outputs {encoder.output_dim}-d "
            f"features ({encoder.dim_source})",
            f"set features.{modality}.dim: {encoder.output_dim}, or use an encoder of that width",
        )
    half = device.type == "cuda" and bool(features_cfg["half_precision"])
    autocast = torch.autocast("cuda", dtype=torch.float16) if half else contextlib.nullcontext()
    attrs = {
        "modality": modality,
        "encoder": encoder.architecture,
        "model_source": "embedded" if cfg["model"] == "embedded" else str(model_dir),
        "pretrained": encoder.pretrained,
        "params_hash": params_hash,
    }
    if getattr(encoder, "input_shape", None) is not None:  # prepared inputs: how training reads them back
        attrs["input_shape"] = list(encoder.input_shape)
    planned = None  # sharded: this shard's batches (indices into its rows), before resuming
    if shard[1] > 1:
        rows, planned = _shard_rows_and_batches(encoder, rows, cfg["batch_size"], shard)
    ids = [str(row["utterance_id"]) for row in rows]
    labels = [str(row["label"]) for row in rows]

    with FeatureStoreWriter(out_path, ids, labels, cfg["dim"], attrs) as writer:
        pending = writer.pending_rows()
        bad: dict[int, InputError] = {}  # row -> what is wrong with its input
        if planned is None:
            batches = _length_sorted_batches(encoder, rows, pending, cfg["batch_size"], bad)
        else:
            unwritten = set(pending.tolist())
            batches = [kept for batch in planned if (kept := [i for i in batch if i in unwritten])]
        started = time.perf_counter()
        with _progress_bar(len(pending), modality) as progress:
            progress.update(len(bad))
            totals = _encode_batches(
                encoder, rows, batches, writer, autocast, modality, cfg["dim"], bad, progress
            )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        if bad:
            for _, error in sorted(bad.items()):
                log.error("%s", error)
            raise _bad_files_error(
                bad, len(rows), len(rows) - len(writer.pending_rows()), writer.partial_path
            )
        writer.finish()

    n_computed, real_units, padded_units = totals
    return {
        "modality": modality,
        "n": len(rows),
        "n_computed": n_computed,
        "n_resumed": writer.n_resumed,
        "resume": writer.resume_note,
        "seconds": round(seconds, 3),
        "load_seconds": round(load_seconds, 3),
        "utterances_per_second": round(n_computed / seconds, 2) if seconds > 0 else None,
        "padding_fraction": round(1.0 - real_units / padded_units, 4) if padded_units else 0.0,
        "length_unit": encoder.length_unit,
        "device": str(device),
        "dtype": "float16" if half else "float32",
        "batch_size": cfg["batch_size"],
        "threads": torch.get_num_threads(),
        "shard": f"{shard[0]} of {shard[1]}",
    }


def _length_sorted_batches(
    encoder: Encoder, rows: list[dict], pending: np.ndarray, batch_size: int, bad: dict[int, InputError]
) -> list[list[int]]:
    """Pending rows in batches of similar length, longest first (a batch too large for the device fails at
    once, not at the end of the corpus). Rows whose length cannot even be read go to `bad`."""
    lengths = {}
    for index in map(int, pending):
        try:
            lengths[index] = encoder.item_length(rows[index])
        except InputError as error:
            bad[index] = error
    order = sorted(lengths, key=lambda index: (-lengths[index], index))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def shard_batches(
    encoder: Encoder, rows: list[dict], batch_size: int, shard: tuple[int, int]
) -> list[list[int]]:
    """Shard k of N's batches (indices into `rows`, the whole manifest): batch j of the length-sorted order of
    every row goes to shard (j mod N) + 1, so each utterance is in the batch it would be in unsharded. Raises an
    InputError listing the rows whose length cannot be read: without them the order is not known."""
    k, n = shard
    bad: dict[int, InputError] = {}
    batches = _length_sorted_batches(encoder, rows, np.arange(len(rows)), batch_size, bad)
    if bad:
        messages = [str(error) for _, error in sorted(bad.items())]
        more = (
            f" (and {len(messages) - MAX_LISTED_BAD_FILES} more)"
            if len(messages) > MAX_LISTED_BAD_FILES
            else ""
        )
        for message in messages:
            log.error("%s", message)
        raise InputError(
            None,
            f"the length of {len(bad)} of {len(rows)} utterances cannot be read: "
            f"{'; '.join(messages[:MAX_LISTED_BAD_FILES])}{more}",
            "repair or replace these files (or drop the utterances from the manifest) and re-run: the shards "
            "(runtime.extraction_shards) share the utterances by their lengths, so no shard starts before every "
            "length is read (with one shard the good utterances would be encoded meanwhile)",
        )
    return batches[k - 1 :: n]


def _shard_rows_and_batches(
    encoder: Encoder, rows: list[dict], batch_size: int, shard: tuple[int, int]
) -> tuple[list[dict], list[list[int]]]:
    """The shard's rows (in manifest order) and its batches as indices into them."""
    batches = shard_batches(encoder, rows, batch_size, shard)
    members = sorted(index for batch in batches for index in batch)
    local = {index: position for position, index in enumerate(members)}
    return [rows[index] for index in members], [[local[index] for index in batch] for batch in batches]


def _load_batch(
    encoder: Encoder, rows: list[dict], batch: list[int]
) -> tuple[list[int], list[Any], dict[int, InputError]]:
    """Read the input files of a batch: (rows read, their items, {row: error} for the unreadable ones)."""
    good_rows, items, failures = [], [], {}
    for index in batch:
        try:
            items.append(encoder.load_item(rows[index]))
            good_rows.append(index)
        except InputError as error:
            failures[index] = error
    return good_rows, items, failures


def _encode_batches(
    encoder: Encoder,
    rows: list[dict],
    batches: list[list[int]],
    writer,
    autocast,
    modality: str,
    dim: int,
    bad: dict[int, InputError],
    progress,
) -> tuple[int, int, int]:
    """Encode and write every batch, reading the next batch's files in a background thread meanwhile.

    Returns (rows written, real input units, padded input units); failed rows are added to `bad`.
    """
    n_written = real_units = padded_units = 0
    with ThreadPoolExecutor(max_workers=1) as reader, torch.inference_mode():
        upcoming = reader.submit(_load_batch, encoder, rows, batches[0]) if batches else None
        for number, batch in enumerate(batches):
            good_rows, items, failures = upcoming.result()
            if number + 1 < len(batches):
                upcoming = reader.submit(_load_batch, encoder, rows, batches[number + 1])
            bad.update(failures)
            if items:
                with autocast:
                    encoded = encoder.encode(items)
                features = encoded.features.float().cpu().numpy()
                if features.shape[1] != dim:
                    raise ParamsError(
                        f"features.{modality}.dim",
                        f"is {dim} but the encoder produced {features.shape[1]}-d features",
                        f"set it to {features.shape[1]}",
                    )
                finite = np.isfinite(features).all(axis=1)
                for index in np.asarray(good_rows)[~finite]:
                    bad[int(index)] = InputError(
                        _input_name(rows[index], modality),
                        "the encoder produced NaN/inf features",
                        "check the input; on CUDA set features.half_precision: false",
                    )
                writer.write(np.asarray(good_rows)[finite], features[finite])
                n_written += int(finite.sum())
                real_units += encoded.real_units
                padded_units += encoded.padded_units
            progress.update(len(batch))
    return n_written, real_units, padded_units


def _input_name(row: dict, modality: str) -> str:
    return {
        "audio": row.get("wav_path"),
        "visual": row.get("frames_dir"),
        "image": row.get("image_path"),
    }.get(input_kind(modality), f"utterance {row['utterance_id']}")


def _progress_bar(total: int, modality: str):
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=f"{modality} features",
        unit="utt",
        file=sys.stderr,
        mininterval=2.0,
        dynamic_ncols=True,
    )
