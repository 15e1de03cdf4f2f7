"""The report: one aggregation, sections registered in one list, computed statements, sections without data.

Every test builds its own tiny stage indexes and run JSONs in tmp_path (`write_workspace`), as the workflow
would write them, and reads them through the report's entry points or its loader.
"""

import copy
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from mlaflow.errors import InputError
from mlaflow.pipeline import experiments as X
from mlaflow.report import build, catalog, complete, suite
from mlaflow.report.aggregate import seed_stats
from mlaflow.report.context import load_context

MODALITIES = ["audio", "visual", "text"]
CONFIG = {
    "corpus": {"kind": "embedded", "root": "data/corpus/x", "label_setup": "4class"},
    "features": {m: {"precomputed": None} for m in MODALITIES},
    "splits": {"folds": [1, 2]},
    "masks": {"protocol": "bernoulli", "missing_rates": [0.0, 0.3, 0.6], "all_missing": "prior"},
    "methods": ["mla", "late_fusion"],
    "complete_modality_methods": ["concat", "qmf"],
    "missing_suite": {"methods": ["cca", "qmf"], "missing_rates": [0.3, 0.6]},
    "isolation": {
        "enabled": True,
        "methods": ["mla"],
        "modalities": ["text"],
        "training_missing_rates": [0.6],
    },
    "fidelity": {
        "enabled": True,
        "missing_rates": [0.0, 0.3],
        "variants": {
            "hgm_off": {"mla": {"head_gradient_modification": "off"}},
            "zero_filled_inputs": {"train": {"masked_input": "zero_fill"}},
        },
        "protocol_methods": ["mla"],
    },
    "train": {
        "seeds": [0, 1],
        "optimizer": "sgd",
        "lr": 0.01,
        "masked_input": "skip",
        "model_selection": "validation",
        "method_optimizers": {"cca": {"optimizer": "adam", "lr": 0.001}},
    },
    "method_params": {"mla": {}, "late_fusion": {}, "concat": {}, "qmf": {}, "cca": {}},
}
# the report job's files (mlaflow/report/catalog.py), report.md and report_page.html first
REPORT_OUTPUTS = tuple(output.name for output in catalog.outputs_of("build_report"))
BASE = {"mla": 0.8, "late_fusion": 0.78, "concat": 0.75, "qmf": 0.77, "cca": 0.6}
PAPER = """
table1_complete_modalities:
  methods: [concat, late_fusion, qmf, mla]
  IEMOCAP: {audio: [1, 2, 3, 4], image: [5, 6, 7, 8], text: [9, 10, 11, 12], multi: [13, 14, 15, 16]}
table2_missing_modalities_iemocap:
  missing_rates: [0.3, 0.6]
  mla: [70.0, 60.0]
  cca: [50.0, 40.0]
table3_ablation:
  configs: [[false, false], [false, true], [true, false], [true, true]]
  IEMOCAP: {audio: [1, 1, 2, 2], image: [3, 3, 4, 4], text: [5, 5, 6, 6], multi: [7, 8, 9, 10]}
"""


def _accuracy(experiment, method, rate, seed, fold):
    """A deterministic accuracy: falls with the missing rate; hgm_off is 2 points below MLA."""
    offset = {"hgm_off": -0.02, "masks_cpm": 0.01}.get(experiment.name, 0.0)
    return BASE[method] - rate / 2 + 0.01 * seed + 0.002 * fold + offset


