# Helpers shared by the rules: the grid, paths and the code each rule depends on, all derived from params.yaml.
import sys
from pathlib import Path

import mlaflow.params as P

P.validate(config)  # fails at parse time, naming the key, before any job starts

MLAFLOW = f"{sys.executable} -m mlaflow"
MODALITIES = list(P.MODALITIES)
METHODS = config["methods"]
RATES = [P.format_rate(r) for r in config["masks"]["missing_rates"]]
SEEDS = config["train"]["seeds"]
FOLDS = config["splits"]["folds"]
EMBEDDED = config["corpus"]["kind"] == "embedded"
CORPUS_ROOT = config["corpus"]["root"]
GPUS = config["resources"]["gpu_per_job"]


wildcard_constraints:
    modality="|".join(MODALITIES),
    method="[a-z_]+",
    rate=r"\d\.\d\d",


def code(*packages):
    """Source files of the given mlaflow sub-packages (plus the shared modules): rule inputs, so that a code
    change reruns the rules that use it (Snakemake does not track imported modules itself)."""
    root = Path("src/mlaflow")
    files = [root / f for f in ("__init__.py", "cli.py", "errors.py", "io.py", "params.py", "devices.py", "provenance.py")]
    for package in packages:
        files += sorted((root / package).glob("*.py"))
    return [str(f) for f in files]


def model_path(modality):
    model = config["features"][modality]["model"]
    return f"data/models/{modality}" if model == "embedded" else model


def feature_path(modality):
    return config["features"][modality]["precomputed"] or f"data/features/{modality}.h5"


def run_files(method, rate):
    return expand("data/runs/{method}/missing_{rate}/seed{seed}_fold{fold}.json",
                  method=method, rate=rate, seed=SEEDS, fold=FOLDS)


ALL_RUN_FILES = [f for method in METHODS for rate in RATES for f in run_files(method, rate)]
MASK_FILES = expand("data/splits/masks/missing_{rate}.h5", rate=RATES)
REPORT_OUTPUTS = [
    "reports/metrics.json",
    "reports/report.md",
    "reports/plots/accuracy_vs_missing_rate.csv",
    "reports/figures/accuracy_vs_missing_rate.png",
]


# Input and params functions of wildcards (named functions rather than lambdas in rules).
def modality_model(wildcards):
    return model_path(wildcards.modality)


def modality_cfg(wildcards):
    return config["features"][wildcards.modality]


def method_cfg(wildcards):
    return config["method_params"][wildcards.method]
