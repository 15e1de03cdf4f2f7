# mlaflow: corpus -> features (HDF5) -> masked splits -> training -> report.
# The config is params.yaml, with `--configfile` / `--config` on top, validated once at parse time; each job gets
# the keys it computes from in its own config file (workflow/rules/common.smk). Rules are thin: they call
# `mlaflow <step>`.
import os
import re
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

# The workflow and its jobs run the mlaflow of this checkout, not whichever one is installed: a DVC experiment's
# temporary copy (dvc exp run --queue) then runs its own snapshot of the code, and the code inputs of the rules
# are files of this checkout (an editable install would point them at the workspace's).
_SOURCE = Path(workflow.basedir) / "src"
if (_SOURCE / "mlaflow").is_dir():
    sys.path.insert(0, str(_SOURCE))
    os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [str(_SOURCE), os.environ.get("PYTHONPATH")])))


# next to the Snakefile, so that `snakemake -d <dir> --configfile <file>` runs elsewhere on top of it
configfile: str(Path(workflow.basedir) / "params.yaml")


# `snakemake --report reports/report.html`: this description, then every output flagged report() (common.smk)
report: "workflow/report/workflow.rst"


# the rules put the Python that runs Snakemake first on PATH (common.smk): cluster jobs need it too
envvars:
    "PATH",


include: "workflow/rules/common.smk"


wildcard_constraints:
    modality="|".join(MODALITIES),
    method="[a-z_]+",
    rate=r"\d\.\d\d",
    seed=r"\d+",
    fold=r"\d+",


include: "workflow/rules/config.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/splits.smk"
include: "workflow/rules/tune.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/table1.smk"


localrules:
    all,
    features,
    tuning,
    main_grid,
    missing_suite,
    isolation,
    fidelity,
    table1,
    table1_corpus,
    report,
    job_config,
    manifest,
    folds,
    masks,
    index,
    tune_select,
    tuning_summary,
    summary,
    build_report,


rule all:
    """Everything: every stage's outputs (every experiment of the table, mlaflow.pipeline.experiments) and the report."""
    input:
        [path for targets in STAGE_TARGETS.values() for path in targets],


rule features:
    """Corpus, manifest and one feature store per modality."""
    input:
        STAGE_TARGETS["features"],


rule tuning:
    """The folds and every mask, and each method's tuned values (Optuna, on validation accuracy)."""
    input:
        STAGE_TARGETS["tuning"],


rule main_grid:
    """The main grid and the complete-modality baselines, their metrics and plots."""
    input:
        STAGE_TARGETS["main_grid"],


rule missing_suite:
    """The missing-modality suite (Table 2 analogue)."""
    input:
        STAGE_TARGETS["missing_suite"],


rule isolation:
    """The isolation analysis (Figure 2 analogue)."""
    input:
        STAGE_TARGETS["isolation"],


rule fidelity:
    """The fidelity experiment: the paper's MLA against its released code."""
    input:
        STAGE_TARGETS["fidelity"],


rule table1:
    """The Table 1 analogue: every audio-video corpus of params table1, end to end (mlaflow.pipeline.table1)."""
    input:
        STAGE_TARGETS["table1"],


rule report:
    """reports/report.md and the report's metrics, plots and figures."""
    input:
        STAGE_TARGETS["report"],
