# mlaflow: corpus -> features (HDF5) -> masked splits -> training -> report.
# Every parameter comes from params.yaml (validated at parse time); rules are thin and call `python -m mlaflow`.
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/splits.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


localrules: all, analyses, main, features, manifest, folds, masks, summary, report


rule all:
    """Everything: the main grid, the missing-modality suite, the isolation analysis, the fidelity experiment and
    the report."""
    input:
        SUMMARY_OUTPUTS,
        REPORT_OUTPUTS,


rule analyses:
    """The missing-modality suite (Table 2, every missing rate of missing_suite) and the isolation analysis."""
    input:
        SUITE_RUN_FILES,
        ISOLATION_RUN_FILES,


rule main:
    """The main grid (methods x missing rates x seeds x folds), its metrics and plots, and every mask."""
    input:
        SUMMARY_OUTPUTS,
        MASK_FILES,


rule features:
    input:
        [feature_path(m) for m in MODALITIES],
