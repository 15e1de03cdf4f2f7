"""The missing-modality suite's plumbing (Table 2 analogue, test-time shift), the isolation analysis (Figure 2
analogue) and the bad inputs issue 4 names: masks that remove every modality, unknown methods, wrong types."""

import copy

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from job_files import unit_config

from mlaflow.data.masks import (
    all_missing_forbidden_by,
    bernoulli_mask,
    draw_mask,
    isolation_mask,
    read_mask,
    training_only,
    write_masks,
)
from mlaflow.errors import InputError, ParamsError
from mlaflow.pipeline import experiments as E
from mlaflow.pipeline import params as P
from mlaflow.report import suite
from mlaflow.train.data import Corpus
from mlaflow.train.loop import RunSpec, train_runs

CONFIG = unit_config()  # the schema's defaults (tests/job_files.py), not the shipped params.yaml
NAMES = ["audio", "visual", "text"]
BERNOULLI = {"protocol": "bernoulli", "modality": None, "training_only": False}
CPM = {**BERNOULLI, "protocol": "cpm"}


# ---------------------------------------------------------------------------------------------- masks


def test_isolation_mask_masks_only_its_modality_at_its_rate():
    present = isolation_mask(20000, 2, 0.6, seed=1)
    assert present[:, 0].all() and present[:, 1].all()
    assert abs((~present[:, 2]).mean() - 0.6) < 4 * np.sqrt(0.6 * 0.4 / 20000)
    spec = {"protocol": "single_modality", "modality": "text", "training_only": True}
    assert np.array_equal(draw_mask(spec, NAMES, 20000, 0.6, 1), present)
    assert not np.array_equal(isolation_mask(20000, 0, 0.6, 1)[:, 0], present[:, 2])


def test_isolation_masks_apply_to_the_training_split_only():
    present = isolation_mask(100, 0, 0.9, seed=0)
    split = {"train": np.arange(0, 60), "val": np.arange(60, 70), "test": np.arange(70, 100)}
    out = training_only(present, split)
    assert np.array_equal(out[:60], present[:60]) and out[60:].all()
    assert (~out[:60, 0]).mean() > 0.7
    # a modality the corpus never recorded (no face found) stays missing outside the training split too
    recorded = np.ones_like(present)
    recorded[[5, 65, 80], 2] = False
    out = training_only(present & recorded, split, recorded)
    assert np.array_equal(out[:60], (present & recorded)[:60]) and np.array_equal(out[60:], recorded[60:])


def _write(path, ids, mask, spec=BERNOULLI, all_missing="prior"):
    write_masks(path, ids, {0: mask}, 0.7, spec, all_missing, NAMES)


def test_a_mask_that_removes_every_modality_is_refused_where_the_policy_forbids_it(tmp_path):
    ids = [f"u{i}" for i in range(40)]
    mask = bernoulli_mask(40, 0.7, seed=0)
    mask[3] = False
    path = tmp_path / "missing_0.70.h5"
    _write(path, ids, mask)
    assert np.array_equal(
        read_mask(path, 0, ids, BERNOULLI, all_missing_forbidden_by(BERNOULLI, "prior")), mask
    )
    with pytest.raises(
        InputError, match=r"missing_0.70.h5.*every modality of .* \(first: 'u3'\).*all_missing: redraw"
    ):
        read_mask(path, 0, ids, BERNOULLI, all_missing_forbidden_by(BERNOULLI, "redraw"))
    cpm_path = tmp_path / "cpm.h5"
    _write(cpm_path, ids, mask, spec=CPM)
    with pytest.raises(InputError, match="every sample keeps a modality"):
        read_mask(cpm_path, 0, ids, CPM, all_missing_forbidden_by(CPM, "prior"))


def test_a_mask_of_the_wrong_shape_or_type_names_the_file(tmp_path):
    ids = [f"u{i}" for i in range(10)]
    path = tmp_path / "bad.h5"
    _write(path, ids, np.ones((10, 3), dtype=bool))
    with h5py.File(path, "a") as f:
        del f["seed_0"]
        f["seed_0"] = np.ones((10, 2), dtype=bool)
    with pytest.raises(InputError, match=r"bad.h5.*shape \(10, 2\)"):
        read_mask(path, 0, ids)
    with h5py.File(path, "a") as f:
        del f["seed_0"]
        f["seed_0"] = np.full((10, 3), np.nan)
    with pytest.raises(InputError, match=r"bad.h5.*dtype float64"):
        read_mask(path, 0, ids)


