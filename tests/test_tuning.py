"""The tuning stage (mlaflow/tune): validation only, the same budget for every method, the chosen values reaching
the training jobs, and the search spaces agreeing with the schema and the shipped params."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from job_files import CLASSES, CPU_ONE_AT_A_TIME, DIMS, small_params, train_config, write_job_files

from mlaflow.errors import InputError
from mlaflow.methods import METHODS, options_section
from mlaflow.methods.space import MODALITIES, Choice, method_space
from mlaflow.pipeline import experiments as E
from mlaflow.pipeline import params as P
from mlaflow.pipeline.jobconfigs import job_configs
from mlaflow.train.data import load_corpus
from mlaflow.train.index import write_index
from mlaflow.train.job import run_training_job
from mlaflow.train.tuned import apply_values
from mlaflow.tune import study as S

optuna.logging.set_verbosity(optuna.logging.WARNING)


def tuning_config(params: dict, method: str, trials: int = 3) -> dict:
    params = copy.deepcopy(params)
    params["tuning"].update(trials=trials, folds=[1, 2], missing_rates=[0.3])
    config = E.tuning_job_config(params, method)
    config.update(classes=CLASSES, feature_dims=DIMS)
    return config


@pytest.fixture
def tiny(tmp_path):
    files = write_job_files(tmp_path, n=150)
    corpus = load_corpus(files.manifest, dict(zip(DIMS, files.features)), CLASSES, list(DIMS), DIMS)
    folds = pd.read_csv(files.folds, dtype={"utterance_id": str})
    present = np.random.default_rng(1).random((len(corpus.labels), 3)) > 0.3
    present[~present.any(axis=1), 0] = True
    return files, corpus, folds, present


def _trials(config, corpus, folds, present):
    """The trials (values, validation accuracy) of an in-memory study of `config`."""
    specs = S.tuning_specs(corpus, folds, {0.3: present}, config["tuning"]["folds"], 0)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    S.optimize(study, config, corpus, specs)
    return [(t.params, t.value) for t in S.completed(study)], specs


@pytest.mark.parametrize("method", ["late_fusion", "bigated"])
def test_the_tuner_never_reads_the_test_split(tiny, method):
    """Fold 1's test rows with shuffled labels and NaN features change nothing; changed validation labels do.
    (One fold: a fold's test session is a training session of the other folds.)"""
    _, corpus, folds, present = tiny
    config = tuning_config(small_params(epochs=6), method)
    config["tuning"]["folds"] = [1]
    trials, specs = _trials(config, corpus, folds, present)
    assert all(len(spec.split["test"]) == 0 for spec in specs)  # the test rows are not even given
    assert len(trials) == 3 and trials[0][0] == S.default_values(config, method_space(method))

    test_rows = np.flatnonzero(folds["fold1"].to_numpy() == "test")
    hidden = copy.copy(corpus)
    labels = corpus.labels.clone()
    shuffle = torch.randperm(len(test_rows), generator=torch.Generator().manual_seed(3))
    labels[test_rows] = (labels[test_rows][shuffle] + 1) % 3
    assert bool((labels[test_rows] != corpus.labels[test_rows]).any())
    hidden.labels = labels
    hidden.features = [x.clone() for x in corpus.features]
    for x in hidden.features:
        x[test_rows] = float("nan")
    assert _trials(config, hidden, folds, present)[0] == trials

    val_rows = np.flatnonzero(folds["fold1"].to_numpy() == "val")
    moved = copy.copy(corpus)
    moved.labels = corpus.labels.clone()
    moved.labels[val_rows] = (moved.labels[val_rows] + 1) % 3
    assert [v for _, v in _trials(config, moved, folds, present)[0]] != [v for _, v in trials]


def test_every_method_of_the_comparison_gets_the_same_budget():
    params = P.validate(small_params())
    configs = job_configs(params)
    tuned = E.tuned_methods(params)
    assert set(tuned) == P.used_methods(params)  # every method of the comparison, nothing else
    settings = {m: configs[f"data/tuning/{m}.config.json"]["tuning"] for m in tuned}
    same = {
        json.dumps({k: v for k, v in s.items() if k != "missing_rates"}, sort_keys=True)
        for s in settings.values()
    }
    assert len(same) == 1  # trials, sampler, seed, folds, storage, workers: one setting for all
    assert {m: s["missing_rates"] for m, s in settings.items() if s["missing_rates"] == [0.0]} == {
        m: [0.0]
        # trained at rate 0 only: tuned there
        for m in ("sum", "concat", "film", "bigated", "ogm_ge", "mmpareto", "reconboost", "mla_hgm_off")
    }
    params["tuning"]["enabled"] = False
    assert E.tuned_methods(params) == []
    # only the summary's config, which says so (and keeps data/tuning, a DVC output, in existence)
    assert [p for p in job_configs(params) if p.startswith("data/tuning/")] == [
        "data/tuning/summary.config.json"
    ]
    assert job_configs(params)["data/tuning/summary.config.json"] == {"enabled": False, "methods": []}


def test_select_takes_the_budget_of_completed_trials_and_the_best(tiny, tmp_path):
    _, corpus, folds, present = tiny
    config = tuning_config(small_params(), "late_fusion", trials=3)
    journal = tmp_path / "study.journal"
    study = S.open_study(config, "abc", journal)
    S.optimize(study, config, corpus, S.tuning_specs(corpus, folds, {0.3: present}, [1, 2], 0))
    (tmp_path / "worker0.json").write_text(json.dumps({"fingerprint": "abc"}))
    chosen = S.select(config, journal, [str(tmp_path / "worker0.json")], tmp_path / "chosen.json")
    assert chosen["budget"] == 3 and len(chosen["trials"]) == 3
    best = max(chosen["trials"], key=lambda t: (t["validation_accuracy"], -t["number"]))
    assert chosen["values"] == best["values"] and chosen["validation_accuracy"] == best["validation_accuracy"]
    assert chosen["untuned"]["trial"] == 0 and chosen["untuned"]["values"] == {
        "train.lr": 0.01,
        "train.weight_decay": 0.0001,
    }
    # a rerun of the worker finds the budget done and adds nothing
    S.optimize(S.open_study(config, "abc", journal), config, corpus, [])
    assert len(S.completed(S.open_study(config, "abc", journal))) == 3
    config["tuning"]["trials"] = 4  # a larger budget than the study holds: an error, not a silent choice
    with pytest.raises(InputError, match="has 3 completed trials, the budget is 4"):
        S.select(config, journal, [str(tmp_path / "worker0.json")], tmp_path / "chosen.json")


def _score(settings: dict) -> float:
    """A cheap stand-in for a trial's validation accuracy: a smooth function of the searched values."""
    lr, decay = settings["train"]["lr"], settings["train"]["weight_decay"]
    return float(1 / (1 + (np.log10(lr) + 2.3) ** 2 + 0.1 * (np.log10(decay) + 4.5) ** 2))


def _fake_train_runs(block_at: int | None = None, marker: str | None = None):
    """`train_runs` scoring with `_score`; its `block_at`-th call (from 0) writes `marker` and never returns."""
    calls = []

    def train_runs(method, corpus, specs, settings, test, device):
        if len(calls) == block_at:
            Path(marker).write_text("blocked")
            time.sleep(3600)
        calls.append(settings)
        return [{"validation": {"accuracy": _score(settings)}}]

    return train_runs


def _blocking_worker(
    config_path: str, journal: str, worker: int, block_at: int, marker: str, storage: str | None
) -> None:
    """A tuning worker (run in a subprocess by `_start_worker`) whose `block_at`-th trial never finishes."""
    config = json.loads(Path(config_path).read_text())
    S.train_runs = _fake_train_runs(block_at, marker)
    S.optimize(S.open_study(config, "fp", journal, storage, worker=worker), config, None, [], worker=worker)


def _start_worker(
    tmp_path, config: dict, journal, block_at: int, worker: int = 0, storage: str | None = None
) -> subprocess.Popen:
    """A worker process, returned once it is inside its `block_at`-th trial."""
    config_path, marker = tmp_path / f"config{worker}.json", tmp_path / f"blocked{worker}"
    config_path.write_text(json.dumps(config))
    call = (
        f"_blocking_worker({str(config_path)!r}, {str(journal)!r}, {worker}, {block_at}, {str(marker)!r},"
        f" {storage!r})"
    )
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-c", f"import test_tuning; test_tuning.{call}"],
        env={**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"},
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the worker exited ({proc.returncode}): {proc.stderr.read()}")
        assert time.monotonic() < deadline, "the worker never reached its trial"
        time.sleep(0.1)
    return proc


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()


def _states(study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


@pytest.mark.parametrize(
    ("sampler", "killed_in", "storage"),
    [
        ("tpe", 0, "journal"),
        ("tpe", 2, "journal"),
        ("tpe", 11, "journal"),
        ("random", 2, "journal"),
        ("tpe", 2, "rdb"),
    ],
)
def test_a_worker_killed_in_a_trial_resumes_to_the_study_of_an_uninterrupted_run(
    tmp_path, monkeypatch, sampler, killed_in, storage
):
    """A worker killed (SIGKILL) inside trial `killed_in` leaves it RUNNING; the rerun, a fresh process with a
    freshly seeded sampler, retries it and completes the very trials an uninterrupted run makes (TPE's
    10 random start-up trials and its model-based ones after them), none twice, and `select` takes them.
    In the journal file or an RDB (SQLite here)."""
    config = tuning_config(small_params(), "late_fusion", trials=13)
    config["tuning"]["sampler"] = sampler
    url = f"sqlite:///{tmp_path / 'studies.db'}" if storage == "rdb" else None  # runtime.tuning_storage
    monkeypatch.setattr(S, "train_runs", _fake_train_runs())
    reference = S.open_study(config, "reference", tmp_path / "reference.journal", url)
    S.optimize(reference, config, None, [])
    assert _states(reference) == ["COMPLETE"] * 13

    journal = tmp_path / "study.journal"
    _kill(_start_worker(tmp_path, config, journal, block_at=killed_in, storage=url))
    study = S.open_study(config, "fp", journal, url)
    assert _states(study) == ["COMPLETE"] * killed_in + ["RUNNING"]
    S.optimize(study, config, None, [])
    (tmp_path / "worker0.json").write_text(json.dumps({"fingerprint": "fp"}))
    chosen = S.select(config, journal, [str(tmp_path / "worker0.json")], tmp_path / "chosen.json", url)

    params = [t.params for t in S.completed(study)]
    assert len({json.dumps(p, sort_keys=True) for p in params}) == 13  # no point twice
    assert params == [t.params for t in S.completed(reference)]
    assert _states(study) == ["COMPLETE"] * killed_in + ["FAIL"] + ["COMPLETE"] * (13 - killed_in)
    assert params[0] == S.default_values(config, method_space("late_fusion"))
    assert chosen["untuned"]["trial"] == (1 if killed_in == 0 else 0)
    assert [t["number"] for t in chosen["trials"]] == [n for n in range(14) if n != killed_in]
    best = max(S.completed(reference), key=lambda t: (t.value, -t.number))
    assert chosen["values"] == best.params and chosen["validation_accuracy"] == best.value


def test_a_worker_fails_only_its_own_trials_left_running_by_a_dead_process(tmp_path, monkeypatch):
    """Two workers share a study: worker 1 is inside trial 0 (the config's values). A second worker 1 on this
    host is refused while the first lives; worker 0 leaves the trial alone and runs the searched trials.
    Once worker 1 is killed, its rerun fails the trial and retries it, and `select` counts the retry."""
    config = tuning_config(small_params(), "late_fusion", trials=4)
    journal = tmp_path / "study.journal"
    worker1 = _start_worker(tmp_path, config, journal, block_at=0, worker=1)
    monkeypatch.setattr(S, "train_runs", _fake_train_runs())
    try:
        with pytest.raises(InputError, match=r"worker 1 of study late_fusion-fp is running already \(pid"):
            S.optimize(S.open_study(config, "fp", journal, worker=1), config, None, [], worker=1)
        S.optimize(S.open_study(config, "fp", journal), config, None, [], worker=0)
        assert _states(S.open_study(config, "fp", journal)) == ["RUNNING"] + ["COMPLETE"] * 3
    finally:
        _kill(worker1)
    S.optimize(S.open_study(config, "fp", journal), config, None, [], worker=0)  # not worker 0's trial
    assert _states(S.open_study(config, "fp", journal)) == ["RUNNING"] + ["COMPLETE"] * 3
    S.optimize(S.open_study(config, "fp", journal, worker=1), config, None, [], worker=1)
    study = S.open_study(config, "fp", journal)
    assert _states(study) == ["FAIL"] + ["COMPLETE"] * 4
    assert study.trials[4].params == S.default_values(config, method_space("late_fusion"))
    for k in (0, 1):
        (tmp_path / f"worker{k}.json").write_text(json.dumps({"fingerprint": "fp"}))
    workers = [str(tmp_path / f"worker{k}.json") for k in (0, 1)]
    chosen = S.select(config, journal, workers, tmp_path / "chosen.json")
    assert chosen["untuned"]["trial"] == 4 and [t["number"] for t in chosen["trials"]] == [1, 2, 3, 4]


def test_a_running_trial_is_stale_only_when_its_worker_is_gone():
    """A worker's trial left RUNNING on another host is stale (the workflow runs each worker of a study once
    at a time, on any node); another worker's trial, or one no worker has claimed yet, is never this worker's
    to fail; one of this worker's own live process (a pid of this host started then) is an error."""
    study = optuna.create_study(direction="maximize")
    study.ask().set_user_attr("owner", {"worker": 0, "host": "another-node", "pid": 1, "started": 1})
    study.ask()  # not claimed yet
    assert S.fail_stale_trials(study, worker=1) == [] and _states(study) == ["RUNNING", "RUNNING"]
    assert S.fail_stale_trials(study, worker=0) == [0] and _states(study) == ["FAIL", "RUNNING"]
    study.ask().set_user_attr("owner", {"worker": 0, **S.this_process()})
    with pytest.raises(InputError, match="worker 0 of study .* is running already"):
        S.fail_stale_trials(study, worker=0)
    study.ask().set_user_attr("owner", {"worker": 1, **S.this_process(), "started": -1})  # its pid reused
    assert S.fail_stale_trials(study, worker=1) == [3]


def test_the_config_values_are_retried_when_their_trial_was_never_claimed(monkeypatch):
    """Trial 0 (the config's values) killed right after Optuna made it, before its worker claimed it: it stays
    RUNNING, unclaimed and outside the budget, and the rerun enqueues the config's values again."""
    config = tuning_config(small_params(), "late_fusion", trials=2)
    monkeypatch.setattr(S, "train_runs", _fake_train_runs())
    defaults = S.default_values(config, method_space("late_fusion"))
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(defaults)
    study.ask()
    S.optimize(study, config, None, [])
    assert _states(study) == ["RUNNING", "COMPLETE", "COMPLETE"] and study.trials[1].params == defaults


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_an_uninterrupted_study_makes_the_trials_of_optunas_own_loop(monkeypatch, sampler):
    """The tuner's trials are those of Optuna's `study.optimize` with the seeded sampler and the config's
    values enqueued first (what the stage ran before it resumed killed studies): its results stand."""
    config = tuning_config(small_params(), "late_fusion", trials=13)
    config["tuning"]["sampler"] = sampler
    monkeypatch.setattr(S, "train_runs", _fake_train_runs())
    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    study = optuna.create_study(direction="maximize", sampler=samplers[sampler](seed=0))
    S.optimize(study, config, None, [])
    space = method_space("late_fusion")
    plain = optuna.create_study(direction="maximize", sampler=samplers[sampler](seed=0))
    plain.enqueue_trial(S.default_values(config, space))
    plain.optimize(S.objective(config, None, [], space), n_trials=13)
    assert [(t.params, t.value) for t in S.completed(study)] == [(t.params, t.value) for t in plain.trials]


def _chosen_file(path, method, values):
    path.write_text(json.dumps({"method": method, "values": values, "values_hash": E.config_hash(values)}))
    return path


def test_the_chosen_values_reach_the_training_jobs(tmp_path):
    files = write_job_files(tmp_path)
    params = small_params()
    config = train_config(params, "bigated", "complete")
    runs = {}
    for name, values in {
        "a": {"train.lr": 0.02, "method_params.bigated.gate": "audio"},
        "b": {"train.lr": 0.005, "method_params.bigated.gate": "visual"},
    }.items():
        chosen = _chosen_file(tmp_path / f"{name}.json", "bigated", values)
        outputs = [str(tmp_path / name / "bigated" / "missing_0.30" / "seed0_fold1.json")]
        tuned_files = dataclasses.replace(files, tuned=str(chosen))
        run_training_job(config, tuned_files, [("0.30", 0, 1)], outputs, CPU_ONE_AT_A_TIME)
        runs[name] = json.loads(Path(outputs[0]).read_text())
    a, b = runs["a"], runs["b"]
    assert a["method_params"]["gate"] == "audio" and a["optimizer"]["lr"] == 0.02
    assert b["method_params"]["gate"] == "visual" and b["optimizer"]["lr"] == 0.005
    assert a["tuned"]["values_hash"] != b["tuned"]["values_hash"]
    assert a["config_hash"] == b["config_hash"]  # the job's config is the same; the tuned values are an input
    assert a["metrics"] != b["metrics"]

    # the stage's index refuses a run trained with other tuned values than the stage now has
    index_config = {
        "stage": "main_grid",
        "experiments": [],
        "config_hashes": {"complete/bigated": a["config_hash"]},
        "tuned_methods": ["bigated"],
    }
    run_path = tmp_path / "a" / "bigated" / "missing_0.30" / "seed0_fold1.json"
    write_index(index_config, [str(run_path)], tmp_path / "index.json", [str(tmp_path / "a.json")])
    with pytest.raises(InputError, match="stale result: trained with tuned values"):
        write_index(index_config, [str(run_path)], tmp_path / "index.json", [str(tmp_path / "b.json")])
    # with tuning off, a run trained with the config's values is current, a tuned one is stale
    untuned = tmp_path / "untuned.json"
    untuned.write_text(json.dumps({**a, "tuned": None}))
    index_config["tuned_methods"] = []
    write_index(index_config, [str(untuned)], tmp_path / "index.json", [])
    with pytest.raises(
        InputError, match="trained with tuned values [0-9a-f]+, the tuning stage now chose None"
    ):
        write_index(index_config, [str(run_path)], tmp_path / "index.json", [])


def test_an_experiment_override_wins_over_a_tuned_value():
    settings = {
        "train": {"lr": 0.01},
        "method_params": {"mla": {"alpha": 0.1, "head_update": "project_gradient"}},
    }
    values = {"train.lr": 0.03, "method_params.mla.alpha": 0.5}
    keep = {"method_params": {"mla": {"alpha": 0.2}}}
    out = apply_values(settings, values, keep)
    assert (
        out["train"]["lr"] == 0.03 and out["method_params"]["mla"]["alpha"] == 0.1
    )  # alpha: the experiment's
    assert settings["train"]["lr"] == 0.01  # a copy


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_search_space_is_of_schema_options_and_holds_the_shipped_values(method):
    params = P.load(P.REPO_ROOT / "params.yaml")  # the shipped config's values must lie in the spaces
    section_of = options_section(method)  # a variant searches its base's options (methods.VARIANTS)
    schema_options = P.load_schema()["properties"]["method_params"]["properties"][section_of].get(
        "properties", {}
    )
    space = method_space(method)
    for key in space:
        section, *rest = key.split(".")
        if section == "method_params":
            assert rest[0] == method and rest[1] in schema_options, key
        else:
            assert section == "train" and rest[0] in ("lr", "weight_decay"), key
    config = tuning_config(params, method) if method in E.tuned_methods(params) else None
    if config is not None:
        S.check_space(config, space)  # trial 0 (the shipped values) lies in the space


def test_a_shipped_value_outside_its_search_range_is_an_error():
    params = small_params()
    params["method_params"]["mla"]["alpha"] = 5.0
    config = tuning_config(params, "mla")
    with pytest.raises(Exception, match="method_params.mla.alpha.*outside its search range"):
        S.check_space(config, method_space("mla"))


def test_gate_and_condition_modalities_are_searched():
    for method, option in (("bigated", "gate"), ("film", "condition")):
        dim = method_space(method)[f"method_params.{method}.{option}"]
        assert isinstance(dim, Choice) and dim.values == MODALITIES
        assert dim.options(["a", "b"]) == ["a", "b"]


def test_each_methods_sampler_draws_from_its_own_seed(tmp_path):
    """Issue 28: one sampler seed for every method made every search propose the same learning rates. Each
    method's seed now comes from tuning.seed and its name: reproducible, and different across methods and
    workers."""
    assert S.sampler_seed(0, "mla") == S.sampler_seed(0, "mla")
    seeds = {S.sampler_seed(0, m) for m in ("mla", "late_fusion", "concat")}
    seeds |= {S.sampler_seed(0, "mla", worker=1), S.sampler_seed(1, "mla")}
    assert len(seeds) == 5
    first_lr = {}
    for method in ("mla", "late_fusion"):
        config = tuning_config(small_params(), method, trials=2)
        study = S.open_study(config, "fingerprint", tmp_path / f"{method}.journal")
        first_lr[method] = study.ask().suggest_float("train.lr", 1e-3, 1e-1, log=True)
    assert first_lr["mla"] != first_lr["late_fusion"]
