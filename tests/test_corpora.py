"""Any corpus, any modalities, any classes (issue 14): the corpus registry, the `features` kind's label table and
its checks, folds from a split column or drawn stratified, CREMA-D's split file, and the config checks that tie
options naming a modality to the corpus."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from job_files import unit_config
from tiny_workflow import FEATURE_CLASSES, FEATURE_MODALITIES, write_feature_corpus

from mlaflow.data import corpora, cremad, table
from mlaflow.data.folds import make_folds, write_folds
from mlaflow.data.manifest import write_manifest
from mlaflow.errors import InputError, ParamsError
from mlaflow.pipeline import experiments as E
from mlaflow.pipeline import jobconfigs
from mlaflow.pipeline import params as P

CONFIG = unit_config()  # validated: the defaults that follow the corpus filled (tests/job_files.py)


def _features_config(root: Path) -> dict:
    config = yaml.safe_load((P.REPO_ROOT / ".test" / "features.yaml").read_text())
    config["corpus"]["table"] = str(root / "own" / "labels.csv")
    for m in FEATURE_MODALITIES:
        config["features"][m]["precomputed"] = str(root / "own" / f"{m}.h5")
    return config


# ------------------------------------------------------------------------------------------ the registry


def test_every_kind_names_its_modalities_classes_and_paper_dataset(tmp_path):
    assert corpora.modalities(CONFIG) == ["audio", "visual", "text"]
    assert corpora.classes(CONFIG) == ["neu", "hap", "sad", "ang"]
    cremad_config = {"corpus": {**CONFIG["corpus"], "kind": "embedded_cremad", "label_setup": "6class"}}
    assert corpora.modalities(cremad_config) == ["audio", "visual"]
    assert corpora.classes(cremad_config) == ["neu", "hap", "sad", "fea", "dis", "ang"]
    assert corpora.corpus_kind(cremad_config).paper_dataset == "CREMA-D"
    with pytest.raises(
        ParamsError, match=r"corpus\.label_setup.*'4class' is not a label setup of corpus kind 'cremad'"
    ):
        corpora.classes({"corpus": {**CONFIG["corpus"], "kind": "cremad", "label_setup": "4class"}})
    write_feature_corpus(tmp_path)
    own = P.validate(_features_config(tmp_path))
    assert corpora.modalities(own) == list(FEATURE_MODALITIES) and corpora.classes(own) == FEATURE_CLASSES
    assert corpora.corpus_kind(own).paper_dataset is None and not corpora.corpus_kind(own).extracted
    job = E.train_job_config(own, E.by_name(E.experiment_table(own))["main"], "mla")
    assert job["modalities"] == list(FEATURE_MODALITIES) and job["feature_dims"] == FEATURE_MODALITIES
    assert len(job["classes"]) == 10


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c["corpus"].update(modalities=None), "corpus.modalities"),
        (lambda c: c["corpus"].update(classes=None), "corpus.classes"),
        (lambda c: c["corpus"].update(table=None), "corpus.table"),
        (lambda c: c["corpus"].update(table="no/such.csv"), "corpus.table"),
        (lambda c: c["features"].pop("face"), "features.face"),
        (lambda c: c["features"].update(spech={"precomputed": "x.h5", "dim": 3}), "features.spech"),
        (lambda c: c["features"]["words"].update(precomputed="no/such.h5"), "features.words.precomputed"),
        (
            lambda c: (
                c["method_params"]["film"].update(condition="text")
                or c.update(complete_modality_methods=["film", "qmf"])
            ),
            "method_params.film.condition",
        ),
        (lambda c: c["isolation"].update(modalities=["audio"]), "isolation.modalities"),
        (
            lambda c: c["method_params"]["mla"].update(fusion="fixed", fixed_weights={"speech": 1.0}),
            "method_params.mla.fixed_weights",
        ),
    ],
)
def test_a_features_config_the_workflow_cannot_run_names_the_key(tmp_path, mutate, key):
    write_feature_corpus(tmp_path)
    config = _features_config(tmp_path)
    mutate(config)
    with pytest.raises(ParamsError) as err:
        P.validate(config)
    assert f"`{key}`" in str(err.value)


def test_options_naming_a_modality_of_another_corpus_are_checked_only_where_used():
    config = copy.deepcopy(CONFIG)
    config["corpus"].update(kind="embedded_cremad", label_setup="6class")
    with pytest.raises(ParamsError, match=r"method_params\.film\.condition.*'text' is not a modality"):
        P.validate(config)
    config["complete_modality_methods"] = ["concat", "qmf"]  # neither film nor bigated runs
    config["isolation"]["modalities"] = ["visual"]
    validated = P.validate(config)
    # fixed weights for IEMOCAP's modalities: the fixed rule is simply not measured on this corpus
    assert set(validated["method_params"]["mla"]["fixed_weights"]) == {"audio", "visual", "text"}


# ------------------------------------------------------------------------------------------ the label table


def _table(tmp_path, rows, columns=("id", "label", "split")) -> Path:
    path = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


def test_the_label_table_becomes_the_manifest(tmp_path):
    path = _table(
        tmp_path,
        [
            ("b", "y", "train"),
            ("a", "x", "test"),
            ("c", "x", "validation"),
            ("d", "y", "test"),
            ("e", "x", "train"),
        ],
    )
    manifest, counts = table.build_manifest(path, ["x", "y"])
    assert manifest["utterance_id"].tolist() == ["a", "b", "c", "d", "e"]
    assert manifest["label_index"].tolist() == [0, 1, 0, 1, 0] and set(manifest["session"]) == {1}
    assert manifest["split"].tolist() == ["test", "train", "val", "test", "train"]
    assert counts["kept_per_class"] == {"x": 3, "y": 2}


@pytest.mark.parametrize(
    "rows, columns, message",
    [
        (
            [("a", "x", "train"), ("a", "y", "test")],
            ("id", "label", "split"),
            r"labels\.csv.*id\(s\) appear more than once: \['a'\]",
        ),
        (
            [("a", "x", "train"), ("b", "z", "test")],
            ("id", "label", "split"),
            r"labels\.csv.*label\(s\) \['z'\] are not in corpus\.classes",
        ),
        (
            [("a", "x", "train"), ("b", "y", "dev")],
            ("id", "label", "split"),
            r"labels\.csv.*split value\(s\) \['dev'\]",
        ),
        (
            [("a", "x", "train"), ("b", "y", "test")],
            ("id", "label", "split"),
            r"labels\.csv.*class\(es\) \['y'\] have no train row",
        ),
        (
            [("a", "x", "1"), ("b", "y", "zero")],
            ("id", "label", "fold"),
            r"labels\.csv.*fold value\(s\) \['zero'\]",
        ),
        ([("a", "x")], ("utterance", "label"), r"labels\.csv.*has no column\(s\) \['id'\]"),
    ],
)
def test_a_bad_label_table_names_the_file_and_the_value(tmp_path, rows, columns, message):
    with pytest.raises(InputError, match=message):
        table.build_manifest(_table(tmp_path, rows, columns), ["x", "y"])


def test_a_label_table_not_in_utf8_names_the_line_and_says_to_encode_it_as_utf8(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes("id,label\na,x\nb,y\ncaf\u00e9,x\nd,y\n".encode("latin-1"))
    with pytest.raises(InputError) as err:
        table.build_manifest(path, ["x", "y"])
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "line 4" in message and "UTF-8" in message
    assert "encode it as UTF-8" in message and "header row" not in message


# ------------------------------------------------------------------------------------------ folds


def test_a_split_column_is_one_fold_and_validation_is_drawn_when_it_has_none():
    n = 40
    manifest = pd.DataFrame(
        {
            "utterance_id": [f"u{i}" for i in range(n)],
            "label_index": np.arange(n) % 2,
            "session": 1,
            "split": ["test"] * 10 + ["train"] * 30,
        }
    )
    folds = make_folds(manifest, [1], 0.2, seed=0, classes=["x", "y"])
    assert (folds["fold1"][:10] == "test").all() and (folds["fold1"][10:] == "val").sum() == 6
    with pytest.raises(ParamsError, match=r"splits\.folds.*one split.*splits\.folds: \[1\]"):
        make_folds(manifest, [1, 2], 0.2, seed=0, classes=["x", "y"])


def test_without_folds_stratified_folds_are_drawn():
    n = 100
    labels = np.arange(n) % 4
    manifest = pd.DataFrame(
        {"utterance_id": [f"u{i}" for i in range(n)], "label_index": labels, "session": 0}
    )
    folds = make_folds(manifest, [1, 2, 3, 4, 5], 0.1, seed=3, classes=list("abcd"))
    tested = np.stack([(folds[f"fold{k}"] == "test").to_numpy() for k in range(1, 6)])
    assert (tested.sum(0) == 1).all()  # every row tested exactly once
    for k in range(5):
        assert np.bincount(labels[tested[k]], minlength=4).tolist() == [5, 5, 5, 5]  # stratified
    assert make_folds(manifest, [1, 2, 3, 4, 5], 0.1, seed=3, classes=list("abcd")).equals(folds)


def _folds_job(tmp_path, rows, columns=("id", "label", "fold"), folds=(1, 2), classes=("x", "y")):
    """The manifest and folds jobs of a features-kind config whose label table holds `rows`, each run from
    its job config as the workflow runs them; returns (the table's path, the folds table)."""
    write_feature_corpus(tmp_path)
    config = _features_config(tmp_path)
    source = _table(tmp_path, rows, columns)
    config["corpus"].update(table=str(source), classes=list(classes))
    config["splits"]["folds"] = list(folds)
    jobs = jobconfigs.job_configs(P.validate(config))
    write_manifest(jobs["data/manifest/manifest.config.json"], source, tmp_path / "manifest.csv")
    return source, write_folds(
        jobs["data/splits/folds.config.json"], tmp_path / "manifest.csv", tmp_path / "folds.csv"
    )


X_IN_BOTH_FOLDS = [(f"x{i}", "x", str(i % 2 + 1)) for i in range(8)]


def test_a_fold_column_gives_every_class_training_rows_in_every_fold(tmp_path):
    rows = X_IN_BOTH_FOLDS + [(f"y{i}", "y", str(i % 2 + 1)) for i in range(6)]
    _, folds = _folds_job(tmp_path, rows)
    labels = pd.read_csv(tmp_path / "manifest.csv")["label"]
    for fold in (1, 2):
        assert set(labels[folds[f"fold{fold}"] == "train"]) == {"x", "y"}


def test_a_fold_column_that_leaves_a_class_without_training_rows_names_the_table_fold_and_class(tmp_path):
    # every row of y is in fold 1: fold 1 would train on no y (it ran silently, rc 0)
    rows = X_IN_BOTH_FOLDS + [(f"y{i}", "y", "1") for i in range(4)]
    with pytest.raises(InputError) as err:
        _folds_job(tmp_path, rows)
    message = str(err.value)
    assert message.startswith(str(tmp_path / "labels.csv")), message
    assert "fold 1" in message and "['y']" in message and "fold 2" not in message
    assert "Fix: move" in message and "splits.folds" in message and "corpus.classes" in message


def test_a_class_without_any_row_names_the_table_and_the_class(tmp_path):
    rows = X_IN_BOTH_FOLDS + [(f"y{i}", "y", str(i % 2 + 1)) for i in range(6)]
    with pytest.raises(InputError, match=r"labels\.csv: class\(es\) \['z'\] .*no row at all.*no fold trains"):
        _folds_job(tmp_path, rows, classes=("x", "y", "z"))


def test_drawn_folds_that_leave_a_class_without_training_rows_name_the_table_fold_and_class(tmp_path):
    # neither split nor fold: folds are drawn, and y's only row is tested in one of them, trained in none
    rows = [(f"x{i}", "x") for i in range(10)] + [("y0", "y")]
    with pytest.raises(InputError) as err:
        _folds_job(tmp_path, rows, columns=("id", "label"))
    message = str(err.value)
    assert message.startswith(str(tmp_path / "labels.csv")) and "['y']" in message and "drawn" in message
    assert re.search(r"fold [12]\b", message) and "splits.folds" in message and "corpus.classes" in message


def test_a_split_column_without_a_training_row_of_a_class_still_fails_at_the_manifest(tmp_path):
    rows = [("a", "x", "train"), ("b", "y", "test"), ("c", "x", "test")]
    with pytest.raises(InputError, match=r"labels\.csv.*class\(es\) \['y'\] have no train row"):
        _folds_job(tmp_path, rows, columns=("id", "label", "split"), folds=(1,))


# ------------------------------------------------------------------------------------------ CREMA-D's split file


def test_cremad_split_file_replaces_the_speaker_groups(tmp_path):
    manifest = pd.DataFrame({"utterance_id": ["1001_DFA_ANG_XX", "1002_DFA_HAP_XX"], "session": [1, 2]})
    split = tmp_path / "split.csv"
    pd.DataFrame({"clip": ["1001_DFA_ANG_XX", "1002_DFA_HAP_XX"], "split": ["train", "test"]}).to_csv(
        split, index=False
    )
    out = cremad.apply_split_file(manifest, split)
    assert out["split"].tolist() == ["train", "test"] and set(out["session"]) == {1}
    pd.DataFrame({"clip": ["1001_DFA_ANG_XX"], "split": ["train"]}).to_csv(split, index=False)
    with pytest.raises(InputError, match=r"split\.csv.*1 clip\(s\) of the corpus are not listed"):
        cremad.apply_split_file(manifest, split)
