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
PROTOCOL = config["masks"]["protocol"]


wildcard_constraints:
    modality="|".join(MODALITIES),
    method="[a-z_]+",
    variant="[a-z0-9_]+",
    protocol="|".join(P.MASK_PROTOCOLS + P.ISOLATION_PROTOCOLS),
    rate=r"\d\.\d\d",
    seed=r"\d+",
    fold=r"\d+",


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


SUITE_ROOT = "data/suite"


def run_root(variant):
    """Where runs live, one folder per DVC stage that trains them: the main grid (variant "paper") in data/runs,
    the isolation analysis (variants isolate_<modality>) in data/isolation/<variant>, the fidelity experiment's
    variants in data/fidelity/<variant>. The missing-modality suite (also "paper") is in SUITE_ROOT."""
    if variant == P.PAPER_VARIANT:
        return "data/runs"
    return "data/isolation/{variant}" if variant.startswith(P.ISOLATION_PREFIX) else "data/fidelity/{variant}"


def run_files(variant, method, rate, seeds=SEEDS, folds=FOLDS, root=None):
    """One metrics JSON per (seed, fold), under `root` (default: run_root). A seed or fold given as None stays a
    wildcard."""
    root = root or run_root(variant)
    given = {k: v for k, v in (("seed", seeds), ("fold", folds)) if v is not None}
    return expand(root + "/{method}/missing_{rate}/seed{seed}_fold{fold}.json",
                  variant=variant, method=method, rate=rate, **given, allow_missing=True)


# What one training job covers (train.job_group): "cell" all seeds x folds of a method at a missing rate,
# "seed" the folds of one seed, "run" one run. Results are the same whatever the grouping.
JOB_GROUP = config["train"]["job_group"]
JOB_SEEDS = None if JOB_GROUP in ("seed", "run") else SEEDS
JOB_FOLDS = None if JOB_GROUP == "run" else FOLDS
JOB_NAME = {"cell": "", "seed": "_seed{seed}", "run": "_seed{seed}_fold{fold}"}[JOB_GROUP]


def job_seeds(wildcards):
    return wildcards.seed if JOB_SEEDS is None else " ".join(map(str, SEEDS))


def job_folds(wildcards):
    return wildcards.fold if JOB_FOLDS is None else " ".join(map(str, FOLDS))


def mask_file(protocol, rate):
    return f"data/splits/masks/{protocol}/missing_{rate}.h5"


COMPLETE_RATE = P.format_rate(0.0)  # the complete-modality baselines (Table 1 analogue) run at missing rate 0 only
MAIN_RUN_FILES = [f for method in METHODS for rate in RATES for f in run_files(P.PAPER_VARIANT, method, rate)]
MAIN_RUN_FILES += [f for method in config["complete_modality_methods"] if method not in METHODS
                   for f in run_files(P.PAPER_VARIANT, method, COMPLETE_RATE)]
FIDELITY_RUN_FILES = [f for variant, method, rates in P.fidelity_grid(config) for rate in rates
                      for f in run_files(variant, method, P.format_rate(rate))]
SUITE_RUN_FILES = [f for method, rate in P.suite_grid(config)
                   for f in run_files(P.PAPER_VARIANT, method, P.format_rate(rate), root=SUITE_ROOT)]
ISOLATION_RUN_FILES = [f for variant, method, rates in P.isolation_grid(config) for rate in rates
                       for f in run_files(variant, method, P.format_rate(rate))]
MAIN_MASK_FILES = sorted({mask_file(PROTOCOL, rate)
                          for rate in [*RATES, *([COMPLETE_RATE] if config["complete_modality_methods"] else [])]})
# every mask file, the fidelity experiment's included: all made in the main stage (data/splits is its output)
MASK_FILES = sorted(set(MAIN_MASK_FILES) | {
    mask_file(P.variant_params(config, variant)["masks"]["protocol"], P.format_rate(rate))
    for variant, _, rates in P.fidelity_grid(config) + P.isolation_grid(config) for rate in rates})
SUMMARY_OUTPUTS = [
    "reports/metrics.json",
    "reports/plots/accuracy_vs_missing_rate.csv",
    "reports/figures/accuracy_vs_missing_rate.png",
]
REPORT_OUTPUTS = [
    "reports/report.md",
    "reports/figures/modality_gap.png",
    "reports/missing_suite.json",
    "reports/plots/missing_suite_accuracy.csv",
    "reports/figures/missing_suite_accuracy.png",
    "reports/plots/test_time_shift.csv",
]
if config["isolation"]["enabled"]:
    REPORT_OUTPUTS += ["reports/plots/isolation.csv", "reports/figures/isolation.png"]
if config["fidelity"]["enabled"]:
    REPORT_OUTPUTS += [
        "reports/fidelity.json",
        "reports/plots/fidelity_effects.csv",
        "reports/plots/accuracy_vs_missing_rate_by_protocol.csv",
        "reports/figures/accuracy_vs_missing_rate_by_protocol.png",
    ]


# Input and params functions of wildcards (named functions rather than lambdas in rules).
def modality_model(wildcards):
    return model_path(wildcards.modality)


def modality_cfg(wildcards):
    return config["features"][wildcards.modality]


def variant_of(wildcards):
    return getattr(wildcards, "variant", P.PAPER_VARIANT)  # the main grid's rule has no variant wildcard


def method_cfg(wildcards):
    return P.variant_params(config, variant_of(wildcards))["method_params"][wildcards.method]


def variant_train_cfg(wildcards):
    return P.variant_params(config, variant_of(wildcards))["train"]


def shift_masks(wildcards):
    """Test-time shift: runs of the paper's settings (main grid, suite) are also tested at every missing rate."""
    if variant_of(wildcards) != P.PAPER_VARIANT:
        return []
    return [mask_file(PROTOCOL, rate) for rate in RATES]


def variant_masks(wildcards):
    return mask_file(P.variant_params(config, variant_of(wildcards))["masks"]["protocol"], wildcards.rate)
