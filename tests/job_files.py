"""The settings the unit tests run under (`unit_params`: the schema's defaults, not the shipped
params.yaml), a tiny corpus as the files a training or tuning job reads (manifest, three feature stores,
folds, masks), and a job config for it."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd

from mlaflow.data.folds import make_folds
from mlaflow.data.masks import bernoulli_mask, write_masks
from mlaflow.features.store import FeatureStoreWriter
from mlaflow.pipeline import experiments as E
from mlaflow.pipeline import params as P
from mlaflow.pipeline import schema as S
from mlaflow.runtime import Runtime
from mlaflow.train.inputs import JobFiles

NAMES = ["audio", "visual", "text"]
BERNOULLI = {"protocol": "bernoulli", "modality": None, "training_only": False}
CLASSES = ["neu", "hap", "sad"]
DIMS = {"audio": 3, "visual": 4, "text": 5}

# The keys a config must state (the schema gives them no default), as the unit tests state them; every other
# setting of theirs is the schema's default. Not the shipped params.yaml: changing what the workflow runs
# changes no unit test (test_schema.py and test_metrics_params.py check params.yaml itself).
REQUIRED = {
    "corpus": {"kind": "embedded"},
    "splits": {"folds": [1, 2, 3, 4, 5]},
    "masks": {"missing_rates": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]},
    "methods": ["mla", "late_fusion"],
    "train": {"seeds": [0, 1, 2]},
}


def unit_params() -> dict:
    """REQUIRED with the schema's defaults filled in, as a config file states them (the defaults that follow
    other keys, such as mla's fixed_weights, are left to P.validate): a new dict to change, then validate."""
    schema = P.load_schema()
    return _in_schema_order(S.validate(copy.deepcopy(REQUIRED), schema), schema)


def unit_config() -> dict:
    """unit_params validated: every setting filled, as the workflow hands a config to its jobs."""
    return P.validate(unit_params())


def _in_schema_order(value, schema: dict):
    """`value` with the keys of every object in the order the schema lists them (a config file's order)."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(value, dict) or not properties:
        return value
    keys = [k for k in properties if k in value] + [k for k in value if k not in properties]
    return {k: _in_schema_order(value[k], properties.get(k, {})) for k in keys}


def write_job_files(tmp_path: Path, n: int = 60, rate: float = 0.3) -> JobFiles:
    """The files of a job (masks at `rate`, seeds 0 and 1), as run_training_job and run_worker take them."""
    rng = np.random.default_rng(0)
    ids = [f"u{i:02d}" for i in range(n)]
    labels = rng.integers(0, 3, n)
    manifest = pd.DataFrame(
        {
            "utterance_id": ids,
            "session": np.arange(n) % 3 + 1,
            "label": [CLASSES[i] for i in labels],
            "label_index": labels,
            "frames_dir": "",  # every manifest has the frame columns (data.manifest.MANIFEST_COLUMNS)
            "n_frames": 0,
        }
    )
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    stores = []
    for m, d in DIMS.items():
        with FeatureStoreWriter(
            tmp_path / f"{m}.h5", ids, manifest["label"].tolist(), d, {"modality": m}
        ) as w:
            w.write(np.arange(n), (rng.standard_normal((n, d)) + labels[:, None]).astype(np.float32))
            w.finish()
        stores.append(str(tmp_path / f"{m}.h5"))
    make_folds(manifest, [1, 2], 0.2, 0, CLASSES).to_csv(tmp_path / "folds.csv", index=False)
    write_masks(
        tmp_path / "masks.h5",
        ids,
        {s: bernoulli_mask(n, rate, s) for s in (0, 1)},
        rate,
        BERNOULLI,
        "prior",
        NAMES,
    )
    return JobFiles(
        manifest=str(tmp_path / "manifest.csv"),
        features=stores,
        folds=str(tmp_path / "folds.csv"),
        masks=[str(tmp_path / "masks.h5")],
    )


# how the test jobs run: on the CPU, one run at a time (stacked runs are checked against them elsewhere)
CPU_ONE_AT_A_TIME = Runtime(device="cpu", batch_runs=False)


def small_params(**train) -> dict:
    """The unit tests' config (`unit_config`) with a cheap training."""
    params = unit_config()
    params["train"].update({"epochs": 2, "hidden_dim": 8} | train)
    return params


def train_config(params: dict, method: str = "late_fusion", experiment: str = "main") -> dict:
    config = E.train_job_config(params, E.by_name(E.experiment_table(params))[experiment], method)
    config.update(test_time_shift=[], classes=CLASSES, feature_dims=DIMS)
    return config
