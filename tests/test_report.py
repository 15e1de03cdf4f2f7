import json

import pandas as pd
import pytest
import yaml

from mlaflow import params as P
from mlaflow.errors import InputError
from mlaflow.report.build import aggregate, load_runs


def test_aggregate_is_mean_over_folds_then_mean_and_std_over_seeds():
    runs = pd.DataFrame({
        "method": ["mla"] * 4, "missing_rate": [0.3] * 4, "seed": [0, 0, 1, 1], "fold": [1, 2, 1, 2],
        "accuracy": [0.5, 0.7, 0.8, 0.8],
    })
    row = aggregate(runs).iloc[0]
    # seed 0: 0.6, seed 1: 0.8 -> mean 0.7, sample std 0.1414
    assert row["accuracy_mean"] == pytest.approx(0.7)
    assert row["accuracy_std"] == pytest.approx(0.1414213, rel=1e-5)
    assert row["n_seeds"] == 2 and row["n_runs"] == 4


def _run_record(params_hash):
    metrics = {"accuracy": 0.5, "unweighted_accuracy": 0.5, "macro_f1": 0.5, "weighted_f1": 0.5,
               "per_modality_accuracy": {m: 0.4 for m in P.MODALITIES}, "share_all_missing": 0.0}
    return {"method": "mla", "missing_rate": 0.0, "seed": 0, "fold": 1, "metrics": metrics,
            "validation": {"best_epoch": 3}, "seconds_per_epoch": 0.1, "params_hash": params_hash}


def test_stale_runs_are_refused_naming_the_file(tmp_path):
    params = yaml.safe_load(open(P.REPO_ROOT / "params.yaml"))
    good, stale = tmp_path / "good.json", tmp_path / "stale.json"
    good.write_text(json.dumps(_run_record(P.params_hash(params, P.RUN_SECTIONS))))
    stale.write_text(json.dumps(_run_record("0123456789ab")))
    assert len(load_runs([str(good)], params)) == 1
    with pytest.raises(InputError, match="stale.json: stale result"):
        load_runs([str(good), str(stale)], params)


def _complete_runs(weak_mla=0.5, weak_concat=0.3):
    """Runs at missing rate 0 of mla, concat and late_fusion, 2 seeds x 2 folds; visual is the weak modality."""
    rows = []
    for method, weak in (("mla", weak_mla), ("concat", weak_concat), ("late_fusion", 0.45)):
        for seed in (0, 1):
            for fold in (1, 2):
                jitter = 0.01 * (seed - 0.5)
                rows.append({"variant": "paper", "method": method, "missing_rate": 0.0, "seed": seed, "fold": fold,
                             "accuracy": 0.8 + jitter, "audio_accuracy": 0.6 + jitter,
                             "visual_accuracy": weak + jitter, "text_accuracy": 0.7 + jitter,
                             "fusion_average_accuracy": 0.75 + jitter})
    return pd.DataFrame(rows)


def test_table1_and_the_laziness_statement_are_computed_from_the_runs():
    from mlaflow.report import complete

    table = complete.table1(_complete_runs())
    assert list(table.index) == ["concat", "late_fusion", "mla"]            # the paper's column order
    assert table.loc["mla", "visual_accuracy_mean"] == pytest.approx(0.5)
    assert complete.weak_modality(table) == "visual"                       # lowest when trained alone
    assert "claim on this corpus: holds" in complete.laziness_statement(table)
    assert "(concat)" in complete.laziness_statement(table)
    reversed_table = complete.table1(_complete_runs(weak_mla=0.3, weak_concat=0.5))
    assert "does not hold" in complete.laziness_statement(reversed_table)


def test_table3_pairs_hgm_off_runs_with_average_fusion_curves():
    from mlaflow.report import complete

    params = yaml.safe_load(open(P.REPO_ROOT / "params.yaml"))
    runs = _complete_runs()
    hgm_off = runs[runs["method"] == "mla"].assign(variant="hgm_off", accuracy=0.78, fusion_average_accuracy=0.7)
    table = complete.table3(pd.concat([runs, hgm_off]), params)
    assert table.loc[("off", "off"), "multi_mean"] == pytest.approx(0.7)
    assert table.loc[("off", "on"), "multi_mean"] == pytest.approx(0.78)
    assert table.loc[("on", "off"), "multi_mean"] == pytest.approx(0.75)
    assert table.loc[("on", "on"), "multi_mean"] == pytest.approx(0.8)
    assert complete.table3(runs, params) is None                           # no hgm_off runs: no table