# --------------------------------------------------------------------------------------------- params


def test_isolation_experiments_change_only_the_masks():
    table = E.by_name(E.experiment_table(CONFIG))
    for modality in CONFIG["isolation"]["modalities"]:
        experiment = table[f"isolate_{modality}"]
        assert experiment.kind == "isolation" and experiment.masks == E.MaskSpec(
            "single_modality", modality, True
        )
        assert not experiment.overrides and not experiment.test_time_shift
        config = E.train_job_config(CONFIG, experiment, "mla")
        main = E.train_job_config(CONFIG, table["main"], "mla")
        assert {k: v for k, v in config.items() if k not in ("experiment", "test_time_shift")} == {
            k: v for k, v in main.items() if k not in ("experiment", "test_time_shift")
        }
        assert {m for m, _ in experiment.cells} == set(CONFIG["isolation"]["methods"])
        assert set(experiment.reused) == {
            (m, 0.0) for m in CONFIG["isolation"]["methods"]
        }  # share 0: main grid


def test_suite_skips_cells_the_main_grid_trains():
    params = copy.deepcopy(CONFIG)
    params["missing_suite"] = {"methods": ["mla", "qmf"], "missing_rates": [0.0, 0.3]}
    suite_experiment = E.by_name(E.experiment_table(params))["suite"]
    assert suite_experiment.cells == (("qmf", 0.3),)  # mla: main grid; qmf at 0.0: complete-modality grid


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda p: p["missing_suite"].update(missing_rates=[0.15]), "missing_suite.missing_rates"),
        (lambda p: p["missing_suite"].update(methods=["no_such_method"]), "missing_suite.methods.0"),
        (
            lambda p: (
                p["isolation"].update(methods=["concat", "sum"], modalities=["text"])
                or p.update(complete_modality_methods=["concat"])
            ),
            "isolation.methods",
        ),
        (
            lambda p: p["isolation"].update(training_missing_rates=["half"]),
            "isolation.training_missing_rates.0",
        ),
        (
            lambda p: p["method_params"]["qmf"].update(rank_loss_weight="high"),
            "method_params.qmf.rank_loss_weight",
        ),
        (lambda p: p["isolation"].update(enabled="yes"), "isolation.enabled"),
        (lambda p: p["isolation"].update(modalities=[]), "isolation.modalities"),
        (lambda p: p["missing_suite"].update(missing_rates=[]), "missing_suite.missing_rates"),
        (
            lambda p: p["train"]["method_optimizers"].update(ae={"optimizer": "rmsprop"}),
            "train.method_optimizers.ae.optimizer",
        ),
        (
            lambda p: p["train"]["method_optimizers"].update(ae={"momentum": 0.5}),
            "train.method_optimizers.ae",
        ),
        (lambda p: p["train"]["method_optimizers"].update(mmim={"lr": 0.1}), "train.method_optimizers"),
    ],
)
def test_wrong_suite_or_isolation_params_name_the_key(mutate, key):
    params = copy.deepcopy(CONFIG)
    mutate(params)
    with pytest.raises(ParamsError) as err:
        P.validate(params)
    assert key in str(err.value)


# ------------------------------------------------------------------------------------ test-time shift


