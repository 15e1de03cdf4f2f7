"""The main job's wall time, stage by stage: every stage of dvc.yaml run in order, from nothing, in a fresh copy of
the workflow, on this machine (2 CPU cores, or a GPU node with its profile).

By default it runs `dvc repro` (what `make reproduce` runs after the install) and times each stage from DVC's
own output. With `--stage-commands` it runs each stage's `cmd` from dvc.yaml itself, in the order dvc.yaml
lists them, without DVC: for a machine without DVC (the lent GPU machines have none); the work is the same
(settle, the stage's Snakemake target, verify), only DVC's own hashing and dvc.lock are left out.

    python bench/bench_workflow.py [--profile profiles/gpu-node] [--configfile my.yaml] [--stage-commands]
        [--workdir DIR] [--keep]

Prints the machine and date, then seconds per stage and in all, and how many jobs of each rule Snakemake ran.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from machine import describe

from mlaflow.pipeline import copy_workflow

REPO = Path(__file__).resolve().parents[1]


def jobs_run(workdir: Path) -> dict[str, int]:
    """Jobs per rule that Snakemake ran, from its logs in the working directory."""
    counts: dict[str, int] = {}
    for log in sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log")):
        for rule in re.findall(r"^(?:localrule|rule) (\w+):", log.read_text(), re.M):
            counts[rule] = counts.get(rule, 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--profile", default=None, help="a Snakemake profile for every stage (SNAKEMAKE_PROFILE)"
    )
    parser.add_argument("--configfile", default=None, help="replaces params.yaml in the copy")
    parser.add_argument("--stage-commands", action="store_true", help="run dvc.yaml's stage commands, no DVC")
    parser.add_argument("--workdir", default=None, help="default: a new temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mlaflow-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    copy_workflow(REPO, workdir)
    if args.configfile:
        shutil.copy2(args.configfile, workdir / "params.yaml")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(workdir / "src"), os.environ.get("PYTHONPATH")]))
    if args.profile:
        env["SNAKEMAKE_PROFILE"] = str((REPO / args.profile).resolve())
    print(f"workflow benchmark, {describe()}")
    print(
        f"  config: {args.configfile or 'params.yaml'}; profile: {args.profile or 'profiles/default'}; in {workdir}"
    )

    stages = list(yaml.safe_load((workdir / "dvc.yaml").read_text())["stages"].items())
    seconds: dict[str, float] = {}
    if args.stage_commands:
        for name, stage in stages:
            started = time.perf_counter()
            proc = subprocess.run(
                stage["cmd"], shell=True, cwd=workdir, env=env, capture_output=True, text=True
            )
            seconds[name] = time.perf_counter() - started
            print(f"  {name:14s} {seconds[name]:7.1f} s", flush=True)
            if proc.returncode != 0:
                print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
                raise SystemExit(f"stage {name} failed ({proc.returncode})")
    else:
        subprocess.run(["git", "init", "-q"], cwd=workdir, check=True)
        subprocess.run(["dvc", "init", "-q", "-f"], cwd=workdir, env=env, check=True)
        started = last = time.perf_counter()
        proc = subprocess.Popen(
            ["dvc", "repro"],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        current = None
        for line in proc.stdout:
            match = re.match(r"Running stage '(\w+)'", line)
            if match:
                now = time.perf_counter()
                if current:
                    seconds[current] = now - last
                    print(f"  {current:14s} {seconds[current]:7.1f} s", flush=True)
                current, last = match[1], now
        if proc.wait() != 0:
            raise SystemExit(f"dvc repro failed ({proc.returncode})")
        if current:
            seconds[current] = time.perf_counter() - last
            print(f"  {current:14s} {seconds[current]:7.1f} s")
        seconds["(dvc before the first stage)"] = 0.0
        total = time.perf_counter() - started
        print(f"  {'all (dvc repro)':14s} {total:7.1f} s  ({total / 60:.1f} min)")
    print(f"  {'stages summed':14s} {sum(seconds.values()):7.1f} s  ({sum(seconds.values()) / 60:.1f} min)")
    print("  jobs run: " + ", ".join(f"{rule} {n}" for rule, n in sorted(jobs_run(workdir).items())))
    if not args.keep and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
