"""Helpers of tests/slurm/run_slurm_test.sh (the real-SLURM test); run with the venv's Python.

render-conf TEMPLATE OUT_DIR --state-dir D --munge-socket S --gpus N   slurm.conf + gres.conf for this host
workspace REPO DEST [--without-table1]                                    copy of the workflow with tiny params
compare A B                                                               metrics/validation of every run equal
jobs SNAKEMAKE_LOG SQUEUE CTLD_LOG SLURM_LOGDIR --workspace W [--expect-gpus]  every job ran on SLURM and succeeded
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import yaml

# tests/: the tiny workflow shared with test_workflow
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_workflow import copy_workflow, tiny_params

from mlaflow.data import corpora
from mlaflow.pipeline import params as P
from mlaflow.pipeline.experiments import experiment_table, tuned_methods

# The group of workflow/profiles/slurm (build_encoder x3); corpus, extract, tune and train go to SLURM, the other
# rules are localrules in the Snakefile (table1_corpus too: a Table 1 workflow runs where Snakemake runs).
ENCODER_GROUP = "encoders"
TRAINING_RULES = ("extract", "tune", "train")  # the GPU rules


def training_jobs(params: dict) -> int:
    """How many train jobs the workflow submits: one per method of an experiment (runtime.job_group `method`),
    else one per cell, per seed of a cell, or per run (workflow/rules/common.smk)."""
    table = experiment_table(params)
    group = params["runtime"]["job_group"]
    if group == "method":
        return sum(len(experiment.methods) for experiment in table)
    per_cell = {"cell": 1, "seed": len(params["train"]["seeds"])}.get(
        group, len(params["train"]["seeds"]) * len(params["splits"]["folds"])
    )
    return sum(len(experiment.cells) for experiment in table) * per_cell


def render_conf(args) -> None:
    """Fill the template with this host's name, CPUs and memory (`slurmd -C`, as slurmd will report them)."""
    hardware = subprocess.run(
        ["slurmd", "-C"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    fields = dict(item.split("=", 1) for item in hardware.split())
    nodename = fields.pop("NodeName", None) or socket.gethostname().split(".")[0]
    node_hardware = " ".join(
        f"{k}={fields[k]}"
        for k in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
        if k in fields
    )
    values = {
        "NODENAME": nodename,
        "NODE_HARDWARE": node_hardware,
        "STATE_DIR": args.state_dir,
        "MUNGE_SOCKET": args.munge_socket,
        "GPUS": str(args.gpus),
        "CTLD_PORT": str(args.ctld_port),
        "SLURMD_PORT": str(args.slurmd_port),
    }
    text = Path(args.template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        sys.exit(f"render-conf: unfilled fields {left} in {args.template}")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "slurm.conf").write_text(text)
    # The node's GPUs: SLURM drops a GPU without a device file and wants a character device, so each "GPU" is
    # a link to /dev/null. Enough for the scheduler, --gpus and CUDA_VISIBLE_DEVICES; there is no CUDA device.
    devices = Path(args.state_dir) / "dev"
    devices.mkdir(parents=True, exist_ok=True)
    for i in range(args.gpus):
        (devices / f"gpu{i}").unlink(missing_ok=True)
        (devices / f"gpu{i}").symlink_to("/dev/null")
    (out / "gres.conf").write_text(
        f"# written by tests/slurm/run_slurm_test.sh\nAutoDetect=off\nNodeName={nodename} Name=gpu File={devices}/gpu[0-{args.gpus - 1}]\n"
    )
    print(
        f"slurm.conf: node {nodename} ({node_hardware}, {args.gpus} GPU slots without devices), "
        f"state in {args.state_dir}"
    )


def workspace(args) -> None:
    repo, dest = Path(args.repo), Path(args.dest)
    dest.mkdir(parents=True)
    copy_workflow(repo, dest)
    params = tiny_params(repo, seeds=(0,))
    if args.without_table1:
        # the Table 1 workflows are localrules (they run where Snakemake runs) and `compare` does not read them:
        # the local run that the SLURM run is compared with needs no second copy of them
        params["table1"]["enabled"] = False
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def compare(args) -> None:
    a, b = Path(args.a), Path(args.b)
    dirs = ("runs", "suite", "isolation", "fidelity")
    runs_a = sorted(p.relative_to(a) for d in dirs for p in (a / "data" / d).rglob("seed*_fold*.json"))
    runs_b = sorted(p.relative_to(b) for d in dirs for p in (b / "data" / d).rglob("seed*_fold*.json"))
    if not runs_a or runs_a != runs_b:
        sys.exit(
            f"compare: different run files:\n  {a}: {[str(p) for p in runs_a]}\n  {b}: {[str(p) for p in runs_b]}"
        )
    for rel in runs_a:
        ra, rb = json.loads((a / rel).read_text()), json.loads((b / rel).read_text())
        for field in ("metrics", "validation"):
            if field not in ra:
                sys.exit(f"compare: {rel} has no `{field}` field")
            if ra[field] != rb[field]:
                sys.exit(f"compare: `{field}` of {rel} differs:\n  SLURM: {ra[field]}\n  local: {rb[field]}")
    print(
        f"compare: {len(runs_a)} run files, `metrics` and `validation` identical between the SLURM and the "
        f"local run (e.g. {runs_a[0]}: accuracy {json.loads((a / runs_a[0]).read_text())['metrics']['accuracy']})"
    )


def jobs(args) -> None:
    """Every job Snakemake submitted is a SLURM job that ran, completed with exit code 0 and left its log."""
    log = Path(args.snakemake_log).read_text()
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", log)
    if not submitted:
        sys.exit("jobs: the Snakemake log shows no SLURM submission")
    # squeue --states=all -O JobID,State,tres-per-job,Comment (finished jobs stay listed for MinJobAge seconds)
    rows = {}
    for line in Path(args.squeue_dump).read_text().splitlines():
        parts = line.split()
        if len(parts) == 4:
            jobid, state, tres, comment = parts
            rows[jobid] = (jobid, state, comment, tres)
    ctld = Path(args.ctld_log).read_text()
    rules = {}
    for jobid in submitted:
        if jobid not in rows:
            sys.exit(f"jobs: SLURM job {jobid} is not in squeue's history")
        _, state, comment, tres = rows[jobid]
        if state != "COMPLETED":
            sys.exit(f"jobs: SLURM job {jobid} ({comment}) is {state}")
        if not re.search(rf"_job_complete: JobId={jobid} WEXITSTATUS 0\b", ctld):
            sys.exit(f"jobs: slurmctld did not log exit status 0 for job {jobid}")
        logs = list(Path(args.slurm_logdir).rglob(f"{jobid}.log"))
        if not logs:
            sys.exit(f"jobs: no SLURM log file {jobid}.log under {args.slurm_logdir}")
        name = re.sub(r"^rule_", "", comment).split("_wildcards_")[0]
        if name.startswith(f"{ENCODER_GROUP}_"):  # a group job: rule_<group>_<rules>
            name = f"group {ENCODER_GROUP}"
        rules.setdefault(name, []).append((jobid, tres))
    params = P.validate(yaml.safe_load((Path(args.workspace) / "params.yaml").read_text()))
    expected = {
        "corpus": 1,
        "faces": 1 if corpora.cuts_faces(params) else 0,  # the face frames cut from the dialog videos
        f"group {ENCODER_GROUP}": 1,
        "extract": 3,
        "tune": len(tuned_methods(params)) * params["runtime"]["tuning_workers"],
        "train": training_jobs(params),
    }
    expected = {name: n for name, n in expected.items() if n}
    counts = {name: len(entries) for name, entries in rules.items()}
    if counts != expected:
        sys.exit(f"jobs: submitted {counts}, expected {expected} (the other rules are localrules)")
    print(
        f"jobs: {len(submitted)} SLURM jobs, all COMPLETED (squeue history) with exit status 0 (slurmctld log), "
        f"one SLURM log each:"
    )
    for name, entries in sorted(rules.items()):
        tres = ",".join(sorted({t for _, t in entries}))
        print(
            f"  {name:16s} x{len(entries)}  jobids {','.join(j for j, _ in entries):10s} tres-per-job {tres}"
        )
    calls = {}
    for call in re.findall(r"sbatch call: (.*)", log):
        call = re.sub(r" --wrap=.*", "", call)
        comment = re.search(r"--comment (\S+)", call)
        key = re.sub(r"_wildcards_.*", "", comment.group(1)) if comment else "?"
        calls.setdefault(key, re.sub(r"--job-name \S+ --output \S+ ", "", call))
    print("jobs: sbatch calls, one per rule (plugin log, --wrap=... cut):")
    for _, call in sorted(calls.items()):
        print(f"  {call}")
    if args.expect_gpus:
        for rule in TRAINING_RULES:
            if any("gpu" not in t for _, t in rules.get(rule, [])):
                sys.exit(f"jobs: a {rule} job was submitted without a GPU request")
        for rule in set(rules) - set(TRAINING_RULES):
            if any("gpu" in t for _, t in rules[rule]):
                sys.exit(f"jobs: a {rule} job asked for a GPU")
        print("jobs: extract, tune and train asked SLURM for GPUs (--gpus), the other rules did not")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("render-conf")
    p.add_argument("template")
    p.add_argument("out_dir")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--munge-socket", required=True)
    p.add_argument("--gpus", type=int, default=2)
    p.add_argument("--ctld-port", type=int, default=6817)
    p.add_argument("--slurmd-port", type=int, default=6818)
    p.set_defaults(func=render_conf)
    p = sub.add_parser("workspace")
    p.add_argument("repo")
    p.add_argument("dest")
    p.add_argument("--without-table1", action="store_true")
    p.set_defaults(func=workspace)
    p = sub.add_parser("compare")
    p.add_argument("a")
    p.add_argument("b")
    p.set_defaults(func=compare)
    p = sub.add_parser("jobs")
    p.add_argument("snakemake_log")
    p.add_argument("squeue_dump")
    p.add_argument("ctld_log")
    p.add_argument("slurm_logdir")
    p.add_argument(
        "--workspace", required=True, help="the workflow directory of the SLURM run (its params.yaml)"
    )
    p.add_argument("--expect-gpus", action="store_true")
    p.set_defaults(func=jobs)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
