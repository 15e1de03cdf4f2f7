"""`mlaflow <step>`: the one command line the Snakemake rules call, one step per rule.

Every step reads the config file of its job (`--config`, a JSON file the workflow writes from the config
Snakemake was given: see workflow/rules/common.smk) and the input files named on the command line, and writes
its outputs atomically. This module only parses arguments, has the long-running steps stop with the process
that started them (`die_with_parent`) and calls one function of the step's module; it is not a code input of
any job (mlaflow.pipeline.codedeps), so editing it reruns nothing.

On a fresh machine you do not call these by hand: `make reproduce` runs the whole workflow, `make test` the
tests (README.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlaflow.errors import InputError, MlaflowError

if TYPE_CHECKING:
    from mlaflow.runtime import Runtime
    from mlaflow.train.inputs import JobFiles

log = logging.getLogger("mlaflow")

# the process that started this one (a Snakemake job's shell), read as early as possible: die_with_parent tells
# by it whether that process died before the kernel was asked to watch it
_PARENT = os.getppid()
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

NO_STEP = """mlaflow: the steps of the mlaflow workflow, one per Snakemake rule (`mlaflow --help` lists them).

To run the workflow on a fresh machine, from the repository root:
  make reproduce    # installs the pinned dependencies into .venv, then runs `dvc repro` (README.md)
  make test         # runs the test suite
"""


def _config(path: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(
            path,
            f"cannot read the job's config ({err})",
            "let the workflow write it (snakemake or dvc repro); do not edit it by hand",
        ) from err


def runtime_from_environment(threads: int | None) -> Runtime:
    """The job's runtime settings (mlaflow.runtime): MLAFLOW_RUNTIME, set by the Snakefile to params.yaml's
    `runtime` section (validated, defaults filled; unset outside Snakemake: the defaults), and the job's
    threads (None: 1)."""
    from mlaflow.pipeline.params import runtime_settings
    from mlaflow.runtime import ENV_VAR, Runtime

    text = os.environ.get(ENV_VAR)
    try:
        settings = runtime_settings(json.loads(text) if text else {})
    except json.JSONDecodeError as err:
        raise InputError(
            None, f"{ENV_VAR} is not JSON ({err})", f"unset {ENV_VAR}, or let the Snakefile set it"
        ) from err
    return Runtime(settings["device"], settings["batch_runs"], settings["tuning_storage"], threads or 1)


def die_with_parent() -> None:
    """Have the kernel stop this process (SIGTERM) when the process that started it dies; Linux only, elsewhere
    nothing. Killing a job's shell would otherwise leave its long-running step (train, tune, extract) running,
    an orphan that a rerun of the job would race (issue 22; mlaflow.joblock makes such a rerun fail instead).
    Precisely, the kernel signals when the thread that started this process ends: a job's shell has one."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl(PR_SET_PDEATHSIG): {os.strerror(code)}")
    # a parent that died before prctl sends no signal: this process was already handed to another one
    if os.getppid() != _PARENT:
        raise SystemExit(f"mlaflow: the process that started this step (pid {_PARENT}) is gone: not starting")


def _corpus(args, config):
    import importlib

    generate_corpus = importlib.import_module(config["generator"]).generate_corpus
    summary = generate_corpus(Path(args.out), config["settings"], threads=args.threads)
    log.info("embedded corpus written to %s: %s", args.out, summary)


def _faces(args, config):
    from mlaflow.data.faces import cut_faces

    cut_faces(args.corpus, args.out, config["settings"], threads=args.threads or 1)


def _manifest(args, config):
    from mlaflow.data.manifest import write_manifest

    write_manifest(config, args.source, args.out)


def _folds(args, config):
    from mlaflow.data.folds import write_folds

    write_folds(config, args.manifest, args.out)


def _masks(args, config):
    from mlaflow.data.masks import make_masks

    make_masks(config, args.manifest, args.missing_rate, args.out)


def _build_encoder(args, config):
    from mlaflow.features.extract import build_encoder_job

    build_encoder_job(config, args.out)
    log.info(
        "embedded (randomly initialised, NOT pretrained) %s encoder saved to %s", config["modality"], args.out
    )


