"""The tuning stage: every method's hyperparameters chosen on validation accuracy, with the same budget (Optuna).

For each method in the comparison one Optuna study (`tuning` in params.yaml):
- budget: `tuning.trials` completed trials, the same for every method: the config's own values (trial 0,
  `enqueue_trial`; enqueued again if its run was killed), so the study reports the untuned validation accuracy
  beside the tuned one and never chooses worse than the config on validation, and the first `tuning.trials` - 1
  other completed trials. Failed trials are outside the budget;
- sampler: `tuning.sampler` (tpe | random), each method's seeded with its own seed drawn from `tuning.seed` and the
  method's name (`sampler_seed`), so that the searches do not propose the same learning rates to every method;
- objective: the fused validation accuracy at the validation-selected epoch, averaged over the runs
  `tuning.folds` x the method's tuning rates (`tuning.missing_rates`; a method trained at missing rate 0 only,
  the Table 1 analogue, is tuned there), seed `tuning.run_seed`. The runs are trained with an EMPTY test split
  (`train_runs(..., test=False)`): the test rows are never read;
- storage: Optuna's journal file (data/tuning/<method>/study.journal, default) or the RDB URL
  `runtime.tuning_storage` (PostgreSQL on a cluster). `runtime.tuning_workers` Snakemake jobs share the study, so trials run in parallel on SLURM;
  the study's name holds a fingerprint of the job's config, input files and code, so a rerun after a change
  starts a new study and a rerun after a failure resumes the old one. A worker holds a lock while it runs
  (data/tuning/<method>/.done/worker<k>.lock, mlaflow.joblock): a rerun of it beside a live earlier attempt
  fails at once, naming that attempt's pid.

Resuming after a kill (SIGKILL, a SLURM time limit, the OOM killer): the killed worker's trial stays RUNNING in
the storage, and no storage tells a dead worker's trial from a slow one by itself (Optuna 5.1's JournalStorage
has no heartbeat; RDBStorage's fails a trial only a grace period after its last beat, so a rerun right after
the kill would still find it running). So every trial records its owner (user attr `owner`: worker index, host,
pid, the process's start time), and a worker, when it starts, fails (state FAIL) the RUNNING trials of its own
worker index: the workflow runs each worker of a study once at a time (Snakemake and DVC lock their outputs),
so their process is dead, on whichever node it ran (a SLURM rerun lands on any). One whose process still runs on
this host is the same worker started twice: an error. Another worker's trials are left to its own rerun (each
worker that was killed reruns before `select`); a trial a kill caught between Optuna creating it and the worker
recording itself as its owner stays RUNNING unclaimed, outside the budget. Unless a trial of the config's own
values is completed, queued or claimed, they are enqueued again and run next.

A resumed study makes the trials an uninterrupted run makes: every trial records the sampler's random state after
it drew its values (user attr `sampler_state`), and a worker restores the state of its last completed trial before
its first. The retried trial then draws from the state the killed one drew from and sees the same completed trials
(a failed trial is no part of TPE's model), so its values, and so all later ones, are the uninterrupted run's; only
the trial numbers after a failed trial are one higher. In an uninterrupted run the restored state is the state the
sampler holds anyway: its trials are those of Optuna's own `study.optimize` with the seeded sampler.

Outputs: each worker's trials (data/tuning/<method>/worker<k>.json), then the chosen values
(data/tuning/<method>.json: the best of the study's budget, ties to the earlier trial), which the training rules
take as an input (mlaflow.train.job applies them). Trials of several workers run concurrently and TPE then depends
on their timing; with one worker a study is reproducible, killed and resumed or not.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from mlaflow.data.folds import fold_indices
from mlaflow.errors import InputError, ParamsError
from mlaflow.io import write_json
from mlaflow.joblock import job_lock
from mlaflow.keys import config_hash, format_rate
from mlaflow.methods.space import method_space
from mlaflow.runtime import Runtime
from mlaflow.train.data import Corpus
from mlaflow.train.inputs import JobFiles, check_rates, load_job_inputs
from mlaflow.train.inputs import fingerprint as job_fingerprint
from mlaflow.train.loop import RunSpec, train_runs
from mlaflow.train.tuned import apply_values, current_value

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


def objective(config: dict, corpus: Corpus, specs: list[RunSpec], space: dict, device: str = "auto"):
    """The Optuna objective of a method: mean validation accuracy of its tuning runs under a trial's values."""
    method, settings, modalities = config["method"], base_settings(config), config["modalities"]

    def run(trial) -> float:
        values = {
            key: dim.suggest(trial, key, current_value(settings, key), modalities)
            for key, dim in space.items()
        }
        started = time.perf_counter()
        records = train_runs(method, corpus, specs, apply_values(settings, values), test=False, device=device)
        accuracies = [r["validation"]["accuracy"] for r in records]
        trial.set_user_attr("validation_accuracies", accuracies)
        trial.set_user_attr("seconds", time.perf_counter() - started)
        value = float(np.mean(accuracies))
        log.info("%s trial %d: validation accuracy %.4f with %s", method, trial.number, value, values)
        return value

    return run


