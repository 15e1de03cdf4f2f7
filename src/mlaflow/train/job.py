"""One training job (`mlaflow train`): the runs that the rule groups (runtime.job_group: every run of a method in
an experiment, or those of one missing rate, seed or run), read from the job's config file and its input files,
trained stacked (or one at a time), one metrics JSON written per run.

The job's config (written by the workflow from the config Snakemake was given; see
`mlaflow.pipeline.experiments.train_job_config`) holds everything the runs compute from besides the input files;
every run records that config's hash, so the stage's index can refuse a run trained under other settings.

What survives a failure: before training, the job checks that it can write (a read-only or full folder fails at
once, naming it). Each finished run is also kept beside the method's folder, in
`<root>/.done/<method>/missing_<rate>/` (`resume_path`), under a key of everything it was computed from (the
config, every input file's content, the code the job runs); Snakemake deletes a failed job's outputs, not
these, so a rerun of a killed or failed job trains only the runs not done (with `runtime.batch_runs: false` runs
finish one by one; stacked runs finish together). A job that succeeds removes its entries (the folders stay:
other jobs may be using them).

One attempt at a time: a job's process can outlive its job (a killed shell; `mlaflow train` asks the kernel to
stop it then, see `mlaflow.cli.die_with_parent`, but only on Linux). So the job holds an exclusive lock, its
first run's `.lock` there, while it runs (`mlaflow.joblock`): a rerun beside a live earlier attempt fails at
once, naming that attempt's pid, before it reads or writes any run; a killed attempt's lock dies with it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from mlaflow.data.folds import fold_indices
from mlaflow.data.masks import training_only
from mlaflow.errors import InputError
from mlaflow.io import write_json
from mlaflow.joblock import job_lock
from mlaflow.keys import config_hash
from mlaflow.provenance import git_commit
from mlaflow.runtime import Runtime
from mlaflow.train.inputs import JobFiles, JobInputs, check_rates, fingerprint, load_job_inputs
from mlaflow.train.loop import RunSpec, train_runs
from mlaflow.train.tuned import apply_values, read_chosen

log = logging.getLogger(__name__)


def run_training_job(
    config: dict, files: JobFiles, runs: list[tuple[str, int, int]], outputs: list[str], runtime: Runtime
) -> None:
    """Train `runs` ((missing rate label, seed, fold); one mask file per rate in `files.masks`) of the config's
    method, stacked (`runtime.batch_runs`) or one at a time; write outputs[i] for run i. `files.tuned`: the
    tuning stage's chosen values of the method, written over the config's settings except where the
    experiment's overrides set a key."""
    if len(outputs) != len(runs):
        raise InputError(None, f"{len(runs)} runs but {len(outputs)} output paths", "give one --out per run")
    check_writable(outputs)
    # before anything else: a rerun must not train beside a live earlier attempt of this job (mlaflow.joblock)
    with job_lock(outputs[0], resume_path(outputs[0], "lock")):
        torch.set_num_threads(runtime.threads)
        seeds = sorted({seed for _, seed, _ in runs})
        inputs = load_job_inputs(config, files, seeds)
        check_rates(inputs.shift_masks, config["test_time_shift"], "test-time shift", files.folds)
        check_rates(inputs.masks, sorted({rate for rate, _, _ in runs}), "training", files.folds)
        specs = [run_spec(config, inputs, inputs.masks[rate], seed, fold) for rate, seed, fold in runs]
        settings, tuned = tuned_settings(config, files.tuned)
        key = fingerprint(config, files)
        pending = [i for i, out in enumerate(outputs) if not _done_path(out, key).is_file()]
        if len(pending) < len(outputs):
            log.info(
                "%d of %d runs were finished by an earlier attempt of this job: training the other %d",
                len(outputs) - len(pending),
                len(outputs),
                len(pending),
            )
        provenance = {
            "method": config["method"],
            "experiment": config["experiment"]["name"],
            "experiment_kind": config["experiment"]["kind"],
            "masks": config["experiment"]["masks"],
            "all_missing": config["masks"]["all_missing"],
            "masked_input": config["train"]["masked_input"],
            "method_params": settings["method_params"].get(config["method"], {}),
            "tuned": tuned,
            "config_hash": config_hash(config),
            "git_commit": git_commit(),
            "encoders": {
                m: {
                    k: inputs.corpus.feature_attrs[m].get(k)
                    for k in ("encoder", "pretrained", "model_source")
                }
                for m in config["modalities"]
            },
        }
        groups = [pending] if runtime.batch_runs else [[i] for i in pending]
        for group in filter(None, groups):
            records = train_runs(
                config["method"], inputs.corpus, [specs[i] for i in group], settings, device=runtime.device
            )
            for i, record in zip(group, records):
                rate, seed, fold = runs[i]
                record.update(provenance, missing_rate=float(rate), seed=seed, fold=fold)
                _write(_done_path(outputs[i], key), record)
                _log_run(record)
        for out in outputs:
            _write(out, json.loads(_done_path(out, key).read_text()))
        for out in outputs:  # every output is whole: the resume entries are not needed any more
            for stale in _done_path(out, key).parent.glob(f"{Path(out).stem}.*.json"):
                stale.unlink(missing_ok=True)