def _corpus(n=90, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    features = [
        torch.randn(3, d, generator=g)[labels] * 2 + torch.randn(n, d, generator=g) for d in (3, 4, 5)
    ]
    return Corpus(
        utterance_ids=[f"u{i}" for i in range(n)],
        labels=labels,
        features=features,
        class_names=["a", "b", "c"],
        feature_attrs={},
        modalities=["audio", "visual", "text"],
    )


def test_test_time_shift_equals_the_test_accuracy_at_the_training_mask_and_the_prior_with_nothing():
    corpus = _corpus()
    params = copy.deepcopy(CONFIG)
    params["train"].update(epochs=2, hidden_dim=8, device="cpu")
    split = {"train": np.arange(0, 60), "val": np.arange(60, 70), "test": np.arange(70, 90)}
    present = bernoulli_mask(90, 0.3, seed=0)
    nothing = np.zeros_like(present)
    spec = RunSpec(0, present, split, {"0.30": present, "1.00": nothing})
    (record,) = train_runs("late_fusion", corpus, [spec], E.method_settings(params, "late_fusion"))
    assert record["test_time_shift"]["0.30"] == pytest.approx(record["metrics"]["accuracy"])
    prior = corpus.class_names.index(record["prior_class"])
    expected = float((corpus.labels[70:90] == prior).float().mean())
    # every test sample predicted as the prior
    assert record["test_time_shift"]["1.00"] == pytest.approx(expected)


# --------------------------------------------------------------------------------------------- report


def _runs():
    rows = []
    for method, base in (("mla", 0.7), ("late_fusion", 0.6), ("qmf", 0.65), ("cca", 0.4)):
        for rate in (0.0, 0.3, 0.6):
            for seed in (0, 1):
                for fold in (1, 2):
                    acc = base - rate / 2 + 0.01 * seed
                    rows.append(
                        {
                            "variant": "paper",
                            "method": method,
                            "missing_rate": rate,
                            "seed": seed,
                            "fold": fold,
                            "accuracy": acc,
                            "audio_accuracy": 0.5,
                            "visual_accuracy": 0.4,
                            "text_accuracy": 0.6,
                            "shift_0.00": acc + 0.05,
                            "shift_0.30": acc,
                            "shift_0.60": acc - 0.05,
                        }
                    )
    return pd.DataFrame(rows)


def _table2(runs, params):
    methods = suite.suite_methods(params["methods"], params["missing_suite"]["methods"])
    return suite.table2(runs, methods, params["missing_suite"]["missing_rates"])


def test_table2_orders_methods_and_picks_the_strongest_for_the_shift_table():
    params = copy.deepcopy(CONFIG)
    params["missing_suite"] = {"methods": ["cca", "qmf"], "missing_rates": [0.3, 0.6]}
    table = _table2(_runs(), params)
    assert list(dict.fromkeys(table["method"])) == ["mla", "late_fusion", "cca", "qmf"]
    assert set(table["missing_rate"]) == {0.3, 0.6} and (table["n_runs"] == 4).all()
    row = table[(table["method"] == "qmf") & (table["missing_rate"] == 0.3)].iloc[0]
    assert row["mean"] == pytest.approx(0.65 - 0.15 + 0.005) and row["std"] == pytest.approx(
        0.01 / np.sqrt(2)
    )
    assert suite.strongest(table) == ["mla", "qmf", "late_fusion"]
    shift = suite.shift_table(_runs(), ["mla", "qmf"])
    assert list(dict.fromkeys(shift["method"])) == ["mla", "qmf"] and len(shift) == 2 * 3 * 3
    cell = shift.set_index(["method", "train_rate", "test_rate"])["mean"]
    assert cell[("mla", 0.3, 0.0)] == pytest.approx(0.7 - 0.15 + 0.005 + 0.05)


def test_isolation_uses_the_paper_runs_at_share_zero_and_states_which_method_is_steadier():
    runs = _runs()
    isolated = runs[runs["missing_rate"] == 0.3].assign(variant="isolate_text", missing_rate=0.9)
    isolated.loc[isolated["method"] == "qmf", "audio_accuracy"] = 0.3  # qmf's audio suffers without text
    params = copy.deepcopy(CONFIG)
    params["isolation"].update(methods=["mla", "qmf"], modalities=["text"])
    experiment = E.by_name(E.experiment_table(params))["isolate_text"]
    share0 = runs[runs["missing_rate"] == 0.0]  # the main grid's runs, reused at share 0
    table = suite.isolation([(experiment, pd.concat([share0, isolated]))], NAMES)
    assert set(table["missing_rate"]) == {0.0, 0.9} and set(table["modality"]) == {"audio", "visual"}
    statement = suite.isolation_statement(table)
    assert "`mla` 0.0 points (seed spread 0.0)" in statement and "`qmf` 10.0 points" in statement
    assert "more than twice the seed spread under **qmf**:" in statement and "**mla**" not in statement
    steady = suite.isolation_statement(table[table["method"] == "mla"])
    assert "No method's curves move" in steady


def test_the_table2_claim_is_computed_with_the_seed_spread():
    params = copy.deepcopy(CONFIG)
    params["missing_suite"] = {"methods": ["cca", "qmf"], "missing_rates": [0.3, 0.6]}
    runs = _runs()
    assert suite.claim_statement(_table2(runs, params)).endswith("MLA is best at 2 of 2 rates.")
    runs.loc[(runs["method"] == "qmf") & (runs["missing_rate"] == 0.6), "accuracy"] += 0.2  # qmf +15 points
    statement = suite.claim_statement(_table2(runs, params))
    assert (
        "best at 1 of 2 rates; behind at 0.6 (`qmf` +15.00 points, beyond the two seed spreads)." in statement
    )


def test_privileged_rows_are_flagged():
    assert suite.privilege("mmin", {"mmin": {"teacher_data": "complete"}})
    assert suite.privilege("mmin", {"mmin": {"teacher_data": "observed"}}) is None
    assert suite.privilege("tate", {"tate": {"privileged": True}})
    assert suite.privilege("cca", {"cca": {}}) is None


# ------------------------------------------------------------------------------------------- registry


def test_schema_registry_and_params_agree_and_every_method_builds_from_the_schema_defaults():
    from mlaflow.methods import METHODS, VARIANTS, build_method

    assert set(P.load_schema()["$defs"]["method"]["enum"]) == set(METHODS)
    assert set(CONFIG["method_params"]) == set(METHODS) - set(VARIANTS)  # a variant reads its base's
    generators = [torch.Generator().manual_seed(0)]
    dims = dict(zip(NAMES, [3, 4, 5]))
    for name in METHODS:
        settings = E.method_settings(CONFIG, name)
        settings["train"]["hidden_dim"] = 8
        method = build_method(name, dims, 3, settings, generators)
        assert method.name == name
    with pytest.raises(ParamsError, match="unknown method 'mmim'"):
        build_method("mmim", dims, 3, E.method_settings(CONFIG, "mla"), generators)


def test_a_methods_own_optimiser_replaces_only_optimizer_and_lr_and_the_run_records_it():
    params = copy.deepcopy(CONFIG)
    params["train"]["method_optimizers"] = {"late_fusion": {"optimizer": "adam", "lr": 0.002}}
    own = E.method_settings(params, "late_fusion")
    assert own["train"]["optimizer"] == "adam" and own["train"]["lr"] == 0.002
    assert {k: v for k, v in own["train"].items() if k not in ("optimizer", "lr")} == {
        k: v for k, v in E.method_settings(params, "mla")["train"].items() if k not in ("optimizer", "lr")
    }
    assert E.method_settings(params, "mla")["train"] == E.effective_train(params, "mla")
    assert E.method_settings(params, "mla")["train"]["optimizer"] == params["train"]["optimizer"]
    params["train"].update(epochs=1, hidden_dim=8, device="cpu")
    split = {"train": np.arange(0, 60), "val": np.arange(60, 70), "test": np.arange(70, 90)}
    (record,) = train_runs(
        "late_fusion",
        _corpus(),
        [RunSpec(0, np.ones((90, 3), dtype=bool), split)],
        E.method_settings(params, "late_fusion"),
    )
    assert record["optimizer"]["optimizer"] == "adam" and record["optimizer"]["lr"] == 0.002


def test_the_report_names_each_methods_optimiser():
    params = copy.deepcopy(CONFIG)
    params["train"].update(
        optimizer="sgd",
        lr=0.01,
        method_optimizers={
            "ae": {"optimizer": "adam", "lr": 0.001},
            "cra": {"optimizer": "adam", "lr": 0.001},
        },
    )
    assert suite.optimisers(params) == (
        "Optimiser: sgd at lr 0.01, except (their reference's recipe, "
        "`train.method_optimizers`) adam at lr 0.001 for `ae`, `cra`."
    )
    params["train"]["method_optimizers"] = {}
    assert suite.optimisers(params) == "Optimiser: sgd at lr 0.01 for every method."
