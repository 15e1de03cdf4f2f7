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
