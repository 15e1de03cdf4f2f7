"""The tuning stage: every method's hyperparameters chosen on validation accuracy, with the same budget (Optuna).

For each method in the comparison one Optuna study (`tuning` in params.yaml):
- budget: `tuning.trials` completed trials, the same for every method; the first is always the config's own
  values (trial 0, `enqueue_trial`), so the study reports the untuned validation accuracy beside the tuned one
  and never chooses worse than the config on validation;
- sampler: `tuning.sampler` (tpe | random) seeded with `tuning.seed`, the same for every method;
- objective: the fused validation accuracy at the validation-selected epoch, averaged over the runs
  `tuning.folds` x the method's tuning rates (`tuning.missing_rates`; a method trained at missing rate 0 only,
  the Table 1 analogue, is tuned there), seed `tuning.run_seed`. The runs are trained with an EMPTY test split
  (`train_runs(..., test=False)`): the test rows are never read;
- storage: Optuna's journal file (data/tuning/<method>/study.journal, default) or the RDB URL `tuning.storage`
  (PostgreSQL on a cluster). `tuning.workers` Snakemake jobs share the study, so trials run in parallel on SLURM;
  the study's name holds a fingerprint of the job's config, input files and code, so a rerun after a change
  starts a new study and a rerun after a failure resumes the old one. A worker holds a lock while it runs
  (data/tuning/<method>/.done/worker<k>.lock, mlaflow.joblock): a rerun of it beside a live earlier attempt
  fails at once, naming that attempt's pid.

Outputs: each worker's trials (data/tuning/<method>/worker<k>.json), then the chosen values
(data/tuning/<method>.json: the best of the study's first `trials` completed trials, ties to the earlier trial),
which the training rules take as an input (mlaflow.train.job applies them). Trials of several workers run
concurrently and TPE then depends on their timing; with one worker a study is reproducible.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mlaflow.data.folds import fold_indices
from mlaflow.data.masks import all_missing_forbidden_by, mask_missing_rate, read_mask
from mlaflow.errors import InputError, ParamsError
from mlaflow.io import write_json
from mlaflow.joblock import job_lock
from mlaflow.keys import config_hash, format_rate
from mlaflow.train.data import Corpus, load_corpus
from mlaflow.train.loop import RunSpec, train_runs
from mlaflow.tune.space import apply_values, current_value, method_space

log = logging.getLogger(__name__)


def tuning_specs(
    corpus: Corpus, folds_table: pd.DataFrame, masks: dict[float, np.ndarray], folds: list[int], run_seed: int
) -> list[RunSpec]:
    """The runs a trial trains: folds x missing rates, each with its training and validation rows and an empty
    test split (the test rows are not given to training at all)."""
    specs = []
    for mask in masks.values():
        for fold in folds:
            split = fold_indices(folds_table, fold)
            split = {"train": split["train"], "val": split["val"], "test": split["test"][:0]}
            specs.append(RunSpec(run_seed * 1000 + fold, mask, split))
    return specs


def base_settings(config: dict) -> dict:
    return {"train": config["train"], "method_params": config["method_params"]}


def default_values(config: dict, space: dict) -> dict:
    """The config's own value of every searched key (trial 0)."""
    settings = base_settings(config)
    return {key: current_value(settings, key) for key in space}


def check_space(config: dict, space: dict) -> None:
    """Every key of the space is a setting of the job, and the config's value lies in its search range (trial 0
    is the config's values)."""
    settings, modalities = base_settings(config), config["modalities"]
    for key, dim in space.items():
        try:
            value = current_value(settings, key)
        except KeyError as err:
            raise ParamsError(
                key, "is searched but is no setting of the method", "fix its search_space"
            ) from err
        if hasattr(dim, "options"):
            if value not in dim.options(modalities):
                raise ParamsError(key, f"{value!r} is not among {dim.options(modalities)}", "fix the value")
        elif hasattr(dim, "bounds") or hasattr(dim, "low"):
            low, high = dim.bounds(value) if hasattr(dim, "bounds") else (dim.low, dim.high)
            if value is None or not low <= value <= high:
                raise ParamsError(
                    key, f"{value!r} is outside its search range {low:g} to {high:g}", "fix the value"
                )


