"""The Table 1 analogue in the main job (params table1, mlaflow.pipeline.table1, mlaflow.report.table1): the configs
derived for each audio-video corpus, their checks at parse time, the report section, the stage in the DAG."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlaflow.errors import ParamsError
from mlaflow.pipeline import experiments as E
from mlaflow.pipeline import params as P
from mlaflow.pipeline import table1
from mlaflow.pipeline.jobconfigs import job_configs
from mlaflow.report import table1 as table1_report

ROOT = Path(__file__).resolve().parents[1]


def _shipped() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_each_corpus_gets_a_valid_end_to_end_config_of_table1s_setting():
    config = P.validate(_shipped(), check_files=False)
    derived = table1.sub_configs(config)
    assert sorted(derived) == [
        "data/table1/clip_embedded_food101.config.json",
        "data/table1/embedded_cremad.config.json",
        "data/table1/embedded_food101.config.json",
        "data/table1/embedded_ks.config.json",
        "data/table1/embedded_mvsa.config.json",
    ]
    audio_video = ("data/table1/embedded_cremad.config.json", "data/table1/embedded_ks.config.json")
    for path, sub in derived.items():
        assert job_configs(config)[path] == sub  # a job config like the others: its changes rerun the corpus
    for sub in (derived[p] for p in audio_video):
        sub = P.validate(copy.deepcopy(sub), check_files=False)
        assert sub["train"]["encoder"] == "resnet18" and sub["train"]["standardize"] is False
        assert (
            sub["train"]["seeds"] == config["table1"]["seeds"]
            and sub["train"]["epochs"] == config["table1"]["train"]["epochs"]
        )
        assert sub["features"]["audio"]["encoder"] == "fbank_spectrogram"
        assert sub["features"]["visual"]["encoder"] == "frames"
        assert sub["table1"]["enabled"] is False and not sub["isolation"]["enabled"]
        # fidelity as the main config has it, at missing rate 0: a variant that changes only what is masked or how
        # masked inputs are fed is the paper's run itself there (reused, not trained)
        assert sub["fidelity"]["enabled"] and sub["fidelity"]["missing_rates"] == [0.0]
        fidelity = {e.name: e for e in E.experiment_table(sub) if e.kind == "fidelity"}
        assert set(fidelity) == {*config["fidelity"]["variants"], "masks_cpm"}
        assert not fidelity["zero_filled_inputs"].cells and list(fidelity["zero_filled_inputs"].reused)
        assert [tuple(c) for c in fidelity["hgm_off"].cells] == [("mla", 0.0)]
        assert [tuple(c) for c in fidelity["released_code"].cells] == [("mla", 0.0)]
        cells = {cell for experiment in E.experiment_table(sub) for cell in experiment.cells}
        methods = ["mla", "late_fusion", *config["complete_modality_methods"]]
        assert cells == {(m, 0.0) for m in methods}
        assert (
            sub["method_params"]["film"]["condition"] == "audio"
        )  # the kind's default, not the main corpus's
        assert sub["splits"]["folds"] == [1]
    ks = P.validate(copy.deepcopy(derived["data/table1/embedded_ks.config.json"]), check_files=False)
    assert ks["corpus"]["embedded_ks"]["train_clips_per_class"] == 16  # table1.corpus over corpus.embedded_ks


def test_image_text_corpora_train_on_frozen_vit_and_bert_features_and_table4_on_clip():
    config = P.validate(_shipped(), check_files=False)
    derived = table1.sub_configs(config)
    for kind in ("embedded_food101", "embedded_mvsa"):
        sub = P.validate(copy.deepcopy(derived[f"data/table1/{kind}.config.json"]), check_files=False)
        assert (
            sub["corpus"]["kind"] == kind and sub["train"]["encoder"] == "mlp" and sub["train"]["standardize"]
        )
        assert sub["features"]["image"]["encoder"] == "vit" and sub["features"]["text"]["encoder"] == "bert"
        # the main job's text encoder with table1.image_text.text over it
        assert sub["features"]["text"]["dim"] == config["table1"]["image_text"]["text"]["dim"]
        assert sub["features"]["text"]["pooling"] == config["features"]["text"]["pooling"]
        assert not sub["fidelity"]["enabled"] and sub["splits"]["folds"] == [1]
        assert sub["complete_modality_methods"] == config["complete_modality_methods"]
        assert sub["method_params"]["film"]["condition"] == "text"  # the kind's strongest, not the main's
    clip = P.validate(
        copy.deepcopy(derived["data/table1/clip_embedded_food101.config.json"]), check_files=False
    )
    assert clip["corpus"]["kind"] == "embedded_food101"
    assert (clip["features"]["image"]["encoder"], clip["features"]["text"]["encoder"]) == (
        "clip_image",
        "clip_text",
    )
    settings = config["table1"]["table4"]["clip"]
    assert clip["features"]["image"]["dim"] == clip["features"]["text"]["dim"] == settings["dim"]
    assert clip["features"]["image"]["embedded"]["width"] == clip["features"]["text"]["embedded"]["width"]
    cells = {cell for e in E.experiment_table(clip) for cell in e.cells}
    assert cells == {(m, 0.0) for m in ("mla", "late_fusion", *config["table1"]["table4"]["methods"])}
    # the entries' encoders, adapters and generators are the stage's code inputs
    modules = table1.code_entries(config)
    assert {"mlaflow.features.clip", "mlaflow.features.image_vit", "mlaflow.data.mvsa"} <= set(modules)
    assert {"mlaflow.data.synthetic_food101", "mlaflow.data.synthetic_mvsa"} <= set(modules)


def test_real_trees_are_read_from_the_corpus_folder_and_runtime_stays_out(tmp_path):
    tree = (
        tmp_path / "CREMA-D"
    )  # an absolute root is kept; a relative one is rewritten from the corpus's folder
    config = _shipped()
    config["table1"].update(corpora=["cremad", "embedded_ks"], roots={"cremad": str(tree), "kinetics": None})
    config = P.validate(config, check_files=False)
    derived = table1.sub_configs(config)
    cremad = derived["data/table1/cremad.config.json"]
    assert (
        cremad["corpus"]["root"] == str(tree) and "label_setup" not in cremad["corpus"]
    )  # the kind's own: 6class
    assert P.validate(copy.deepcopy(cremad), check_files=False)["corpus"]["label_setup"] == "6class"
    config["table1"]["roots"]["cremad"] = "data/corpus/CREMA-D"
    relative = table1.sub_config(config, "cremad")["corpus"]["root"]
    assert Path("data/table1/cremad", relative).resolve() == Path("data/corpus/CREMA-D").resolve()
    assert all("runtime" not in sub for sub in derived.values())  # the main runtime is passed apart


def test_disabled_it_derives_nothing():
    config = _shipped()
    config["table1"]["enabled"] = False
    config = P.validate(config, check_files=False)
    assert table1.sub_configs(config) == {} and not any(
        p.startswith("data/table1") for p in job_configs(config)
    )


@pytest.mark.parametrize(
    "patch, match",
    [
        ({"train": {"epohcs": 3}}, r"derived for embedded_cremad .*`train.epohcs`: unknown key"),
        (
            {"corpus": {"embedded_ks": {"classes": 99}}},
            r"derived for embedded_ks .*corpus.embedded_ks.classes",
        ),
        ({"corpora": ["kinetics"]}, r"table1.roots.kinetics"),
        ({"corpora": ["mvsa"]}, r"table1.roots.mvsa"),
        ({"table4": {"corpus": "food101"}}, r"table1.roots.food101"),
        ({"table4": {"clip": {"max_length": 100}}}, r"table1.table4.clip.max_length"),
        # more frames per clip than the look-alike draws: every clip would fail at extraction
        (
            {"corpus": {"embedded_cremad": {"frames_per_clip": 2}}},
            r"table1.features.frames.*draws 2 frames per clip",
        ),
    ],
)
def test_a_bad_override_is_named_before_any_job(patch, match):
    config = _shipped()
    config["table1"].update(patch)
    with pytest.raises(ParamsError, match=match):
        P.validate(config, check_files=False)


SUB_REPORT = """# mlaflow report