def _record(experiment, method, rate, seed, fold, config_rates):
    acc = _accuracy(experiment, method, rate, seed, fold)
    masked = experiment.masks.modality
    per_modality = {m: (0.5 if m == masked else acc - 0.1 - 0.1 * i) for i, m in enumerate(MODALITIES)}
    return {
        "experiment": experiment.name,
        "experiment_kind": experiment.kind,
        "method": method,
        "missing_rate": rate,
        "seed": seed,
        "fold": fold,
        "config_hash": f"hash-{method}",
        "masks": experiment.masks.as_dict(),
        "metrics": {
            "accuracy": acc,
            "unweighted_accuracy": acc - 0.01,
            "macro_f1": acc - 0.02,
            "weighted_f1": acc - 0.015,
            "per_modality_accuracy": per_modality,
            "share_all_missing": rate / 10,
            "modality_gap": {"audio-text": 0.8, "audio-visual": 0.9 + 0.01 * seed},
            "embedding_projection": {
                m: [[0.1 * i, 0.2], [0.3, 0.1 * fold]] for i, m in enumerate(MODALITIES)
            },
        },
        "test_time_shift": (
            {f"{r:.2f}": acc - (r - rate) / 4 for r in config_rates} if experiment.test_time_shift else {}
        ),
        "validation": {"best_epoch": 3},
        "seconds_per_epoch": 0.1,
        "selection": {
            "fused": {"test_selected": acc + 0.01, "optimism": 0.01, "validation_selected": acc},
            "per_batch": {"validation_selected": acc - 0.03},
            "fixed": {"validation_selected": acc + 0.001},
            "average": {"validation_selected": acc - 0.005},
        },
    }


def write_workspace(root, config, stages=X.STAGES, skip=lambda experiment, method, rate: False):
    """Runs and stage indexes of `config` under `root`, as the workflow writes them; returns the index paths.
    `skip(experiment, method, rate)`: cells left untrained (their runs absent from the index)."""
    table = X.experiment_table(config)
    paths = []
    for stage in stages:
        exps = [e for e in table if e.stage == stage]
        runs = []
        for e in exps:
            for method, rate in e.cells:
                if skip(e, method, rate):
                    continue
                for seed in config["train"]["seeds"]:
                    for fold in config["splits"]["folds"]:
                        path = root / X.run_path(e, method, rate, seed, fold)
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_text(
                            json.dumps(_record(e, method, rate, seed, fold, config["masks"]["missing_rates"]))
                        )
                        runs.append(str(path))
        index = root / f"{stage}.index.json"
        index.write_text(
            json.dumps({"stage": stage, "experiments": [X.as_dict(e) for e in exps], "runs": runs})
        )
        paths.append(str(index))
    return paths


def _provenance_files(root):
    features, masks = [], []
    for m in MODALITIES:
        path = root / f"{m}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("features", data=np.zeros((4, 2)))
            f.attrs.update(modality=m, encoder="enc", model_source="embedded", pretrained=False, dim=2)
        features.append(str(path))
    for rate in (0.0, 0.3):
        path = root / f"mask_{rate}.h5"
        with h5py.File(path, "w") as f:
            f.attrs.update(protocol="bernoulli", missing_rate=rate, modalities=MODALITIES)
            ds = f.create_dataset("seed_0", data=np.ones((4, 3), dtype=bool))
            ds.attrs["missing_fraction"] = rate
            for k in range(4):
                ds.attrs[f"share_with_k_present.{k}"] = 1.0 if k == 3 else 0.0
        masks.append(str(path))
    return features, masks


@pytest.fixture
def paper_path(tmp_path):
    path = tmp_path / "paper.yaml"
    path.write_text(PAPER)
    return str(path)


def _report_config(config, paper_dataset="IEMOCAP"):
    return {
        "config": config,
        "modalities": MODALITIES,
        "classes": ["neu", "hap", "sad", "ang"],
        "paper_dataset": paper_dataset,
    }


def _build(tmp_path, paper_path, config=CONFIG, **kwargs):
    indexes = write_workspace(tmp_path, config, **kwargs)
    features, masks = _provenance_files(tmp_path)
    out = tmp_path / "reports"
    # as in the workflow: the summary first (report_page.html embeds its figure)
    summary = {"methods": config["methods"], "modalities": MODALITIES, "paper_dataset": "IEMOCAP"}
    build.build_summary(summary, indexes[:1], paper_path, out)
    build.build_report(_report_config(config), indexes, paper_path, features, masks, out)
    return (out / "report.md").read_text(), out


# ------------------------------------------------------------------------------------------- aggregation


