"""The claims section (mlaflow.report.claims): verdicts computed from synthetic run records whose true answer is
known (holds, not shown, reversed), the interval against Student's t by hand, and the verdicts' way from a Table 1
workflow's metrics.json to the main report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlaflow.report import claims as C

SEEDS, FOLDS = (0, 1, 2), (1, 2, 3, 4, 5)


def runs(accuracy: dict[str, float], rate: float = 0.0, noise: float = 0.01, seed: int = 0, **columns):
    """Run records of each method at `rate`: one per (seed, fold), accuracy = its value + a (seed, fold) effect
    shared by every method (a hard fold is hard for all: what pairing removes) + its own small noise."""
    g = np.random.default_rng(seed)
    shared = {(s, f): g.normal(0, 0.05) for s in SEEDS for f in FOLDS}
    rows = []
    for method, value in accuracy.items():
        for (s, f), effect in shared.items():
            row = {
                "method": method,
                "missing_rate": rate,
                "seed": s,
                "fold": f,
                "accuracy": value + effect + g.normal(0, noise),
            }
            for column, by_method in columns.items():
                row[column] = by_method.get(method, np.nan) + effect + g.normal(0, noise)
            rows.append(row)
    return pd.DataFrame(rows)


def test_the_interval_is_students_t_and_the_verdict_follows_it():
    mean, low, high = C.interval(np.array([1.0, 2.0, 3.0]))
    assert (
        mean == 2.0
        and low == pytest.approx(2 - 4.302653 / np.sqrt(3))
        and high == pytest.approx(2 + 4.302653 / np.sqrt(3))
    )
    assert [C.verdict(0.1, 2), C.verdict(-1, 2), C.verdict(-2, -0.1)] == [C.HOLDS, C.NOT_SHOWN, C.REVERSED]


@pytest.mark.parametrize(
    ("hgm_off", "expected"),
    [(0.60, C.HOLDS), (0.70, C.NOT_SHOWN), (0.80, C.REVERSED)],  # MLA at 0.70
)
def test_head_gradient_modification_claim_from_runs_whose_answer_is_known(hgm_off, expected):
    judged = C.hgm(runs({"mla": 0.70, "mla_hgm_off": hgm_off}))
    assert judged.verdict == expected and judged.n == 15
    assert judged.mean == pytest.approx(100 * (0.70 - hgm_off), abs=1.5)  # in points


def test_pairing_removes_the_fold_effect_that_an_unpaired_comparison_would_drown_in():
    """A 1-point gain under a 5-point fold-to-fold spread: paired, it holds."""
    frame = runs({"mla": 0.71, "mla_hgm_off": 0.70}, noise=0.002)
    assert C.hgm(frame).verdict == C.HOLDS
    per_method = frame.groupby("method")["accuracy"].std()
    assert per_method.min() > 0.02  # what an unpaired interval would have to beat


def test_a_claim_over_every_baseline_holds_only_if_each_comparison_does():
    assert C.beats_complete(runs({"mla": 0.75, "concat": 0.65, "sum": 0.66})).verdict == C.HOLDS
    mixed = C.beats_complete(runs({"mla": 0.75, "concat": 0.65, "late_fusion": 0.75}))
    assert mixed.verdict == C.NOT_SHOWN and "late_fusion" in mixed.compared
    lost = C.beats_complete(runs({"mla": 0.75, "concat": 0.65, "qmf": 0.85}))
    assert lost.verdict == C.REVERSED and "MLA − qmf" in lost.compared
    # MLA's own variants are not baselines
    assert C.beats_complete(runs({"mla": 0.75, "concat": 0.65, "mla_hgm_off": 0.9})).verdict == C.HOLDS


def test_every_rate_claim_reads_each_rate_and_adjusts_for_their_number():
    frame = pd.concat(
        [runs({"mla": 0.7, "late_fusion": 0.6}, rate=r, seed=i) for i, r in enumerate((0.3, 0.6))]
    )
    judged = C.beats_missing(frame)
    assert judged.verdict == C.HOLDS and "of 2" in judged.compared
    wide = C.judge("x", np.linspace(0.01, 0.03, 15), "d", level=1 - 0.05 / 2)
    narrow = C.judge("x", np.linspace(0.01, 0.03, 15), "d")
    assert wide.low < narrow.low and wide.high > narrow.high


def test_laziness_dynamic_fusion_and_gap_claims():
    lazy = runs(
        {"mla": 0.70, "concat": 0.70, "late_fusion": 0.70},
        visual_accuracy={"mla": 0.5, "concat": 0.3, "late_fusion": 0.45},
        audio_accuracy={"mla": 0.6, "concat": 0.6, "late_fusion": 0.6},
        fusion_average_accuracy={"mla": 0.65},
        gap_audio_visual={"mla": 0.2, "concat": 0.5},
    )
    judged = C.judge_all(lazy, ["audio", "visual"], with_suite=False)
    assert (
        judged["laziness"].verdict == C.HOLDS
        and "visual accuracy, MLA − concat" in judged["laziness"].compared
    )
    assert judged["dynamic_fusion"].verdict == C.HOLDS  # 0.70 against its own average rule's 0.65
    assert judged["gap"].verdict == C.REVERSED  # MLA's gap is smaller here
    assert judged["hgm"].verdict == C.NOT_MEASURED and "beats_missing" not in judged


def test_a_table1_workflows_verdicts_reach_the_main_report_through_its_metrics(tmp_path, monkeypatch):
    frame = runs(
        {"mla": 0.70, "mla_hgm_off": 0.60, "concat": 0.5}, audio_accuracy={"mla": 0.6, "concat": 0.6}
    )
    stored = C.summary_claims(frame, ["audio"])
    json.dumps(stored, allow_nan=False)  # DVC metrics: no NaN where a claim was not measured
    folder = tmp_path / "data" / "table1" / "embedded_ks" / "reports"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({C.CLAIMS_KEY: stored}))
    monkeypatch.chdir(tmp_path)
    read = C._from_metrics("embedded_ks")
    assert read["hgm"].verdict == C.HOLDS and read["hgm"].n == 15
    assert read["hgm"].cell() == C.hgm(frame).cell()
