# What all rules share: the validated config, the experiment table, job config files and code inputs.
#
# Parameters reach jobs through Snakemake only: every job reads one config file (`*.config.json`), written by the
# `job_config` rule from the config Snakemake was given (params.yaml, then --configfile / --config on top), with
# exactly the keys that job computes from (mlaflow/jobconfigs.py). Its `params:` are that content, so the config
# job and what depends on it rerun exactly when the content changes; where Snakemake has no record of a config
# file (a copy DVC restored), a stale one is removed at parse time to the same effect (below). Jobs never read
# params.yaml themselves.
import json
import os
import sys
from pathlib import Path

from snakemake.logging import logger

import mlaflow.pipeline.experiments as E
import mlaflow.pipeline.params as P
import mlaflow.pipeline.table1 as table1
from mlaflow.pipeline.codedeps import code_files
from mlaflow.data import corpora
from mlaflow.features.protocol import encoder_module
from mlaflow.pipeline.jobconfigs import (
    INDEX_FILES,
    STAGE_DIRS,
    experiment_of_method,
    extracted_modalities,
    job_configs,
    mask_specs,
    stale_unrecorded_job_configs,
)
from mlaflow.methods import method_module
from mlaflow.report import catalog
from mlaflow.runtime import ENV_VAR as RUNTIME_ENV


def config_source():
    """Where the config Snakemake was given came from, as errors name it: params.yaml (unless replaced), each
    --configfile, and --config values on top."""
    settings = workflow.config_settings
    files = [] if settings.replace_workflow_config else ["params.yaml"]
    files += [os.path.relpath(f) for f in settings.configfiles]
    return " + ".join(files + (["--config"] if settings.config else []))


# defaults filled, --config strings coerced; fails naming the key and the file(s), before any job
_validated = P.validate(config, source=config_source())
config.clear()
config.update(_validated)

WORKFLOW_DIR = Path(workflow.basedir)
# Rules call `mlaflow <step>`: the CLI installed next to the Python that runs Snakemake (also in cluster jobs,
# which parse this file again), whatever else is on PATH.
_SEARCH_PATH = os.environ["PATH"]
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), _SEARCH_PATH])
CORPUS = corpora.corpus_kind(config)
MODALITIES = corpora.modalities(config)
SEEDS = config["train"]["seeds"]
FOLDS = config["splits"]["folds"]
CORPUS_ROOT = config["corpus"]["root"]
# How and where jobs run (params.yaml `runtime`): handed to every job through the environment, never through its
# config file, so that changing it reruns nothing (mlaflow/runtime.py). Threads and GPUs are the profile's.
os.environ[RUNTIME_ENV] = json.dumps(config["runtime"])
TABLE = E.experiment_table(config)
EXPERIMENTS = E.by_name(TABLE)
# workflow resources (not data) are found next to the Snakefile, whatever the working directory (-d)
PAPER_RESULTS = os.path.relpath(WORKFLOW_DIR / config["report"]["paper_results"])


def code(*entries):
    """The source files the given mlaflow modules run (their static imports; see mlaflow.pipeline.codedeps), relative to
    the working directory: moving the checkout (a fresh clone elsewhere, a DVC temporary copy) changes nothing.
    """
    return [os.path.relpath(f) for f in code_files(*entries)]


# ------------------------------------------------------------------------------------------- paths


def model_path(modality):
    model = config["features"][modality]["model"]
    return f"data/models/{modality}" if model == "embedded" else model


def feature_path(modality):
    return config["features"][modality]["precomputed"] or f"data/features/{modality}.h5"


FEATURE_FILES = [feature_path(m) for m in MODALITIES]
EXTRACTED = extracted_modalities(config)

# What one training job covers (runtime.job_group): "cell" all seeds x folds of a method at a missing rate,
# "seed" the folds of one seed, "run" one run. Results are the same whatever the grouping: a job trains the runs
# it writes (mlaflow train reads them off its outputs), so regrouping finds every run up to date.
JOB_GROUP = config["runtime"]["job_group"]
JOB_NAME = {"seed": "_seed{seed}", "run": "_seed{seed}_fold{fold}"}.get(JOB_GROUP, "")


def experiment_runs(experiment):
    return [
        E.run_path(experiment, method, rate, seed, fold)
        for method, rate in experiment.cells
        for seed in SEEDS
        for fold in FOLDS
    ]


def stage_runs(stage):
    return [path for experiment in TABLE if experiment.stage == stage for path in experiment_runs(experiment)]


def stage_outputs(stage):
    """What the training jobs of a stage declare: with job_group `method` each job's folder of runs
    (<root>/<method>), else the run files themselves."""
    if JOB_GROUP != "method":
        return stage_runs(stage)
    return [f"{e.root}/{method}" for e in TABLE if e.stage == stage for method in e.methods]