def test_seed_stats_is_mean_over_folds_then_mean_and_sample_std_over_seeds():
    runs = pd.DataFrame(
        {
            "method": ["mla"] * 4,
            "missing_rate": [0.3] * 4,
            "seed": [0, 0, 1, 1],
            "fold": [1, 2, 1, 2],
            "accuracy": [0.5, 0.7, 0.8, 0.8],
            "f1": [0.1, 0.3, 0.2, 0.2],
        }
    )
    row = seed_stats(runs, ["method", "missing_rate"], ["accuracy", "f1"]).iloc[0]
    # seed 0: 0.6, seed 1: 0.8 -> mean 0.7, sample std |0.8 - 0.6| / sqrt(2) = 0.1414
    assert row["accuracy_mean"] == pytest.approx(0.7)
    assert row["accuracy_std"] == pytest.approx(0.2 / np.sqrt(2))
    assert row["f1_mean"] == pytest.approx(0.2) and row["f1_std"] == pytest.approx(0.0)
    assert row["n_seeds"] == 2 and row["n_runs"] == 4
    single = seed_stats(runs, ["method"], "accuracy").iloc[0]  # one column: plain mean / std
    assert single["mean"] == pytest.approx(0.7) and single["std"] == pytest.approx(0.1414213, rel=1e-5)
    one_seed = seed_stats(runs[runs["seed"] == 0], ["method"], "accuracy").iloc[0]
    assert one_seed["mean"] == pytest.approx(0.6) and one_seed["std"] == 0.0


def test_seed_stats_keeps_the_order_of_the_groups():
    runs = pd.DataFrame(
        {"method": ["b", "b", "a", "a"], "seed": [0, 1, 0, 1], "accuracy": [0.1, 0.3, 0.5, 0.5]}
    )
    table = seed_stats(runs, ["method"], "accuracy")
    assert list(table["method"]) == ["b", "a"] and table["mean"].tolist() == pytest.approx([0.2, 0.5])


# ------------------------------------------------------------------------------------------- computed statements


def _complete_runs(weak_mla=0.5, weak_concat=0.3):
    """Runs at missing rate 0 of mla, concat and late_fusion, 2 seeds x 2 folds; visual is the weak modality."""
    rows = []
    for method, weak in (("mla", weak_mla), ("concat", weak_concat), ("late_fusion", 0.45)):
        for seed in (0, 1):
            for fold in (1, 2):
                jitter = 0.01 * (seed - 0.5)
                rows.append(
                    {
                        "experiment": "main",
                        "kind": "main",
                        "method": method,
                        "missing_rate": 0.0,
                        "seed": seed,
                        "fold": fold,
                        "accuracy": 0.8 + jitter,
                        "audio_accuracy": 0.6 + jitter,
                        "visual_accuracy": weak + jitter,
                        "text_accuracy": 0.7 + jitter,
                        "fusion_average_accuracy": 0.75 + jitter,
                    }
                )
    return pd.DataFrame(rows)


def test_table1_and_the_laziness_statement_are_computed_from_the_runs():
    table = complete.table1(_complete_runs(), MODALITIES)
    assert list(table.index) == ["concat", "late_fusion", "mla"]  # the paper's column order
    assert table.loc["mla", "visual_accuracy_mean"] == pytest.approx(0.5)
    assert complete.weak_modality(table, MODALITIES) == "visual"  # lowest when trained alone
    assert "claim on this corpus: holds" in complete.laziness_statement(table, MODALITIES)
    assert "(concat)" in complete.laziness_statement(table, MODALITIES)
    reversed_table = complete.table1(_complete_runs(weak_mla=0.3, weak_concat=0.5), MODALITIES)
    assert "does not hold" in complete.laziness_statement(reversed_table, MODALITIES)


def test_table3_pairs_hgm_off_runs_with_average_fusion_curves():
    runs = _complete_runs()
    hgm_off = runs[runs["method"] == "mla"].assign(
        experiment="hgm_off", accuracy=0.78, fusion_average_accuracy=0.7
    )
    table = complete.table3(runs, hgm_off, MODALITIES)
    assert table.loc[("off", "off"), "multi_mean"] == pytest.approx(0.7)
    assert table.loc[("off", "on"), "multi_mean"] == pytest.approx(0.78)
    assert table.loc[("on", "off"), "multi_mean"] == pytest.approx(0.75)
    assert table.loc[("on", "on"), "multi_mean"] == pytest.approx(0.8)
    assert complete.table3(runs, hgm_off.iloc[0:0], MODALITIES) is None  # no hgm_off runs: no table
    experiments = X.experiment_table(CONFIG)
    assert complete.hgm_off_experiment(experiments).name == "hgm_off"  # found by its overrides, not its name