def run_spec(config: dict, inputs: JobInputs, masks: dict[int, np.ndarray], seed: int, fold: int) -> RunSpec:
    """One run's seed, mask (training rows only where the experiment masks training alone), split and test-time
    shift masks."""
    split = fold_indices(inputs.folds, fold)
    present = (
        training_only(masks[seed], split, inputs.corpus.recorded)
        if config["experiment"]["masks"]["training_only"]
        else masks[seed]
    )
    shift = {label: by_seed[seed] for label, by_seed in inputs.shift_masks.items()}
    return RunSpec(seed * 1000 + fold, present, split, shift)


def tuned_settings(config: dict, tuned_path: str | None) -> tuple[dict, dict | None]:
    """The method's settings with its tuned values written in (the experiment's overrides kept), and the record
    of those values (None without tuning)."""
    settings = {"train": config["train"], "method_params": config["method_params"]}
    if tuned_path is None:
        return settings, None
    chosen = read_chosen(tuned_path)
    if chosen["method"] != config["method"]:
        raise InputError(
            tuned_path, f"holds the tuned values of {chosen['method']}, not {config['method']}", "fix --tuned"
        )
    settings = apply_values(settings, chosen["values"], keep=config["experiment"]["overrides"])
    return settings, {
        "values": chosen["values"],
        "values_hash": chosen["values_hash"],
        "source": str(tuned_path),
    }


def _log_run(record: dict) -> None:
    log.info(
        "%s rate=%.2f seed=%d fold=%d: test acc %.4f (val %.4f at epoch %d)",
        record["method"],
        record["missing_rate"],
        record["seed"],
        record["fold"],
        record["metrics"]["accuracy"],
        record["validation"]["accuracy"],
        record["validation"]["best_epoch"],
    )


def resume_path(out: str | Path, suffix: str) -> Path:
    """Where a run's resume record (suffix: its key) or a job's lock (suffix "lock") lives: beside the method's
    folder, `<root>/.done/<method>/missing_<rate>/<run>.<suffix>`, never inside the job's outputs (Snakemake
    removes a folder it is about to make again, and with it what is inside)."""
    out = Path(out)
    return out.parents[2] / ".done" / out.parents[1].name / out.parent.name / f"{out.stem}.{suffix}"


def check_writable(outputs: list[str]) -> None:
    """Fail before any training if an output folder cannot take a file (permissions, full disk)."""
    for folder in sorted({resume_path(out, "probe").parent for out in outputs}):
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
    return resume_path(out, f"{key}.json")