def job_outputs(root, method, rate, seed="{seed}", fold="{fold}"):
    """The run files one training job writes (runtime.job_group cell, seed or run decides how many)."""
    seeds = SEEDS if JOB_GROUP == "cell" else [seed]
    folds = FOLDS if JOB_GROUP in ("cell", "seed") else [fold]
    return [f"{root}/{method}/missing_{rate}/seed{s}_fold{f}.json" for s in seeds for f in folds]


def method_run_files(wildcards):
    """The run files of a method's job with job_group `method`: every cell of its experiment, seeds x folds."""
    experiment = experiment_of(wildcards)
    return [
        E.run_path(experiment, wildcards.method, r, s, f)
        for r in experiment.rates(wildcards.method)
        for s in SEEDS
        for f in FOLDS
    ]


def method_masks(wildcards):
    experiment = experiment_of(wildcards)
    return [E.mask_path(experiment.masks, rate) for rate in experiment.rates(wildcards.method)]


# every experiment's training jobs: the `train` rule matches {root}/{method}/missing_{rate}/...
ROOTS = sorted({experiment.root for experiment in TABLE})
EXPERIMENT_OF = experiment_of_method(config)
MASK_SPECS = mask_specs(config)
MASK_FILES = sorted(
    {E.mask_path(experiment.masks, rate) for experiment in TABLE for _, rate in experiment.cells}
    | {
        E.mask_path(experiment.masks, rate)
        for experiment in TABLE
        if experiment.test_time_shift
        for rate in config["masks"]["missing_rates"]
    }
)


# ------------------------------------------------------------------------------------------- job configs


JOB_CONFIGS = job_configs(config)
# A job config whose content is out of date and that Snakemake has no record of (a copy DVC restored) goes now, so
# that `job_config` writes it again and everything computed from it reruns; with a record, the params trigger
# reruns it (and a dry run changes nothing).
for _path in stale_unrecorded_job_configs(JOB_CONFIGS):
    logger.info(f"{_path}: its params changed; removed, the job_config rule writes it again")
    os.remove(_path)


def job_config(wildcards):
    return JOB_CONFIGS[f"{wildcards.path}.config.json"]


def experiment_of(wildcards):
    return EXPERIMENT_OF[(wildcards.root, wildcards.method)]


def train_config_file(wildcards):
    return E.job_config_path(experiment_of(wildcards), wildcards.method)


def train_masks(wildcards):
    return E.mask_path(experiment_of(wildcards).masks, float(wildcards.rate))


def shift_masks(wildcards):
    """Test-time shift: runs of main, complete and suite are also tested at every missing rate."""
    experiment = experiment_of(wildcards)
    if not experiment.test_time_shift:
        return []
    return [E.mask_path(experiment.masks, rate) for rate in config["masks"]["missing_rates"]]


def train_code(wildcards):
    return code("mlaflow.train.job", method_module(wildcards.method))


# ------------------------------------------------------------------------------------------- tuning

TUNED = E.tuned_methods(config)
TUNED_FILES = [E.tuned_values_path(method) for method in TUNED]


def tuned_values(wildcards):
    """The tuning stage's chosen values of a training job's method (none with tuning.enabled false)."""
    return [E.tuned_values_path(wildcards.method)] if wildcards.method in TUNED else []


def tuning_masks(wildcards):
    masks = E.tuning_experiment(config, wildcards.method).masks
    return [E.mask_path(masks, rate) for rate in E.tuning_rates(config, wildcards.method)]


def tune_code(wildcards):
    return code("mlaflow.tune.study", method_module(wildcards.method))


def worker_files(method):
    return [f"data/tuning/{method}/worker{k}.json" for k in range(config["runtime"]["tuning_workers"])]


def study_record(wildcards):
    """What the choice waits for: worker 0's record. Worker 0 stops only once the study holds its budget, so the
    other workers (runtime.tuning_workers, targets of the tuning stage) only speed it up; raising their number
    adds their jobs and reruns nothing downstream."""
    return worker_files(wildcards.method)[0]


def tuning_journal(wildcards):
    """Optuna's journal file of the method's study (not a declared output: it outlives a failed worker, whose
    trials a rerun keeps; unused when runtime.tuning_storage names an RDB)."""
    return f"data/tuning/{wildcards.method}/study.journal"


def index_tuned(wildcards):
    """The chosen values a stage's index checks its runs against."""
    return [
        E.tuned_values_path(m)
        for m in JOB_CONFIGS[f"{wildcards.stage_dir}/index.config.json"]["tuned_methods"]
    ]


def manifest_source():
    """What the manifest is read from: the corpus tree, or kind features' label table (mlaflow.data.corpora)."""
    return corpora.manifest_source(config)


def manifest_inputs():
    """Other files the manifest depends on, as the corpus kind says (CREMA-D's split file)."""
    return corpora.manifest_inputs(config)