def study_name(config: dict, fingerprint: str) -> str:
    return f"{config['method']}-{fingerprint}"


def sampler_seed(seed: int, method: str, worker: int = 0) -> int:
    """The seed of `method`'s sampler in worker `worker`: one integer from (tuning.seed, a stable hash of the
    method's name, the worker) through numpy's SeedSequence. With one seed for all, every method's random
    start-up trials would draw the same quantiles of their shared dimensions (train.lr, train.weight_decay)."""
    entropy = [seed, zlib.crc32(method.encode()), worker]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def open_study(
    config: dict,
    fingerprint: str,
    journal: str | Path,
    storage_url: str | None = None,
    create: bool = True,
    worker: int = 0,
):
    """The method's study in the journal file (or the RDB at `storage_url`, runtime.tuning_storage), created if
    missing. Its sampler is seeded with `sampler_seed` (the method's own seed, worker k's own stream), so that
    neither two methods nor two parallel workers propose the same values."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    tuning = config["tuning"]
    storage = storage_url or JournalStorage(JournalFileBackend(str(journal)))
    seed = sampler_seed(tuning["seed"], config["method"], worker)
    sampler = (
        optuna.samplers.TPESampler(seed=seed)
        if tuning["sampler"] == "tpe"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    name = study_name(config, fingerprint)
    if not create:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    return optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, direction="maximize", load_if_exists=True
    )


OWNER, SAMPLER_STATE = "owner", "sampler_state"  # user attrs of every trial (module docstring)


def completed(study) -> list:
    from optuna.trial import TrialState

    return sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)


def budget(study, defaults: dict, trials: int) -> tuple:
    """The completed trials a study's result is made of: its first trial of the config's own values (the untuned
    one; None while there is none) and its first `trials` - 1 other trials."""
    done = completed(study)
    untuned = next((t for t in done if t.params == defaults), None)
    return untuned, [t for t in done if untuned is None or t.number != untuned.number][: trials - 1]


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat from the third (state) on, None without it (no such process, or no /proc).
    The name (second field) may hold spaces and parentheses: the fields follow its last ')'."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return text[text.rindex(")") + 2 :].split()


def this_process() -> dict:
    """What identifies this process: host, pid and start time (clock ticks after boot; a later process may get
    the pid). The start time is None where there is no /proc (not Linux)."""
    stat = _proc_stat(os.getpid())
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": None if stat is None else int(stat[19]),
    }


def _alive(owner: dict) -> bool:
    """Whether the process `owner` (this_process() of a process of this host) still runs."""
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process has the pid: its start time says whether it is the owner
    if owner["started"] is None:  # recorded without /proc: the pid is all there is
        return True
    stat = _proc_stat(owner["pid"])
    return stat is not None and stat[0] != "Z" and int(stat[19]) == owner["started"]  # Z: killed, not reaped


def fail_stale_trials(study, worker: int) -> list[int]:
    """Fail the trials that worker `worker` left RUNNING when it was killed (module docstring); their numbers.
    Raises InputError when their process is alive on this host (the worker was started twice)."""
    from optuna.trial import TrialState

    me, failed = this_process(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get(OWNER)
        if owner is None or owner["worker"] != worker:
            continue  # another worker's, or just created by a worker that has not claimed it yet
        if owner["host"] == me["host"] and _alive(owner):
            raise InputError(
                None,
                f"worker {worker} of study {study.study_name} is running already (pid {owner['pid']} on "
                f"{owner['host']}, trial {trial.number})",
                "let it finish, or end it and run the worker again",
            )
        study.tell(trial.number, state=TrialState.FAIL)
        log.warning(
            "%s: trial %d was left running by worker %d's killed process (pid %d on %s): failed, to be retried",
            study.study_name,
            trial.number,
            worker,
            owner["pid"],
            owner["host"],
        )
        failed.append(trial.number)
    return failed


def _random_states(sampler) -> list[np.random.RandomState]:
    """The random states `sampler` draws values from (private attributes of Optuna 5.1, pinned in pyproject)."""
    import optuna

    if isinstance(sampler, optuna.samplers.TPESampler):
        return [sampler._rng.rng, sampler._random_sampler._rng.rng]  # its model's, its start-up trials'
    if isinstance(sampler, optuna.samplers.RandomSampler):
        return [sampler._rng.rng]
    raise TypeError(f"cannot record the random state of a {type(sampler).__name__}")


def sampler_state(sampler) -> list[dict]:
    """The random state of `sampler`, as JSON (a trial's user attr)."""
    states = []
    for rng in _random_states(sampler):
        _, keys, pos, has_gauss, gauss = rng.get_state()
        key = base64.b64encode(keys.astype("<u4").tobytes()).decode()
        states.append({"key": key, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)})
    return states


