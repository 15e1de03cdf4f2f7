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


localrules: all, features, manifest, folds, masks, report


rule all:
    input:
        REPORT_OUTPUTS,


rule features:
    input:
        [feature_path(m) for m in MODALITIES],