def test_the_table2_claim_and_the_strongest_methods():
    runs = pd.DataFrame(
        [
            {"method": m, "missing_rate": r, "seed": s, "fold": 1, "accuracy": BASE[m] - r + 0.01 * s}
            for m in ("mla", "late_fusion", "cca", "qmf")
            for r in (0.3, 0.6)
            for s in (0, 1)
        ]
    )
    methods = suite.suite_methods(["mla", "late_fusion"], ["cca", "qmf"])
    table = suite.table2(runs, methods, [0.3, 0.6])
    assert list(dict.fromkeys(table["method"])) == ["mla", "late_fusion", "cca", "qmf"]
    assert suite.strongest(table) == ["mla", "late_fusion", "qmf"]
    assert suite.claim_statement(table).endswith("MLA is best at 2 of 2 rates.")
    runs.loc[(runs["method"] == "qmf") & (runs["missing_rate"] == 0.6), "accuracy"] += 0.2
    statement = suite.claim_statement(suite.table2(runs, methods, [0.3, 0.6]))
    assert (
        "best at 1 of 2 rates; behind at 0.6 (`qmf` +17.00 points, beyond the two seed spreads)." in statement
    )


# ------------------------------------------------------------------------------------------- loading


def test_runs_load_in_the_experiment_tables_order_and_reused_cells_read_the_main_runs(tmp_path, paper_path):
    indexes = write_workspace(tmp_path, CONFIG)
    shuffled = tmp_path / "shuffled.index.json"
    index = json.loads(Path(indexes[0]).read_text())
    index["runs"] = index["runs"][::-1]  # the order of the index does not matter
    shuffled.write_text(json.dumps(index))
    ctx = load_context(_report_config(CONFIG), [str(shuffled), *indexes[1:]], paper_path, tmp_path / "out")
    main = ctx.runs_of_kind("main")
    assert list(dict.fromkeys(main["method"])) == ["mla", "late_fusion"]
    assert main[["seed", "fold"]].head(4).values.tolist() == [[0, 1], [0, 2], [1, 1], [1, 2]]
    assert {f"{m}_accuracy" for m in MODALITIES} <= set(ctx.runs.columns) and "shift_0.30" in ctx.runs
    zero_fill = X.by_name(ctx.experiments)["zero_filled_inputs"]
    assert zero_fill.reused == (("mla", 0.0),)
    runs = ctx.runs_of(zero_fill)
    at_zero = runs[runs["missing_rate"] == 0.0]
    assert len(at_zero) == 4 and (at_zero["experiment"] == "zero_filled_inputs").all()
    assert (
        at_zero["accuracy"].tolist()
        == main[(main["method"] == "mla") & (main["missing_rate"] == 0.0)]["accuracy"].tolist()
    )
    isolation = ctx.runs_of(X.by_name(ctx.experiments)["isolate_text"])
    assert sorted(isolation["missing_rate"].unique()) == [0.0, 0.6]  # share 0: the main grid's runs


def test_the_paper_dataset_null_shows_no_paper_figures(tmp_path, paper_path):
    indexes = write_workspace(tmp_path, CONFIG)
    out = tmp_path / "reports"
    build.build_summary(
        {"methods": CONFIG["methods"], "modalities": MODALITIES, "paper_dataset": None},
        indexes[:1],
        paper_path,
        out,
    )
    build.build_report(_report_config(CONFIG, paper_dataset=None), indexes, paper_path, [], [], out)
    report = (out / "report.md").read_text()
    assert "(paper)" not in report and "paper (" not in report
    plot = pd.read_csv(out / "plots" / "accuracy_vs_missing_rate.csv")
    assert list(plot.columns) == ["missing_rate", "series", "accuracy"]
    assert list(dict.fromkeys(plot["series"])) == ["mla", "late_fusion"]


# ------------------------------------------------------------------------------------------- whole report