def objective(config: dict, corpus: Corpus, specs: list[RunSpec], space: dict):
    """The Optuna objective of a method: mean validation accuracy of its tuning runs under a trial's values."""
    method, settings, modalities = config["method"], base_settings(config), config["modalities"]

    def run(trial) -> float:
        values = {
            key: dim.suggest(trial, key, current_value(settings, key), modalities)
            for key, dim in space.items()
        }
        started = time.perf_counter()
        records = train_runs(method, corpus, specs, apply_values(settings, values), test=False)
        accuracies = [r["validation"]["accuracy"] for r in records]
        trial.set_user_attr("validation_accuracies", accuracies)
        trial.set_user_attr("seconds", time.perf_counter() - started)
        value = float(np.mean(accuracies))
        log.info("%s trial %d: validation accuracy %.4f with %s", method, trial.number, value, values)
        return value

    return run


def study_name(config: dict, fingerprint: str) -> str:
    return f"{config['method']}-{fingerprint}"


def open_study(config: dict, fingerprint: str, journal: str | Path, create: bool = True, worker: int = 0):
    """The method's study in the journal file (or tuning.storage's RDB URL), created if missing. Worker k's
    sampler is seeded with tuning.seed + k, so that parallel workers do not propose the same values."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    tuning = config["tuning"]
    storage = tuning["storage"] or JournalStorage(JournalFileBackend(str(journal)))
    sampler = (
        optuna.samplers.TPESampler(seed=tuning["seed"] + worker)
        if tuning["sampler"] == "tpe"
        else optuna.samplers.RandomSampler(seed=tuning["seed"] + worker)
    )
    name = study_name(config, fingerprint)
    if not create:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    return optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, direction="maximize", load_if_exists=True
    )


def completed(study) -> list:
    from optuna.trial import TrialState

    return sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)


def optimize(study, config: dict, corpus: Corpus, specs: list[RunSpec]) -> None:
    """Trials of `study` until it holds `tuning.trials` completed ones; trial 0 is the config's own values."""
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    tuning, space = config["tuning"], method_space(config["method"])
    check_space(config, space)
    study.enqueue_trial(default_values(config, space), skip_if_exists=True)
    done = len(completed(study))
    if done < tuning["trials"]:
        study.optimize(
            objective(config, corpus, specs, space),
            n_trials=tuning["trials"] - done,
            callbacks=[MaxTrialsCallback(tuning["trials"], states=(TrialState.COMPLETE,))],
        )


def run_worker(
    config: dict,
    worker: int,
    manifest: str | Path,
    feature_paths: list[str],
    folds_path: str | Path,
    mask_paths: list[str],
    journal: str | Path,
    out: str | Path,
) -> None:
    """One worker of a method's study: trials until the study holds `tuning.trials` completed ones."""
    import optuna
    import torch

    from mlaflow.train.job import fingerprint as job_fingerprint

    # before anything else: a rerun must not run beside a live earlier attempt of this worker (mlaflow.joblock)
    with job_lock(out):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        torch.set_num_threads(config["train"]["threads"])
        method, tuning, modalities = config["method"], config["tuning"], config["modalities"]
        space = method_space(method)
        check_space(config, space)
        corpus = load_corpus(
            manifest,
            dict(zip(modalities, feature_paths)),
            config["classes"],
            modalities,
            config["feature_dims"],
        )
        folds_table = pd.read_csv(folds_path, dtype={"utterance_id": str})
        if folds_table["utterance_id"].tolist() != corpus.utterance_ids:
            raise InputError(folds_path, "utterance ids differ from the manifest's", "regenerate the folds")
        spec = config["experiment"]["masks"]
        forbid = all_missing_forbidden_by(spec, config["masks"]["all_missing"])
        masks = {}
        for path in mask_paths:
            rate = mask_missing_rate(path)
            masks[rate] = read_mask(path, tuning["run_seed"], corpus.utterance_ids, spec, forbid, modalities)
        if sorted(format_rate(r) for r in masks) != sorted(format_rate(r) for r in tuning["missing_rates"]):
            raise SystemExit(
                f"tuning masks {sorted(masks)} do not match the config's {tuning['missing_rates']}"
            )
        specs = tuning_specs(corpus, folds_table, masks, tuning["folds"], tuning["run_seed"])

        inputs = [manifest, *feature_paths, folds_path, *mask_paths]
        fingerprint = job_fingerprint(config, inputs, "mlaflow.tune.study", method)
        Path(journal).parent.mkdir(parents=True, exist_ok=True)
        study = open_study(config, fingerprint, journal, worker=worker)
        done_before = len(completed(study))
        optimize(study, config, corpus, specs)
        write_json(
            out,
            {
                "method": method,
                "worker": worker,
                "study": study.study_name,
                "fingerprint": fingerprint,
                "completed_trials": len(completed(study)),
                "found_completed": done_before,
            },
        )


