"""Registries are not bypassed: what the workflow knows of a corpus kind or a method comes from its registry entry
(mlaflow/data/corpora.py) or its class (read through mlaflow.methods.method_class), never from its name, so that
adding one is its module plus its registry line."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from mlaflow.data import corpora
from mlaflow.errors import ParamsError
from mlaflow.methods import METHODS, method_class, options_section
from mlaflow.methods.joint import JointFusion
from mlaflow.pipeline import experiments as E
from mlaflow.pipeline import params as P
from mlaflow.report import complete, suite

SHIPPED = yaml.safe_load((P.REPO_ROOT / "params.yaml").read_text())
SRC = P.REPO_ROOT / "src" / "mlaflow"


def _config(**corpus) -> dict:
    config = copy.deepcopy(SHIPPED)
    config["corpus"].update(corpus)
    if corpora.CORPORA[config["corpus"]["kind"]].modalities == corpora.CREMAD_MODALITIES:
        config["corpus"]["label_setup"] = "6class"
        config["complete_modality_methods"] = ["concat", "qmf"]  # film and bigated default to text here
        config["isolation"]["modalities"] = ["visual"]
    return config


# ------------------------------------------------------------------------------------------------ corpora


def test_a_corpus_kinds_manifest_job_reads_what_its_entry_says(tmp_path):
    split = tmp_path / "split.csv"
    cremad = P.validate(_config(kind="cremad", split_file=str(split)), check_files=False)
    assert corpora.manifest_inputs(cremad) == [str(split)]
    assert corpora.manifest_config(cremad)["split_file"] == str(split)
    assert corpora.manifest_source(cremad) == cremad["corpus"]["root"] and corpora.label_table(cremad) is None
    # the generated CREMA-D corpus has no official split: the setting is fixed, never read
    embedded = P.validate(_config(kind="embedded_cremad", split_file=str(split)), check_files=False)
    assert corpora.manifest_inputs(embedded) == [] and corpora.manifest_config(embedded)["split_file"] is None
    unsplit = P.validate(_config(kind="cremad", split_file=None), check_files=False)
    assert corpora.manifest_inputs(unsplit) == []
    iemocap = P.validate(_config(kind="iemocap"), check_files=False)
    assert list(corpora.manifest_config(iemocap)) == [
        "kind",
        "adapter",
        "classes",
        "label_setup",
        "face_frames",
        "faces_root",
    ]
    # the faces cut from the dialog videos (the default) are the manifest's input; pre-cut ones are in the tree
    assert corpora.manifest_inputs(iemocap) == [corpora.FACES_DIR]
    precut = P.validate(_config(kind="iemocap", face_frames="precut"), check_files=False)
    assert corpora.manifest_inputs(precut) == [] and "faces_root" not in corpora.manifest_config(precut)
    assert not corpora.cuts_faces(cremad) and not corpora.cuts_faces(precut) and corpora.cuts_faces(iemocap)


def test_every_path_the_manifest_job_reads_must_exist(tmp_path):
    root = tmp_path / "CREMA-D"
    root.mkdir()
    config = _config(kind="cremad", root=str(root), split_file=str(tmp_path / "split.csv"))
    with pytest.raises(ParamsError, match=r"`corpus\.split_file`.*split\.csv does not exist.*set it to null"):
        P.validate(config)
    (tmp_path / "split.csv").write_text("clip,split\n")
    P.validate(config)
    config["corpus"]["root"] = str(tmp_path / "nowhere")
    with pytest.raises(ParamsError, match=r"`corpus\.root`.*nowhere is not a directory.*CREMA-D release"):
        P.validate(config)


def test_a_new_kinds_extra_input_reaches_the_manifest_config_and_the_checks(monkeypatch, tmp_path):
    """A kind is one entry: its extra input file is in its manifest config and the manifest rule's inputs, and
    checked before any job starts, with no code elsewhere naming the kind (the schema's enum aside)."""
    transcripts = corpora.CorpusPath("table", "the transcripts CSV", optional=True)
    kind = corpora.CorpusKind(
        "my_iemocap",
        corpora.IEMOCAP_MODALITIES,
        corpora.IEMOCAP_CLASSES,
        "mlaflow.data.iemocap:manifest_for",
        **{**corpora.IEMOCAP_DEFAULTS, "manifest_keys": ("label_setup", "table")},
        extra_inputs=(transcripts,),
    )
    monkeypatch.setitem(corpora.CORPORA, "my_iemocap", kind)
    root = tmp_path / "corpus"
    root.mkdir()
    config = P.validate(_config(kind="iemocap", root=str(root)), check_files=False)
    config["corpus"].update(kind="my_iemocap", table=str(tmp_path / "t.csv"))
    assert corpora.manifest_inputs(config) == [
        str(tmp_path / "t.csv"),
        corpora.FACES_DIR,
    ]  # an IEMOCAP layout
    assert corpora.manifest_config(config)["table"] == str(tmp_path / "t.csv")
    with pytest.raises(ParamsError, match=r"`corpus\.table`.*t\.csv does not exist.*the transcripts CSV"):
        P._check_paths(config)
    (tmp_path / "t.csv").write_text("")
    P._check_paths(config)


# ------------------------------------------------------------------------------------------------ methods


def test_every_registered_class_answers_to_its_name():
    for name in METHODS:
        assert method_class(name).name == name


def test_options_naming_a_modality_are_checked_through_the_class():
    for name in METHODS:
        cls = method_class(name)
        for key in cls.modality_options:
            options = {**SHIPPED["method_params"][name], key: "speech"}
            with pytest.raises(ParamsError, match=rf"`method_params\.{name}\.{key}`.*'speech'"):
                cls.check_options(options, ["audio", "visual", "text"])
            cls.check_options({**options, key: "visual"}, ["audio", "visual", "text"])
    assert method_class("film").modality_options == ("condition",)
    assert method_class("bigated").modality_options == ("gate",)


def test_a_modality_option_defaults_to_the_corpus_kinds_strongest_modality():
    iemocap = P.validate(copy.deepcopy(SHIPPED))
    cremad = P.validate(_config(kind="embedded_cremad"))
    for name in METHODS:
        cls = method_class(name)
        for key in cls.modality_options:
            assert (iemocap["method_params"][name][key], cremad["method_params"][name][key]) == (
                "text",
                "audio",
            )
        for key in cls.modality_weight_options:  # a variant's options are its base's (methods.VARIANTS)
            section = options_section(name)
            assert iemocap["method_params"][section][key] == {"audio": 0.35, "visual": 0.25, "text": 0.40}
            assert cremad["method_params"][section][key] == {"audio": 0.5, "visual": 0.5}


def test_a_variant_reads_its_bases_options_with_its_own_fixed_over_them():
    """mla_hgm_off has no section of its own: MLA's options (so the pair stays paired when one changes), with
    head gradient modification off; the tuning stage gives it its own study."""
    config = P.validate(copy.deepcopy(SHIPPED))
    config["method_params"]["mla"]["alpha"] = 0.37
    options = E.method_settings(config, "mla_hgm_off")["method_params"]["mla_hgm_off"]
    assert options == {**config["method_params"]["mla"], "head_gradient_modification": "off"}
    assert "mla_hgm_off" in E.tuned_methods(config) and "mla_hgm_off" not in config["method_params"]
    unknown = copy.deepcopy(SHIPPED)
    unknown["method_params"]["mla_hgm_off"] = {"alpha": 0.2}
    with pytest.raises(ParamsError, match="mla_hgm_off"):
        P.validate(unknown)


def test_mlas_fixed_weights_are_checked_where_a_variant_fuses_with_them():
    mla = method_class("mla")
    options = {**SHIPPED["method_params"]["mla"], "fusion": "dynamic", "fixed_weights": {"audio": 1.0}}
    mla.check_options(options, ["audio", "visual"])  # fixed fusion nowhere: the weights are never read
    with pytest.raises(ParamsError, match=r"`method_params\.mla\.fixed_weights`.*\['visual'\]"):
        mla.check_options(options, ["audio", "visual"], [{"fusion": "fixed"}])


def test_a_methods_privilege_is_its_class_s():
    flagged = {
        name: method_class(name).privilege(SHIPPED["method_params"].get(name, {}))
        for name in METHODS
        if method_class(name).privilege(SHIPPED["method_params"].get(name, {}))
    }
    assert set(flagged) == {
        "mmin",
        "if_mmin",
        "tate",
        "gcnet",
    }  # the shipped options of the privileged references
    assert method_class("mmin").privilege({"teacher_data": "observed"}) is None
    assert method_class("tate").privilege({"privileged": False}) is None
    assert suite.privilege("tate", SHIPPED["method_params"]) == flagged["tate"]


def test_the_report_reads_joint_training_and_unimodal_rules_from_the_classes():
    # the fusion methods trained through one layer, but MMPareto: its unimodal heads are its remedy for laziness
    assert complete.joint_methods(METHODS) == tuple(
        name for name in METHODS if issubclass(method_class(name), JointFusion) and name != "mmpareto"
    )
    assert complete.joint_methods(["qmf", "concat", "mla", "sum"]) == ("sum", "concat")  # of those that ran
    assert (
        complete.unimodal_rules(["mla", "qmf"])
        == "MLA the shared head on one encoder, QMF each modality's classifier"
    )
    assert complete.unimodal_rules(METHODS) == (
        "fusion methods with the other modalities deactivated, `sum` one modality through its layer, `concat` "
        "the head split into per-modality sub-heads, MLA the shared head on one encoder, late fusion and QMF "
        "each modality's classifier, MMPareto each modality's own unimodal head, ReconBoost each modality's "
        "learner (its encoder and head), GCNet with the other modalities masked"
    )


def test_no_module_outside_methods_checks_a_methods_options_by_name():
    for path in [SRC / "pipeline" / "params.py", *Path(SRC / "report").glob("*.py")]:
        text = path.read_text()
        for option in ("condition", "gate", "fixed_weights", "teacher_data", "privileged"):
            assert f'"{option}"' not in text and f"'{option}'" not in text, (path, option)