def test_every_registered_section_runs_and_returns_lines(tmp_path, paper_path):
    indexes = write_workspace(tmp_path, CONFIG)
    features, masks = _provenance_files(tmp_path)
    ctx = load_context(_report_config(CONFIG), indexes, paper_path, tmp_path / "out", features, masks)
    assert len(build.SECTIONS) == 13  # with the Table 1 and Table 4 analogues and the claims
    for section in build.SECTIONS:
        lines = section(ctx)
        assert lines and all(isinstance(line, str) for line in lines), section.__name__
    for name in ("report.md", "report_page.html"):
        assert not (tmp_path / "out" / name).exists()  # sections write their own files, not the report
    for name in REPORT_OUTPUTS[2:]:
        assert (tmp_path / "out" / name).exists(), name


def test_the_report_and_summary_on_a_tiny_workspace(tmp_path, paper_path):
    report, out = _build(tmp_path, paper_path)
    for heading in (
        "## Accuracy (%) against missing rate",
        "## All metrics",
        "Table 1 analogue",
        "### Modality gap",
        "### MLA ablations (Table 3 analogue)",
        "## Missing-modality suite",
        "### Test-time shift",
        "## Isolation of modalities",
        "## Fidelity",
        "## Masks",
        "## Provenance",
    ):
        assert heading in report, heading
    assert "| mla (paper) | — | 70.00 | 60.00 |" in report
    assert "Laziness claim on this corpus" in report and "MLA is best at 2 of 2 rates." in report
    assert "runs:         main (data/runs): mla hash-mla, late_fusion hash-late_fusion" in report
    assert (
        "corpus:       embedded (data/corpus/x), label setup 4class (classes: neu, hap, sad, ang)" in report
    )
    assert (
        f"encoder:      audio: enc from embedded, pretrained=False, dim=2, n=4, file {tmp_path / 'audio.h5'}"
        in report
    )
    # zero_filled_inputs at rate 0 is the main run itself: a difference of exactly 0
    assert "| zero_filled_inputs<br><sub>masked_input: zero_fill</sub> | 80.80 (+0.00 ± 0.00) |" in report
    suite_metrics = json.loads((out / "missing_suite.json").read_text())
    assert suite_metrics["cca"]["r30"]["n_runs"] == 4 and "config_hash" in suite_metrics
    fidelity_metrics = json.loads((out / "fidelity.json").read_text())
    assert fidelity_metrics["fidelity"]["hgm_off"]["r00"]["delta_mean"] == pytest.approx(-0.02)
    assert set(fidelity_metrics["by_protocol"]) == {"bernoulli", "cpm"}

    build.build_summary(
        {"methods": CONFIG["methods"], "modalities": MODALITIES, "paper_dataset": "IEMOCAP"},
        [str(tmp_path / "main_grid.index.json")],
        paper_path,
        out,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"config_hash", "claims", "mla", "late_fusion", "concat", "qmf"}
    assert metrics["mla"]["r30"]["accuracy_mean"] == pytest.approx(0.8 - 0.15 + 0.005 + 0.003)
    assert metrics["concat"].keys() == {"r00"} and metrics["mla"]["r00"]["n_runs"] == 4
    # DVC plots data, long: a series per method and per paper curve, a row where it has a value
    csv = (out / "plots" / "accuracy_vs_missing_rate.csv").read_text().splitlines()
    assert csv[0] == "missing_rate,series,accuracy"
    assert "0.3,mla,65.8" in csv and "0.3,paper_mla,70.0" in csv and "0.3,late_fusion,63.8" in csv
    assert not any(row.startswith("0.3,paper_late_fusion") for row in csv)
    series = [row.split(",")[1] for row in csv[1:]]
    assert list(dict.fromkeys(series)) == ["mla", "paper_mla", "late_fusion"]


# ------------------------------------------------------------------------------------------- sections without data


def test_stages_not_run_are_one_sentence_each(tmp_path, paper_path):
    config = copy.deepcopy(CONFIG)
    config["isolation"]["enabled"] = False
    config["fidelity"]["enabled"] = False
    report, out = _build(tmp_path, paper_path, config=config, stages=("main_grid",))
    assert "Isolation analysis: not run (isolation.enabled: false)." in report
    assert "Fidelity experiment: not run (fidelity.enabled: false)." in report
    # every DVC output of the report exists all the same (mlaflow/report/catalog.py)
    assert json.loads((out / "fidelity.json").read_text()).keys() == {"config_hash"}
    for name in REPORT_OUTPUTS:
        assert (out / name).exists(), name