def _extract(args, config):
    die_with_parent()
    from mlaflow.features.extract import extraction_job

    runtime = runtime_from_environment(args.threads)
    log.info(
        "%s features: %s",
        config["modality"],
        extraction_job(
            config,
            args.manifest,
            args.model,
            args.out,
            runtime.threads,
            runtime.device,
            shard=(args.shard, args.shards),
        ),
    )


def _merge_features(args, config):
    from mlaflow.features.merge import merge_job

    merge_job(config, args.manifest, args.shards, args.out)


def _job_files(args) -> JobFiles:
    from mlaflow.train.inputs import JobFiles

    return JobFiles(
        manifest=args.manifest,
        features=args.features,
        folds=args.folds,
        masks=args.masks,
        shift_masks=getattr(args, "shift_masks", []),
        tuned=getattr(args, "tuned", None),
        code=args.code,
    )


RUN_FILE = re.compile(r"missing_(\d\.\d\d)/seed(\d+)_fold(\d+)\.json")


def runs_of(outputs: list[str]) -> list[tuple[str, int, int]]:
    """(missing rate label, seed, fold) of each run file (`.../missing_<rate>/seed<s>_fold<f>.json`): what a
    training job trains is what it writes."""
    runs = []
    for out in outputs:
        match = RUN_FILE.fullmatch("/".join(Path(out).parts[-2:]))
        if match is None:
            raise InputError(out, "is not a run file (missing_<rate>/seed<s>_fold<f>.json)", "fix --out")
        runs.append((match[1], int(match[2]), int(match[3])))
    return runs


def _train(args, config):
    die_with_parent()
    from mlaflow.train.job import run_training_job

    run_training_job(
        config, _job_files(args), runs_of(args.out), args.out, runtime_from_environment(args.threads)
    )


def _index(args, config):
    from mlaflow.train.index import write_index

    write_index(config, args.runs, args.out, args.tuned)


def _tune(args, config):
    die_with_parent()
    from mlaflow.tune.study import run_worker

    run_worker(
        config, args.worker, _job_files(args), args.journal, args.out, runtime_from_environment(args.threads)
    )


def _tune_select(args, config):
    from mlaflow.tune.study import select

    storage = runtime_from_environment(None).tuning_storage
    chosen = select(config, args.journal, args.workers, args.out, storage)
    log.info(
        "%s: chose %s (validation accuracy %.4f; untuned %.4f)",
        chosen["method"],
        chosen["values"],
        chosen["validation_accuracy"],
        chosen["untuned"]["validation_accuracy"],
    )


def _tuning_summary(args, config):
    from mlaflow.tune.study import write_summary

    write_summary(config, args.chosen, args.out)


def _summary(args, config):
    from mlaflow.report.build import build_summary

    build_summary(config, args.indexes, args.paper, Path(args.out_dir))


def _report(args, config):
    from mlaflow.report.build import build_report

    build_report(config, args.indexes, args.paper, args.features, args.masks, Path(args.out_dir), args.tuned)


def _verify(args, config):
    from mlaflow.pipeline.integrity import verify

    log.info("%d output files read back whole", verify(args.paths))


def _settle(args, config):
    import yaml

    from mlaflow.pipeline import params as P
    from mlaflow.pipeline.jobconfigs import job_configs
    from mlaflow.pipeline.settle import settle

    # not a Snakemake job: the DVC stage's first command, reading the params.yaml that DVC tracks and that
    # Snakemake is about to read, to know which job config files are current
    params_path = Path(args.params)
    if not params_path.exists():
        raise InputError(params_path, "not found", "run from the repository root, or pass --params")
    config = P.validate(yaml.safe_load(params_path.read_text()))
    summary = settle(Path("."), job_configs(config), force=args.force)
    if "skipped" in summary:
        log.info("nothing to settle: %s", summary["skipped"])


# ------------------------------------------------------------------------------------------- the steps


@dataclass(frozen=True)
class Step:
    """One step of the command line: its function, its help (a line, what it reads and what it writes) and its
    arguments beyond --config (the job's config file, which every step but `config=False` ones takes)."""

    name: str
    func: Callable
    help: str
    reads: str
    writes: str
    arguments: tuple[tuple[tuple[str, ...], dict], ...]
    config: bool = True


def arg(*flags: str, **options) -> tuple[tuple[str, ...], dict]:
    """One argument, as `ArgumentParser.add_argument` takes it."""
    return flags, options