def modality_model(wildcards):
    return model_path(wildcards.modality)


def encoder_code(wildcards):
    return code(encoder_module(config["features"][wildcards.modality]["encoder"], wildcards.modality))


def extract_code(wildcards):
    return code("mlaflow.features.extract") + encoder_code(wildcards)


STAGE_OF_DIR = {root: stage for stage, root in STAGE_DIRS.items()}


def stage_runs_of_dir(wildcards):
    return stage_runs(STAGE_OF_DIR[wildcards.stage_dir])


def stage_outputs_of_dir(wildcards):
    return stage_outputs(STAGE_OF_DIR[wildcards.stage_dir])


# The report's files, each declared once in mlaflow/report/catalog.py with the rule that writes it; the report
# rules write theirs whatever ran (a section without data says so), so that every DVC output exists.
SUMMARY_OUTPUTS = [output.path for output in catalog.outputs_of("summary")]
REPORT_OUTPUTS = [output.path for output in catalog.outputs_of("build_report")]


def report_outputs(rule):
    """The outputs of `rule` in the catalog, those with a category flagged for `snakemake --report` (captions
    are relative to workflow/rules/, where the rules that call this are)."""
    return [_for_report(output) if output.category else output.path for output in catalog.outputs_of(rule)]


def _for_report(output):
    # (not at the start of a line: Snakemake's parser would take it for the `report:` directive)
    return report(output.path, caption=f"../report/{output.caption}", category=output.category)


def report_code():
    """The report job's code: its modules and the modules of the methods that run, whose classes say what the
    report writes of them (mlaflow.report.complete, suite: read through the registry, so not static imports).
    """
    return code("mlaflow.report.build", *(method_module(method) for method in sorted(P.used_methods(config))))


def _under(*folders):
    """The job config files inside the given folders (they belong to the DVC output of those folders)."""
    return [path for path in JOB_CONFIGS if path.startswith(tuple(f"{folder}/" for folder in folders))]


# Every file of every stage's DVC outputs, so that a stage's target regenerates any of them that is missing
# (Snakemake does not remake a missing intermediate file whose consumers are up to date).
STAGE_TARGETS = {
    "features": [
        *([CORPUS_ROOT] if CORPUS.generator_module else []),
        *([corpora.FACES_DIR] if corpora.cuts_faces(config) else []),
        "data/manifest/manifest.csv",
        *(model_path(m) for m in EXTRACTED if config["features"][m]["model"] == "embedded"),
        *(f"data/features/{m}.h5" for m in EXTRACTED),
        *_under("data/corpus", "data/manifest", "data/models", "data/features"),
    ],
    # the splits and masks are made here: the tuning trials train on them
    "tuning": [
        "data/splits/folds.csv",
        *MASK_FILES,
        *TUNED_FILES,
        *(path for method in TUNED for path in worker_files(method)),
        *(output.path for output in catalog.outputs_of("tuning_summary")),
        "data/tuning/summary.config.json",
        *_under("data/splits", "data/tuning"),
    ],
    "main_grid": [
        *stage_outputs("main_grid"),
        INDEX_FILES["main_grid"],
        *SUMMARY_OUTPUTS,
        "reports/summary.config.json",
        *_under("data/runs"),
    ],
    **{
        stage: [*stage_outputs(stage), INDEX_FILES[stage], *_under(STAGE_DIRS[stage])]
        for stage in ("missing_suite", "isolation", "fidelity")
    },
    # the corpora of the Table 1 and Table 4 analogues, each a workflow of its own (mlaflow.pipeline.table1)
    "table1": [
        *(
            f"{table1.folder(entry)}/reports/{name}"
            for entry in table1.entries(config)
            for name in ("metrics.json", "report.md", "duration.json")
        ),
        *_under(table1.FOLDER),
    ],
    "report": [*REPORT_OUTPUTS, "reports/report.config.json"],
}
TABLE1_WORKFLOW_FILES = sorted(
    os.path.relpath(p)
    for folder in ("workflow/rules", "workflow/schemas")
    for p in (WORKFLOW_DIR / folder).iterdir()
    if p.is_file()
)
TABLE1_CODE = code(*table1.code_entries(config))


# Names and paths from the config are checked at parse time (mlaflow.pipeline.params); this makes sure of the result: no
# job writes outside the working directory, whatever a future name or path option gives.
P.check_outputs_inside([*JOB_CONFIGS, *(path for targets in STAGE_TARGETS.values() for path in targets)])


def write_job_config(path, content, log):
    """The `job_config` rule's work: the job's config file, and which sections it holds in the log."""
    from mlaflow.io import write_json

    write_json(path, content, sort_keys=False)
    Path(log).write_text(f"{path}: sections {', '.join(content)}\n")