def test_an_empty_suite_says_so(tmp_path, paper_path):
    report, out = _build(tmp_path, paper_path, skip=lambda e, m, r: e.kind == "suite")
    assert (
        "Missing-modality suite (Table 2 analogue): not run (the missing_suite stage's index lists no runs)."
        in report
    )
    assert json.loads((out / "missing_suite.json").read_text()).keys() == {"config_hash"}
    other = tmp_path / "other"  # no index of the stage at all
    other.mkdir()
    report, _ = _build(other, paper_path, stages=("main_grid",))
    assert (
        "Missing-modality suite (Table 2 analogue): not run (no index of the missing_suite stage)." in report
    )


def test_a_main_grid_without_missing_rate_0_says_so(tmp_path, paper_path):
    config = copy.deepcopy(CONFIG)
    config["masks"]["missing_rates"] = [0.3, 0.6]
    config["complete_modality_methods"] = []
    config["isolation"]["enabled"] = False
    config["fidelity"]["missing_rates"] = [0.3]
    report, _ = _build(tmp_path, paper_path, config=config)
    assert "Complete modalities (Table 1 analogue): no run at missing rate 0" in report
    assert "| **mla** | 65.80 ± 0.71 | 50.80 ± 0.71 |" in report  # the main table without a 0.0 column


def test_a_main_grid_without_mla_says_so(tmp_path, paper_path):
    config = copy.deepcopy(CONFIG)
    config["methods"] = ["late_fusion"]
    config["isolation"]["methods"] = ["late_fusion"]
    config["fidelity"]["enabled"] = False
    report, _ = _build(tmp_path, paper_path, config=config)
    assert (
        "Paper's claim (MLA best at every missing rate): not tested here, MLA has no run in this table."
        in report
    )
    assert "The laziness comparison needs MLA" in report
    assert "The 2 strongest methods of the table above" in report
    assert "MLA ablations (Table 3 analogue): need MLA at missing rate 0" in report


# ------------------------------------------------------------------------------------------- report page


def test_the_report_page_holds_every_table_and_embeds_every_figure(tmp_path, paper_path):
    report, out = _build(tmp_path, paper_path)
    page = (out / "report_page.html").read_text()
    assert page.count("<table>") == report.count("\n|---") and page.count("<table>") >= 5
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert figures and page.count('src="data:image/png;base64,') == len(figures)
    assert 'src="figures/' not in page


def test_the_report_page_fails_naming_a_missing_figure_and_passes_no_raw_html(tmp_path):
    from mlaflow.report.page import render_page

    (tmp_path / "figures").mkdir()
    with pytest.raises(InputError, match="figures/absent.png"):
        render_page("![gone](figures/absent.png)", tmp_path)
    assert "<script>" not in render_page("<script>alert(1)</script>", tmp_path)