def select(config: dict, journal: str | Path, worker_paths: list[str], out: str | Path) -> dict:
    """The chosen values of a method: the best of its study's first `tuning.trials` completed trials (the study
    its workers, `worker_paths`, ran)."""
    method, tuning, modalities = config["method"], config["tuning"], config["modalities"]
    prints = {json.loads(Path(path).read_text())["fingerprint"] for path in worker_paths}
    if len(prints) != 1:
        raise InputError(
            worker_paths[0], f"the workers ran {len(prints)} different studies", "re-run them all"
        )
    (fingerprint,) = prints
    space = method_space(method)
    study = open_study(config, fingerprint, journal, create=False)
    trials = completed(study)[: tuning["trials"]]
    if len(trials) < tuning["trials"]:
        raise InputError(
            journal,
            f"study {study.study_name} has {len(trials)} completed trials, the budget is {tuning['trials']}",
            "re-run the tuning workers (snakemake or dvc repro); failed trials are retried",
        )
    defaults = default_values(config, space)
    untuned = next((t for t in trials if t.params == defaults), None)
    if untuned is None:
        raise InputError(
            journal,
            f"study {study.study_name} has no completed trial of the config's own values",
            "delete the study's journal and re-run the tuning workers",
        )
    best = max(trials, key=lambda t: (t.value, -t.number))
    settings = base_settings(config)
    result = {
        "method": method,
        "study": study.study_name,
        "storage": tuning["storage"] or str(journal),
        "sampler": tuning["sampler"],
        "seed": tuning["seed"],
        "budget": tuning["trials"],
        "folds": tuning["folds"],
        "missing_rates": tuning["missing_rates"],
        "space": {key: dim.describe(current_value(settings, key), modalities) for key, dim in space.items()},
        "values": {key: best.params[key] for key in space},
        "validation_accuracy": best.value,
        "chosen_trial": best.number,
        "untuned": {"values": defaults, "validation_accuracy": untuned.value, "trial": untuned.number},
        "trials": [
            {
                "number": t.number,
                "values": t.params,
                "validation_accuracy": t.value,
                "seconds": t.user_attrs.get("seconds"),
            }
            for t in trials
        ],
        "values_hash": config_hash({key: best.params[key] for key in space}),
    }
    write_json(out, result)
    return result


def write_summary(config: dict, chosen_paths: list[str], out: str | Path) -> None:
    """reports/tuning.json (DVC metrics): per method its chosen values, the validation accuracy tuned and untuned,
    and the budget; {"enabled": false} when tuning is off."""
    summary: dict = {"enabled": config["enabled"]}
    for path in chosen_paths:
        chosen = json.loads(Path(path).read_text())
        summary[chosen["method"]] = {
            "budget": chosen["budget"],
            "validation_accuracy": {
                "tuned": chosen["validation_accuracy"],
                "untuned": chosen["untuned"]["validation_accuracy"],
            },
            "chosen": {key.split(".", 1)[1]: value for key, value in chosen["values"].items()},
        }
    write_json(out, summary)