def set_sampler_state(sampler, states: list[dict]) -> None:
    for rng, state in zip(_random_states(sampler), states, strict=True):
        key = np.frombuffer(base64.b64decode(state["key"]), dtype="<u4").astype(np.uint32)
        rng.set_state(("MT19937", key, state["pos"], state["has_gauss"], state["gauss"]))


def optimize(
    study, config: dict, corpus: Corpus, specs: list[RunSpec], worker: int = 0, device: str = "auto"
) -> None:
    """Trials of `study` as its worker `worker` until the study holds its budget (module docstring): the config's
    own values and `tuning.trials` - 1 others, completed. A trial the worker's killed run left RUNNING is failed
    and retried, with the values the killed run drew."""
    from optuna.trial import TrialState

    tuning, space = config["tuning"], method_space(config["method"])
    check_space(config, space)
    defaults = default_values(config, space)
    fail_stale_trials(study, worker)
    # The config's values again unless a trial of them is done, queued or run by a worker. Not
    # enqueue_trial(skip_if_exists=True): it skips for a failed trial of the values too (Optuna 5.1). An
    # unclaimed RUNNING one is no sign: its worker may have been killed before it claimed it.
    live = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.WAITING, TrialState.COMPLETE)
        or (t.state == TrialState.RUNNING and OWNER in t.user_attrs)
    ]
    # an enqueued trial's values are its fixed_params until its suggestions have set its params
    if not any(t.system_attrs.get("fixed_params", t.params) == defaults for t in live):
        study.enqueue_trial(defaults)
    own = [t for t in completed(study) if t.user_attrs.get(OWNER, {}).get("worker") == worker]
    if own:  # a fresh process: draw on from where this worker's last completed trial left the sampler
        set_sampler_state(study.sampler, own[-1].user_attrs[SAMPLER_STATE])
    run = objective(config, corpus, specs, space, device)
    while True:
        untuned, others = budget(study, defaults, tuning["trials"])
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        # the searched trials done, the config's trial still runs if it waits (retried after a kill)
        if len(others) >= tuning["trials"] - 1 and (untuned is not None or not waiting):
            break
        trial = study.ask()
        trial.set_user_attr(OWNER, {"worker": worker, **this_process()})
        try:
            value = run(trial)
        except (Exception, KeyboardInterrupt):
            study.tell(trial, state=TrialState.FAIL)
            raise
        trial.set_user_attr(SAMPLER_STATE, sampler_state(study.sampler))
        if study.tell(trial, value).state != TrialState.COMPLETE:  # a NaN value: the loop would retry forever
            raise RuntimeError(
                f"{study.study_name}: Optuna did not accept trial {trial.number}'s value {value}"
            )