def test_a_constant_unimodal_predictor_is_not_shown_as_an_accuracy():
    """Table 1: a modality whose prediction is one class in most runs reads "constant predictor" and is left out
    of the laziness comparison; a modality constant in some runs says how many."""
    from mlaflow.report import complete

    rows = []
    for seed in (0, 1):
        for fold in (1, 2):
            for method, constant in (
                ("mla", {}),
                ("film", {"audio": 1.0}),
                ("concat", {"audio": float(seed)}),
                ("bigated", {"audio": float(seed or fold == 1)}),  # 3 runs of 4
            ):
                rows.append(
                    {
                        "method": method,
                        "missing_rate": 0.0,
                        "seed": seed,
                        "fold": fold,
                        "accuracy": 0.7,
                        "audio_accuracy": 0.3 if method == "film" else 0.5,
                        "text_accuracy": 0.6,
                        "audio_constant": constant.get("audio", 0.0),
                        "text_constant": 0.0,
                    }
                )
    table = complete.table1(pd.DataFrame(rows), ["audio", "text"])
    assert complete.unimodal_cell(table.loc["film"], "audio") == "constant predictor"
    assert pd.isna(table.loc["film", "audio_accuracy_mean"])
    assert complete.unimodal_cell(table.loc["concat"], "audio") == "50.00 ± 0.00 (50% of runs constant)"
    assert complete.unimodal_cell(table.loc["mla"], "audio") == "50.00 ± 0.00"
    assert complete.unimodal_cell(table.loc["bigated"], "audio") == "constant predictor (75% of runs)"
    statement = complete.laziness_statement(table, ["audio", "text"])
    # film and bigated have no measured audio accuracy
    assert "(film)" not in statement and "(bigated)" not in statement and "(concat)" in statement
    # the table of every metric names it too
    from mlaflow.report import grid
    from mlaflow.report.context import Paper, ReportContext

    frame = pd.DataFrame(rows).assign(
        kind="complete",
        experiment="complete",
        unweighted_accuracy=0.7,
        macro_f1=0.7,
        weighted_f1=0.7,
        share_all_missing=0.0,
    )
    ctx = ReportContext({"modalities": ["audio", "text"]}, [], frame, Paper(), Path("."))
    lines = [line for line in grid.all_metrics(ctx) if line.startswith("| film ")]
    assert len(lines) == 1 and "constant predictor" in lines[0] and "30.00" not in lines[0]


def test_a_method_at_the_prior_class_level_is_named():
    from mlaflow.report import suite

    rows = [
        {"method": m, "missing_rate": r, "seed": 0, "fold": 1, "accuracy": acc, "prior_accuracy": 0.30}
        for m, acc in (("dcca", 0.31), ("mla", 0.60))
        for r in (0.1, 0.5)
    ]
    statement = suite.collapse_statement(pd.DataFrame(rows), ["mla", "dcca"], [0.1, 0.5])
    assert "At the prior-class level" in statement and "`dcca`" in statement and "`mla`" not in statement
    rows[1]["accuracy"] = 0.40  # dcca above the level at one rate: not collapsed at every rate
    assert "No method sits at the prior-class level" in suite.collapse_statement(
        pd.DataFrame(rows), ["mla", "dcca"], [0.1, 0.5]
    )


# ------------------------------------------------------------------------------------------- provenance


def _features_run_context(tmp_path, mutate=lambda config: None):
    """The report context of a features-kind run (.test/features.yaml on tiny_workflow's stores) with one MLA
    run, from the report job's own config; the face store keeps only its `modality` attribute, as a user's store
    may (the README's minimum)."""
    import yaml
    from tiny_workflow import FEATURE_MODALITIES, write_feature_corpus

    from mlaflow.pipeline import jobconfigs
    from mlaflow.pipeline import params as P
    from mlaflow.report.context import Paper, ReportContext, feature_provenance

    write_feature_corpus(tmp_path)
    config = yaml.safe_load((P.REPO_ROOT / ".test" / "features.yaml").read_text())
    config["corpus"]["table"] = str(tmp_path / "own" / "labels.csv")
    stores = [str(tmp_path / "own" / f"{m}.h5") for m in FEATURE_MODALITIES]
    for m, store in zip(FEATURE_MODALITIES, stores):
        config["features"][m]["precomputed"] = store
    with h5py.File(stores[1], "a") as f:
        for name in [name for name in f.attrs if name != "modality"]:
            del f.attrs[name]
    mutate(config)
    job = jobconfigs.job_configs(P.validate(config))["reports/report.config.json"]
    runs = pd.DataFrame({"experiment": ["main"], "kind": ["main"], "method": ["mla"], "config_hash": ["h"]})
    return ReportContext(job, [], runs, Paper(), tmp_path / "out", features=feature_provenance(stores))


