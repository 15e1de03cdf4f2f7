"""Orchestration benchmark: the fixed cost of asking Snakemake and DVC whether anything needs doing, on the full
default grid in the repository root, when nothing does. Prints wall times; asserts nothing.

    python bench/bench_orchestration.py [--repeat 3] [--repo PATH]

It assumes `make reproduce` has run and nothing changed since (code, params.yaml, outputs). It checks that first
(`snakemake -n` must say "Nothing to be done", `dvc status` must be clean) and, if not, says so and skips the
timings that would start real work: it never runs a job.

Measured, each `--repeat` times (min and median reported):
  - `snakemake -n`           dry run: parse, validate params, build the DAG, check every output's mtime/metadata
  - `snakemake`              the same without -n (takes the lock, writes its log), runs no job
  - `dvc repro`              DVC hashes the stages' dependencies and outputs and finds both stages unchanged
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OUTPUTS = (
    "dvc.lock",
    "reports/metrics.json",
    "reports/fidelity.json",
    "reports/report.md",
    "data/features",
    "data/runs",
    "data/fidelity",
    "data/splits",
)


def tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def run(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("SNAKEMAKE_PROFILE", None)  # the local default profile, not a cluster one
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, proc


def timed(label: str, cmd: list[str], cwd: Path, repeat: int, ok) -> None:
    times = []
    for _ in range(repeat):
        seconds, proc = run(cmd, cwd)
        if proc.returncode != 0 or not ok(proc):
            print(
                f"{label:32s} unexpected result (exit {proc.returncode}); output tail:\n"
                f"{(proc.stdout + proc.stderr)[-1500:]}"
            )
            return
        times.append(seconds)
    print(f"{label:32s} min {min(times):6.2f} s   median {statistics.median(times):6.2f} s   ({repeat} runs)")


def version(cmd: list[str], cwd: Path) -> str:
    _, proc = run(cmd, cwd)
    return (proc.stdout or proc.stderr).strip().splitlines()[0] if proc.returncode == 0 else "?"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--repo", type=Path, default=REPO, help="workflow directory (default: this repository)"
    )
    args = parser.parse_args()
    repo = args.repo.resolve()
    snakemake, dvc = tool("snakemake"), tool("dvc")

    missing = [p for p in OUTPUTS if not (repo / p).exists()]
    if missing:
        print(
            f"outputs missing in {repo}: {', '.join(missing)}\nrun `make reproduce` first; nothing measured."
        )
        return 1

    # Size of the grid (a dry run of everything; cheap) and the state of the workspace.
    _, proc = run([snakemake, "-n", "--forceall", "--quiet", "all"], repo)
    total = re.search(r"^total\s+(\d+)", proc.stdout, re.M)
    trains = re.search(r"^train\s+(\d+)", proc.stdout, re.M)
    print(
        f"{repo}: snakemake {version([snakemake, '--version'], repo)}, dvc {version([dvc, '--version'], repo)}, "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"grid: {total.group(1) if total else '?'} jobs ({trains.group(1) if trains else '?'} train jobs), "
        f"{sum(1 for _ in (repo / 'data' / 'runs').rglob('*.json'))} run files"
    )

    _, proc = run([snakemake, "-n", "--quiet", "all"], repo)
    snakemake_noop = proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr
    would = re.search(r"^total\s+(\d+)", proc.stdout, re.M)
    pending = "no-op" if snakemake_noop else f"{would.group(1) if would else 'some'} jobs pending"
    timed(
        f"snakemake -n ({pending})",
        [snakemake, "-n", "all"],
        repo,
        args.repeat,
        lambda p: "Nothing to be done" in p.stdout + p.stderr or not snakemake_noop,
    )
    if not snakemake_noop:
        print(
            f"snakemake is not up to date here ({pending}): run "
            "`make reproduce` (or `dvc repro`) first; the no-op `snakemake` and `dvc repro` are not measured "
            "(they would run those jobs). The dry-run time above is for this state."
        )
        return 1
    timed(
        "snakemake (no-op)",
        [snakemake, "all"],
        repo,
        args.repeat,
        lambda p: "Nothing to be done" in p.stdout + p.stderr,
    )

    _, proc = run([dvc, "status", "--quiet"], repo)
    if proc.returncode != 0:
        _, detail = run([dvc, "status"], repo)
        print(
            f"dvc status is not clean (a stage would run):\n{detail.stdout.strip()[:1500]}\n"
            "run `make reproduce` (or `dvc repro`) first; the no-op `dvc repro` is not measured."
        )
        return 1
    timed("dvc repro (no-op)", [dvc, "repro"], repo, args.repeat, lambda p: "Running stage" not in p.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
