"""Any corpus, any modalities, any classes (issue 14): the corpus registry, the `features` kind's label table and
its checks, folds from a split column or drawn stratified, CREMA-D's split file, and the config checks that tie
options naming a modality to the corpus."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from tiny_workflow import FEATURE_CLASSES, FEATURE_MODALITIES, write_feature_corpus

from mlaflow import experiments as E
from mlaflow import params as P
from mlaflow.data import corpora, cremad, table
from mlaflow.data.folds import make_folds
from mlaflow.errors import InputError, ParamsError

SHIPPED = yaml.safe_load((P.REPO_ROOT / "params.yaml").read_text())


def _features_config(root: Path) -> dict:
    config = yaml.safe_load((P.REPO_ROOT / ".test" / "features.yaml").read_text())
    config["corpus"]["table"] = str(root / "own" / "labels.csv")
    for m in FEATURE_MODALITIES:
        config["features"][m]["precomputed"] = str(root / "own" / f"{m}.h5")
    return config


# ------------------------------------------------------------------------------------------ the registry


def test_every_kind_names_its_modalities_classes_and_paper_dataset(tmp_path):
    assert corpora.modalities(SHIPPED) == ["audio", "visual", "text"]
    assert corpora.classes(SHIPPED) == ["neu", "hap", "sad", "ang"]
    cremad_config = {"corpus": {**SHIPPED["corpus"], "kind": "embedded_cremad", "label_setup": "6class"}}
    assert corpora.modalities(cremad_config) == ["audio", "visual"]
    assert corpora.classes(cremad_config) == ["neu", "hap", "sad", "fea", "dis", "ang"]
    assert corpora.corpus_kind(cremad_config).paper_dataset == "CREMA-D"
    with pytest.raises(
        ParamsError, match=r"corpus\.label_setup.*'4class' is not a label setup of corpus kind 'cremad'"
    ):
        corpora.classes({"corpus": {**SHIPPED["corpus"], "kind": "cremad", "label_setup": "4class"}})
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
    config = copy.deepcopy(SHIPPED)
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
    folds = make_folds(manifest, [1], 0.2, seed=0)
    assert (folds["fold1"][:10] == "test").all() and (folds["fold1"][10:] == "val").sum() == 6
    with pytest.raises(ParamsError, match=r"splits\.folds.*one split.*splits\.folds: \[1\]"):
        make_folds(manifest, [1, 2], 0.2, seed=0)


def test_without_folds_stratified_folds_are_drawn():
    n = 100
    labels = np.arange(n) % 4
    manifest = pd.DataFrame(
        {"utterance_id": [f"u{i}" for i in range(n)], "label_index": labels, "session": 0}
    )
    folds = make_folds(manifest, [1, 2, 3, 4, 5], 0.1, seed=3)
    tested = np.stack([(folds[f"fold{k}"] == "test").to_numpy() for k in range(1, 6)])
    assert (tested.sum(0) == 1).all()  # every row tested exactly once
    for k in range(5):
        assert np.bincount(labels[tested[k]], minlength=4).tolist() == [5, 5, 5, 5]  # stratified
    assert make_folds(manifest, [1, 2, 3, 4, 5], 0.1, seed=3).equals(folds)


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