def test_the_provenance_of_a_features_run_describes_its_table_modalities_and_stores(tmp_path):
    from mlaflow.report import appendix

    lines = appendix.provenance(_features_run_context(tmp_path))
    text = "\n".join(lines)
    for wrong in ("IEMOCAP", "label setup", "None", '"audio"', '"visual"', '"text"'):
        assert wrong not in text, wrong
    own = tmp_path / "own"
    classes = ", ".join(f"c{i}" for i in range(10))
    assert f"corpus:       features, label table {own / 'labels.csv'} (classes: {classes})" in lines
    assert "modalities:   speech, face, words" in lines
    stores = [line for line in lines if line.startswith("store:")]
    assert stores == [
        f"store:        speech: {own / 'speech.h5'}, encoder user from user features, pretrained=True, dim=12, "
        "n=300",
        f"store:        face: {own / 'face.h5'}, encoder not recorded, dim=8, n=300",
        f"store:        words: {own / 'words.h5'}, encoder user from user features, pretrained=True, dim=16, "
        "n=300",
    ]
    assert '"fixed_weights": {"face": 0.2, "speech": 0.4, "words": 0.4}' in text


def test_the_provenance_shows_no_fixed_weights_of_modalities_the_corpus_lacks(tmp_path):
    from mlaflow.report import appendix

    def iemocap_weights(config):  # weights of another corpus's modalities (left out, they follow the corpus)
        config["method_params"]["mla"]["fixed_weights"] = {"audio": 0.35, "visual": 0.25, "text": 0.40}

    ctx = _features_run_context(tmp_path, iemocap_weights)
    text = "\n".join(appendix.provenance(ctx))
    assert '"audio"' not in text and '"visual"' not in text and '"text"' not in text
    assert '"fixed_weights": "not used (no weight for speech, face, words)"' in text


def test_the_face_crops_section_shows_the_shares_and_the_contact_sheet(tmp_path):
    from mlaflow.report.appendix import face_crops

    assert face_crops(None) == []  # no faces cut (frames pre-cut, or not an IEMOCAP corpus)
    faces = tmp_path / "faces"
    faces.mkdir()
    entry = {"n_utterances": 4, "with_face": 3, "share_with_face": 0.75}
    (faces / "summary.json").write_text(
        json.dumps(
            {
                "detector": "OpenCV Haar cascade haarcascade_frontalface_default.xml",
                "settings": {"sample_fps": 2.0, "size": 64, "margin": 0.2, "on_no_face": "missing"},
                "n_utterances": 4,
                "with_face": 3,
                "share_with_face": 0.75,
                "no_face": ["Ses01F_impro01_M000"],
                "per_session": {"Session1": entry},
                "per_dialog": {"Ses01F_impro01": entry},
            }
        )
    )
    text = "\n".join(face_crops(str(faces)))
    assert "**3 of the 4 utterances of EmoEvaluation (75.0%) have a face**" in text
    assert "masked as missing" in text and "Ses01F_impro01_M000" in text
    assert "| Session1 | 4 | 3 | 75.0% |" in text and "| Ses01F_impro01 | 4 | 3 | 75.0% |" in text
    assert f"]({Path('..') / faces / 'contact_sheet.png'})" in text
    (faces / "summary.json").write_text("{")
    with pytest.raises(InputError, match="summary.json.*unreadable.*faces rule"):
        face_crops(str(faces))


def test_a_suite_method_that_needs_conversations_is_said_not_to_apply_where_there_are_none(
    tmp_path, paper_path, monkeypatch
):
    """GCNet reads the dialog; on a corpus kind without conversations the suite leaves it out and the report
    says why, instead of a crash (a corpus kind with conversations runs it: tests/test_workflow.py)."""
    import dataclasses

    from mlaflow.data import corpora

    flat = dataclasses.replace(corpora.CORPORA["embedded"], conversations=False)
    monkeypatch.setitem(corpora.CORPORA, "embedded", flat)
    config = copy.deepcopy(CONFIG)
    config["missing_suite"]["methods"] = ["cca", "qmf", "gcnet"]
    assert "gcnet" not in X.experiment_table(config)[2].methods
    report, _ = _build(tmp_path, paper_path, config=config)
    assert (
        "Not run on this corpus: `gcnet` (it reads conversations, and corpus kind 'embedded' has none)."
        in report
    )
    # listed where it must run (the main grid), it is a config error before any job starts
    from mlaflow.errors import ParamsError
    from mlaflow.pipeline import params as P

    shipped = P.load(P.REPO_ROOT / "params.yaml")
    with pytest.raises(ParamsError, match="gcnet reads conversations"):
        P.validate({**shipped, "methods": ["mla", "late_fusion", "gcnet"]})