def run_worker(
    config: dict, worker: int, files: JobFiles, journal: str | Path, out: str | Path, runtime: Runtime
) -> None:
    """One worker of a method's study: trials until the study holds its budget of completed ones. The study lives
    in `journal` (Optuna's journal file) or, where set, runtime.tuning_storage's RDB."""
    import optuna
    import torch

    # before anything else: a rerun must not run beside a live earlier attempt of this worker (mlaflow.joblock)
    with job_lock(out):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        torch.set_num_threads(runtime.threads)
        method, tuning = config["method"], config["tuning"]
        inputs = load_job_inputs(config, files, [tuning["run_seed"]])
        rates = [format_rate(rate) for rate in tuning["missing_rates"]]
        check_rates(inputs.masks, rates, "tuning", files.folds)
        masks = {float(label): by_seed[tuning["run_seed"]] for label, by_seed in inputs.masks.items()}
        specs = tuning_specs(inputs.corpus, inputs.folds, masks, tuning["folds"], tuning["run_seed"])
        fingerprint = job_fingerprint(config, files)
        Path(journal).parent.mkdir(parents=True, exist_ok=True)
        study = open_study(config, fingerprint, journal, runtime.tuning_storage, worker=worker)
        done_before = len(completed(study))
        optimize(study, config, inputs.corpus, specs, worker, runtime.device)
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


def select(
    config: dict,
    journal: str | Path,
    worker_paths: list[str],
    out: str | Path,
    storage_url: str | None = None,
) -> dict:
    """The chosen values of a method: the best trial of its study's budget (the study its workers,
    `worker_paths`, ran)."""
    method, tuning, modalities = config["method"], config["tuning"], config["modalities"]
    prints = {json.loads(Path(path).read_text())["fingerprint"] for path in worker_paths}
    if len(prints) != 1:
        raise InputError(
            worker_paths[0], f"the workers ran {len(prints)} different studies", "re-run them all"
        )
    (fingerprint,) = prints
    space = method_space(method)
    study = open_study(config, fingerprint, journal, storage_url, create=False)
    defaults = default_values(config, space)
    untuned, others = budget(study, defaults, tuning["trials"])
    if untuned is None:
        raise InputError(
            journal,
            f"study {study.study_name} has no completed trial of the config's own values",
            "re-run the tuning workers (snakemake or dvc repro): each retries the trials its killed run left",
        )
    trials = sorted([untuned, *others], key=lambda t: t.number)
    if len(trials) < tuning["trials"]:
        raise InputError(
            journal,
            f"study {study.study_name} has {len(trials)} completed trials, the budget is {tuning['trials']}",
            "re-run the tuning workers (snakemake or dvc repro); failed trials are retried",
        )
    best = max(trials, key=lambda t: (t.value, -t.number))
    settings = base_settings(config)
    result = {
        "method": method,
        "study": study.study_name,
        "storage": storage_url or str(journal),
        "sampler": tuning["sampler"],
        "seed": tuning["seed"],
        "sampler_seed": sampler_seed(tuning["seed"], method),
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