CONFIG = arg("--config", required=True, help="the job's config file (JSON, written by the workflow)")
OUT = arg("--out", required=True)
MANIFEST = arg("--manifest", required=True)
TORCH_THREADS = arg("--threads", type=int, default=None, help="torch CPU threads (default: 1)")
OUT_DIR = arg("--out-dir", default="reports")


def job_inputs(masks: tuple[tuple[str, ...], dict]) -> tuple:
    """The input files of a training or tuning job (mlaflow.train.inputs.JobFiles), and its threads."""
    return (
        MANIFEST,
        arg("--features", nargs="+", required=True, help="one store per modality, in the corpus's order"),
        arg("--folds", required=True),
        masks,
        arg("--code", nargs="*", default=[], help="the source files the job runs (part of its resume key)"),
        TORCH_THREADS,
    )


STEPS = (
    Step(
        "corpus",
        _corpus,
        "generate an embedded corpus in its release's layout (IEMOCAP or CREMA-D)",
        "its config (corpus.embedded or corpus.embedded_cremad)",
        "the corpus tree at --out (wav, face frames; IEMOCAP: transcripts, labels)",
        (OUT, arg("--threads", type=int, default=None, help="worker threads (default: up to 2)")),
    ),
    Step(
        "faces",
        _faces,
        "cut each utterance's face frames from the IEMOCAP dialog videos (corpus.face_frames: from_video)",
        "its config (corpus.faces) and the corpus tree at --corpus (dialog videos, EmoEvaluation)",
        "face frames at --out/SessionN/<dialog>/<utterance>/000.png ..., summary.json, contact_sheet.png",
        (
            arg("--corpus", required=True),
            OUT,
            arg("--threads", type=int, default=None, help="worker threads"),
        ),
    ),
    Step(
        "manifest",
        _manifest,
        "turn a corpus into the manifest (one row per utterance kept)",
        "the corpus tree (or kind features' label table) at --source",
        "the manifest CSV at --out",
        (arg("--source", required=True), OUT),
    ),
    Step(
        "folds",
        _folds,
        "leave-one-session-out folds with a validation split",
        "the manifest",
        "the folds CSV (one column fold<k>: train / val / test)",
        (MANIFEST, OUT),
    ),
    Step(
        "masks",
        _masks,
        "missing-modality masks of one specification and missing rate, one per seed",
        "the manifest",
        "an HDF5 file with one bool [N, M] mask per seed",
        (MANIFEST, arg("--missing-rate", type=float, required=True), OUT),
    ),
    Step(
        "build-encoder",
        _build_encoder,
        "build an embedded (randomly initialised, NOT pretrained) encoder",
        "its config",
        "a model directory in the save_pretrained layout",
        (OUT,),
    ),
    Step(
        "extract",
        _extract,
        "extract utterance-level features of one modality into HDF5",
        "the manifest and the model directory (embedded or pretrained)",
        "the feature store (HDF5; resumable from its .partial.h5); with --shards N > 1, shard --shard's rows",
        (
            MANIFEST,
            arg("--model", required=True),
            OUT,
            TORCH_THREADS,
            arg("--shard", type=int, default=1, help="which shard of --shards to extract (1..N; default 1)"),
            arg(
                "--shards",
                type=int,
                default=1,
                help="how many shards the extraction is split into (runtime.extraction_shards; default 1)",
            ),
        ),
    ),
    Step(
        "merge-features",
        _merge_features,
        "merge the shard stores of a sharded extraction into the modality's feature store",
        "the extraction's config, the manifest and every shard store (mlaflow extract --shard k --shards N)",
        "the feature store (HDF5), the same as one extraction job writes; resumable from its .partial.h5",
        (MANIFEST, arg("--shards", nargs="+", required=True, help="the shard stores, in shard order"), OUT),
    ),
    Step(
        "train",
        _train,
        "train the runs of one method (at the missing rates of --masks), stacked",
        "the manifest, one feature store per modality, the folds, the masks (and the test-time shift masks)",
        "one metrics JSON per run, missing_<rate>/seed<s>_fold<f>.json: the runs the job trains",
        (
            *job_inputs(arg("--masks", nargs="+", required=True)),
            arg(
                "--shift-masks",
                nargs="*",
                default=[],
                help="mask files of the test-time shift's missing rates (the config lists them)",
            ),
            arg(
                "--tuned",
                nargs="?",
                default=None,
                help="the method's chosen values (data/tuning/<method>.json), if tuned",
            ),
            arg("--out", nargs="+", required=True),
        ),
    ),
    Step(
        "tune",
        _tune,
        "one worker of a method's tuning study: Optuna trials on validation accuracy until the budget is met",
        "the manifest, the feature stores, the folds, the tuning rates' masks; the study (journal or RDB)",
        "the worker's record (JSON); its trials go to the study",
        (
            arg("--worker", type=int, required=True),
            *job_inputs(arg("--masks", nargs="+", required=True)),
            arg(
                "--journal", required=True, help="Optuna journal file (unless runtime.tuning_storage is set)"
            ),
            OUT,
        ),
    ),
    Step(
        "tune-select",
        _tune_select,
        "a method's chosen values: the best of its study's first tuning.trials completed trials",
        "the workers' records and the study",
        "data/tuning/<method>.json",
        (arg("--workers", nargs="+", required=True), arg("--journal", required=True), OUT),
    ),
    Step(
        "tuning-summary",
        _tuning_summary,
        "the tuning stage's DVC metrics: chosen values and validation accuracy tuned and untuned",
        "every method's chosen values",
        "reports/tuning.json",
        (arg("--chosen", nargs="*", default=[]), OUT),
    ),
    Step(
        "index",
        _index,
        "check a stage's runs against their jobs' configs and list them",
        "the stage's run files",
        "the stage's index (JSON: its experiments and runs)",
        (
            arg("--runs", nargs="*", default=[]),
            arg("--tuned", nargs="*", default=[], help="the tuned methods' chosen values"),
            OUT,
        ),
    ),
    Step(
        "summary",
        _summary,
        "the main grid's DVC metrics and plots",
        "the main grid's index and its runs",
        "reports/metrics.json, reports/plots/accuracy_vs_missing_rate.csv, its figure",
        (
            arg("--indexes", nargs="+", required=True),
            arg("--paper", required=True, help="the paper's figures (data/reference/paper_results.yaml)"),
            OUT_DIR,
        ),
    ),
    Step(
        "report",
        _report,
        "reports/report.md and the suite's, isolation's and fidelity's metrics and plots",
        "every stage's index and runs, the feature stores and masks (provenance)",
        "reports/",
        (
            arg("--indexes", nargs="+", required=True),
            arg("--paper", required=True),
            arg("--features", nargs="+", required=True),
            arg("--masks", nargs="+", required=True),
            arg("--tuned", nargs="*", default=[], help="every tuned method's chosen values"),
            OUT_DIR,
        ),
    ),
    Step(
        "verify",
        _verify,
        "check that every file of a stage's outputs reads back whole (run by each DVC stage)",
        "the given files and folders (HDF5, JSON, CSV)",
        "nothing; fails naming the damaged files",
        (arg("paths", nargs="+"),),
        config=False,
    ),
    Step(
        "settle",
        _settle,
        "in a copy DVC restored (dvc exp run --queue/--temp, git clone + dvc pull) "
        "with no Snakemake records: give what dvc.lock vouches for one old modification time, so that "
        "Snakemake reruns exactly what a change invalidates (run by each DVC stage before Snakemake; "
        "does nothing where Snakemake has records)",
        "dvc.lock, .dvcignore, params.yaml, the files dvc.lock names, the job config files",
        "modification times only",
        (
            arg("--params", default="params.yaml", help="the params DVC tracks (default: params.yaml)"),
            arg(
                "--force",
                action="store_true",
                help="also where Snakemake has records: "
                "after `git checkout` + `dvc checkout` of another commit",
            ),
        ),
        config=False,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlaflow", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="step", metavar="STEP")
    for step in STEPS:
        p = sub.add_parser(
            step.name,
            help=step.help,
            description=f"{step.help}.\n\nReads: {step.reads}\nWrites: {step.writes}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        arguments = (CONFIG, *step.arguments) if step.config else step.arguments
        for flags, options in arguments:
            p.add_argument(*flags, **options)
        p.set_defaults(func=step.func)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.step is None:
        print(NO_STEP, end="")
        return 0
    try:
        args.func(args, _config(args.config) if getattr(args, "config", None) else None)
    except MlaflowError as err:
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
