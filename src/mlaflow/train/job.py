"""One training job (`mlaflow train`): the runs of one method at one missing rate that the rule groups
(train.job_group), read from the job's config file and its input files, trained stacked (or one at a time),
one metrics JSON written per run.

The job's config (written by the workflow from the config Snakemake was given; see
`mlaflow.experiments.train_job_config`) holds everything the runs compute from besides the input files; every
run records that config's hash, so the stage's index can refuse a run trained under other settings.

What survives a failure: before training, the job checks that it can write its outputs (a read-only or full
folder fails at once, naming it). Each finished run is also kept in `<run folder>/.done/`, under a key of
everything it was computed from (the config, every input file's content, the code the job runs); Snakemake
deletes a failed job's outputs, not these, so a rerun of a killed or failed job trains only the runs not done
(with `train.batch_runs: false` runs finish one by one; stacked runs finish together). A job that succeeds
removes its `.done` entries (the folder stays: the other jobs of the run folder may be using it).

One attempt at a time: a job's process can outlive its job (a killed shell; `mlaflow train` asks the kernel to
stop it then, see `mlaflow.cli.die_with_parent`, but only on Linux). So the job holds an exclusive lock,
`<run folder>/.done/<first output's stem>.lock`, while it runs (`mlaflow.joblock`): a rerun beside a live
earlier attempt fails at once, naming that attempt's pid, before it reads or writes any run; a killed attempt's
lock dies with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pandas as pd
import torch

from mlaflow.codedeps import code_files
from mlaflow.data.folds import fold_indices
from mlaflow.data.masks import all_missing_forbidden_by, mask_missing_rate, read_mask, training_only
from mlaflow.errors import InputError
from mlaflow.io import write_json
from mlaflow.joblock import job_lock
from mlaflow.keys import config_hash, format_rate
from mlaflow.provenance import git_commit
from mlaflow.train.data import load_corpus
from mlaflow.train.loop import RunSpec, train_runs
from mlaflow.tune.space import apply_values, read_chosen

log = logging.getLogger(__name__)


def run_training_job(
    config: dict,
    missing_rate: float,
    seeds: list[int],
    folds: list[int],
    manifest: str | Path,
    feature_paths: list[str],
    folds_path: str | Path,
    masks_path: str | Path,
    shift_mask_paths: list[str],
    outputs: list[str],
    tuned_path: str | Path | None = None,
) -> None:
    """Train the runs seeds x folds (seeds outer) of the config's method at `missing_rate`; write outputs[i]
    for run i. `shift_mask_paths`: the mask files of `config["test_time_shift"]` (test-time shift).
    `tuned_path`: the tuning stage's chosen values for the method (data/tuning/<method>.json), written over the
    config's settings except where the experiment's overrides set a key."""
    runs = [(seed, fold) for seed in seeds for fold in folds]
    if len(outputs) != len(runs):
        raise SystemExit(f"expected {len(runs)} output paths (seeds x folds), got {len(outputs)}")
    check_writable(outputs)
    # before anything else: a rerun must not train beside a live earlier attempt of this job (mlaflow.joblock)
    with job_lock(outputs[0]):
        modalities = config["modalities"]
        if len(feature_paths) != len(modalities):
            raise SystemExit(
                f"expected one feature store per modality {modalities}, got {len(feature_paths)}"
            )
        torch.set_num_threads(config["train"]["threads"])
        corpus = load_corpus(
            manifest,
            dict(zip(modalities, feature_paths)),
            config["classes"],
            modalities,
            config["feature_dims"],
        )
        folds_table = pd.read_csv(folds_path, dtype={"utterance_id": str})
        if folds_table["utterance_id"].tolist() != corpus.utterance_ids:
            raise InputError(
                folds_path,
                "utterance ids differ from the manifest's",
                "regenerate folds after the manifest changed (snakemake --forcerun folds)",
            )
        spec = config["experiment"]["masks"]
        forbid = all_missing_forbidden_by(spec, config["masks"]["all_missing"])
        ids = corpus.utterance_ids
        masks = {seed: read_mask(masks_path, seed, ids, spec, forbid, modalities) for seed in seeds}
        shift = {}
        for path in shift_mask_paths:
            label = format_rate(mask_missing_rate(path))
            shift[label] = {seed: read_mask(path, seed, ids, spec, forbid, modalities) for seed in seeds}
        if sorted(shift) != sorted(config["test_time_shift"]):
            raise SystemExit(
                f"test-time shift masks {sorted(shift)} do not match the config's {config['test_time_shift']}"
            )
        specs = []
        for seed, fold in runs:
            split = fold_indices(folds_table, fold)
            present = training_only(masks[seed], split) if spec["training_only"] else masks[seed]
            specs.append(
                RunSpec(seed * 1000 + fold, present, split, {label: m[seed] for label, m in shift.items()})
            )
        method = config["method"]
        settings = {"train": config["train"], "method_params": config["method_params"]}
        tuned = None
        if tuned_path is not None:
            tuned = read_chosen(tuned_path)
            if tuned["method"] != method:
                raise InputError(
                    tuned_path, f"holds the tuned values of {tuned['method']}, not {method}", "fix --tuned"
                )
            settings = apply_values(settings, tuned["values"], keep=config["experiment"]["overrides"])
            tuned = {
                "values": tuned["values"],
                "values_hash": tuned["values_hash"],
                "source": str(tuned_path),
            }
        run_hash, commit = config_hash(config), git_commit()
        inputs = [
            manifest,
            *feature_paths,
            folds_path,
            masks_path,
            *shift_mask_paths,
            *([tuned_path] if tuned else []),
        ]
        key = fingerprint(config, inputs, "mlaflow.train.job", method)

        def finished(index: int, record: dict) -> None:
            seed, fold = runs[index]
            record.update(
                method=method,
                experiment=config["experiment"]["name"],
                experiment_kind=config["experiment"]["kind"],
                missing_rate=missing_rate,
                seed=seed,
                fold=fold,
                masks=spec,
                all_missing=config["masks"]["all_missing"],
                masked_input=config["train"]["masked_input"],
                method_params=settings["method_params"].get(method, {}),
                tuned=tuned,
                config_hash=run_hash,
                git_commit=commit,
                encoders={
                    m: {k: corpus.feature_attrs[m].get(k) for k in ("encoder", "pretrained", "model_source")}
                    for m in modalities
                },
            )
            _write(_done_path(outputs[index], key), record)
            log.info(
                "%s rate=%.2f seed=%d fold=%d: test acc %.4f (val %.4f at epoch %d)",
                method,
                missing_rate,
                seed,
                fold,
                record["metrics"]["accuracy"],
                record["validation"]["accuracy"],
                record["validation"]["best_epoch"],
            )

        pending = [i for i, out in enumerate(outputs) if not _done_path(out, key).is_file()]
        if len(pending) < len(outputs):
            log.info(
                "%d of %d runs were finished by an earlier attempt of this job: training the other %d",
                len(outputs) - len(pending),
                len(outputs),
                len(pending),
            )
        if pending and config["train"]["batch_runs"]:
            for i, record in zip(pending, train_runs(method, corpus, [specs[i] for i in pending], settings)):
                finished(i, record)
        else:
            for i in pending:
                finished(i, train_runs(method, corpus, [specs[i]], settings)[0])
        for out in outputs:
            done = _done_path(out, key)
            _write(out, json.loads(done.read_text()))
        for out in outputs:  # every output is whole: the resume entries are not needed any more
            for stale in _done_path(out, key).parent.glob(f"{Path(out).stem}.*.json"):
                stale.unlink(missing_ok=True)


def check_writable(outputs: list[str]) -> None:
    """Fail before any training if an output folder cannot take a file (permissions, full disk)."""
    for folder in sorted({Path(out).parent / ".done" for out in outputs}):
        probe = folder / f".probe-{os.getpid()}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe.write_text("probe")
            probe.unlink()
        except OSError as err:
            raise InputError(
                folder,
                f"cannot write the runs' results here ({err.strerror or err})",
                "make the folder writable (or free disk space) and re-run; nothing was trained",
            ) from err


def _write(path: str | Path, record: dict) -> None:
    try:
        write_json(path, record)
    except OSError as err:
        raise InputError(
            path,
            f"cannot be written ({err.strerror or err})",
            "free disk space (or fix the folder's permissions) and re-run the job: the runs finished "
            "so far are kept and only the others are trained",
        ) from err


def _done_path(out: str | Path, key: str) -> Path:
    out = Path(out)
    return out.parent / ".done" / f"{out.stem}.{key}.json"


def fingerprint(config: dict, inputs: list, step_module: str, method: str) -> str:
    """A key of everything a job computes from: its config, its input files' content, its code (the step's module
    and the method's)."""
    from mlaflow.methods import method_module

    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for path in [*map(str, inputs), *code_files(step_module, method_module(method))]:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