> **Read this first.** These numbers come from the *embedded synthetic corpus* (generated, CREMA-D layout).

Encoders: **ResNet-18 trained end to end** (first-stage width 4).

## Complete modalities: every method (Table 1 analogue)

| method | audio acc | visual acc | multimodal acc |
|---|---|---|---|
| mla | 40.00 ± 1.00 | 30.00 ± 2.00 | 45.00 ± 1.00 |

### Modality gap (Figure 3 analogue)

![gap](figures/modality_gap.png)

MLA ablations (Table 3 analogue): need MLA at missing rate 0 in the main grid.

## Missing-modality suite (Table 2 analogue)

not this

## Fidelity: the paper's MLA against its released code

| difference | missing rate 0.0 |
|---|---|
| hgm_off | 41.00 (+1.00 ± 0.50) |

### Optimism of test-set model selection

## Masks

nor this
"""


def test_the_report_gathers_each_corpus_table1_section(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = P.validate(_shipped(), check_files=False)
    ctx = type("Ctx", (), {"config": config})()
    folder = Path(table1.folder("embedded_cremad")) / "reports"
    folder.mkdir(parents=True)
    (folder / "report.md").write_text(SUB_REPORT)
    (folder / "duration.json").write_text('{"seconds": 123}\n')
    text = "\n".join(table1_report.section(ctx))
    assert "### embedded_cremad" in text and "| mla | 40.00 ± 1.00 | 30.00 ± 2.00 | 45.00 ± 1.00 |" in text
    assert "#### Modality gap" in text and "not this" not in text
    assert "#### embedded_cremad: Fidelity: the paper's MLA" in text and "| hgm_off | 41.00 (+1.00" in text
    assert "#### Optimism of test-set model selection" in text and "nor this" not in text
    assert "](../data/table1/embedded_cremad/reports/figures/modality_gap.png)" in text
    assert "Encoders: **ResNet-18 trained end to end**" in text and "last run took 123 s" in text
    assert "### embedded_ks" in text and "is missing: run `snakemake table1`" in text
    config["table1"]["enabled"] = False
    assert "Not run" in "\n".join(table1_report.section(ctx))


def test_the_stage_runs_each_corpus_workflow_in_its_folder(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    snakemake = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path)]
    proc = subprocess.run(
        [*snakemake, "-n", "-p", "table1"], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    for kind in ("embedded_cremad", "embedded_ks"):
        assert f"-d data/table1/{kind} --replace-workflow-config --configfile" in proc.stdout
        assert f"data/table1/{kind}.config.json" in proc.stdout


def _run_means(image: float, text: float, fused: float) -> dict:
    return {"r00": {"image_accuracy_mean": image, "image_accuracy_std": 0.01, "text_accuracy_mean": text,
                    "text_accuracy_std": 0.02, "accuracy_mean": fused, "accuracy_std": 0.005, "n_runs": 3}}  # fmt: skip


def test_the_report_sets_the_clip_entry_beside_the_papers_table4(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = P.validate(_shipped(), check_files=False)
    config["report"]["paper_results"] = str(ROOT / "data" / "reference" / "paper_results.yaml")
    ctx = type("Ctx", (), {"config": config})()
    assert "is missing: run `snakemake table1`" in "\n".join(table1_report.table4_section(ctx))
    folder = Path(table1.folder("clip_embedded_food101")) / "reports"
    folder.mkdir(parents=True)
    (folder / "report.md").write_text(SUB_REPORT)
    metrics = {
        "config_hash": "abc",
        "concat": _run_means(0.40, 0.80, 0.85),
        "mla": _run_means(0.50, 0.81, 0.86),
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    text = "\n".join(table1_report.table4_section(ctx))
    assert "| concat | 40.00 ± 1.00 | 80.00 ± 2.00 | 85.00 ± 0.50 | 63.07 / 83.98 / 93.07 |" in text
    assert "| mla | 50.00 ± 1.00 | 81.00 ± 2.00 | 86.00 ± 0.50 | 72.22 / 85.34 / 93.47 |" in text
    assert "image +10.00, text +1.00, fused +1.00 points" in text
    assert (
        "modality gap (Figure 3 analogue)" in text
        and "../data/table1/clip_embedded_food101/reports/figures" in text
    )
    assert "MLA ablations" not in text  # the gap's table and figure only
    config["table1"]["table4"]["enabled"] = False
    assert "Not run" in "\n".join(table1_report.table4_section(ctx))


def test_an_embedded_models_unknown_or_missing_key_is_named():
    # the schema lets an embedded CLIP's own keys into features.<m>.embedded: the rest is checked by encoder
    config = _shipped()
    config["features"]["text"]["embedded"]["widht"] = 64
    with pytest.raises(ParamsError, match=r"features.text.embedded.widht.*unknown key for encoder bert"):
        P.validate(config, check_files=False)
    config = _shipped()
    config["features"]["image"] = {**config["features"]["image"], "encoder": "clip_image"}
    with pytest.raises(ParamsError, match=r"features.image.embedded.width.*embedded CLIP needs it"):
        P.validate(config, check_files=False)
    config["features"]["image"]["embedded"].update(width=64, image_size=32)
    assert P.validate(config, check_files=False)["features"]["image"]["embedded"]["width"] == 64
