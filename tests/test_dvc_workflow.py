"""The workflow through DVC (`dvc repro` wraps one Snakemake target per stage), on the tiny config in a temporary
git repository: it runs to the report, a second repro does nothing, and a training parameter change reruns only
the stages and the jobs that depend on it, which `dvc metrics diff` shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny_workflow import copy_workflow, tiny_params

from mlaflow import params as P

pytestmark = pytest.mark.integration

REPO = P.REPO_ROOT
BIN = Path(sys.executable).parent
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(cwd / "src")}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mlaflow")
    copy_workflow(REPO, root)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(REPO), sort_keys=False))
    run(["git", "init", "-q"], root)
    run([*GIT, "add", "-A"], root)
    run([*GIT, "commit", "-qm", "init"], root)
    run(["dvc", "init", "-q"], root)
    run(["dvc", "config", "core.analytics", "false"], root)
    run(["dvc", "repro"], root)
    return root


def test_dvc_repro_runs_every_stage_to_the_report(repo):
    report = (repo / "reports" / "report.md").read_text()
    assert "## Missing-modality suite (Table 2 analogue)" in report and "## Fidelity" in report
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == {
        "features",
        "main_grid",
        "missing_suite",
        "isolation",
        "fidelity",
        "report",
    }


def test_second_repro_does_nothing(repo):
    out = run(["dvc", "repro"], repo).stdout
    assert "didn't change" in out and "Running stage" not in out
    assert "Nothing to be done" in run([str(BIN / "snakemake"), "-n"], repo).stdout


def test_training_param_change_reruns_only_what_depends_on_it(repo):
    masks = sorted((repo / "data" / "splits" / "masks").rglob("*.h5"))
    features = sorted((repo / "data" / "features").glob("*.h5"))
    before = {p: p.stat().st_mtime_ns for p in masks + features}
    run([*GIT, "add", "-A"], repo)
    run([*GIT, "commit", "-qm", "results"], repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["epochs"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro"], repo).stdout
    assert "Running stage 'main_grid'" in out and "Running stage 'features'" not in out
    for stage in ("missing_suite", "isolation", "fidelity", "report"):
        assert f"Running stage '{stage}'" in out
    assert {p: p.stat().st_mtime_ns for p in masks + features} == before  # masks and features kept
    diff = run(["dvc", "metrics", "diff", "--json"], repo).stdout
    assert json.loads(diff)  # the metrics changed and DVC shows it


def test_a_damaged_feature_store_is_never_sealed_into_dvc_lock(repo):
    store = repo / "data" / "features" / "audio.h5"
    whole, lock = store.read_bytes(), (repo / "dvc.lock").read_text()
    stat = store.stat()
    with open(store, "r+b") as f:  # truncated in place, its timestamp kept
        f.truncate(stat.st_size // 2)
    os.utime(store, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    proc = run(["dvc", "repro"], repo, check=False)
    assert proc.returncode != 0
    assert "data/features/audio.h5" in proc.stdout + proc.stderr and "damaged" in proc.stdout + proc.stderr
    assert (repo / "dvc.lock").read_text() == lock  # nothing recorded
    store.write_bytes(whole)
    os.utime(store, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.fixture(scope="module")
def sparse_repo(tmp_path_factory) -> Path:
    """The tiny workflow with every optional part of the grid off: no missing rate 0 in the main grid, no MLA,
    an empty suite, no isolation analysis, no fidelity experiment."""
    root = tmp_path_factory.mktemp("sparse")
    copy_workflow(REPO, root)
    params = tiny_params(REPO)
    params.update(methods=["late_fusion"], complete_modality_methods=["concat"])
    params["masks"]["missing_rates"] = [0.5]
    params["missing_suite"]["methods"] = []
    params["isolation"]["enabled"] = False
    params["fidelity"]["enabled"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(P.validate(params), sort_keys=False))
    run(["git", "init", "-q"], root)
    run([*GIT, "add", "-A"], root)
    run([*GIT, "commit", "-qm", "init"], root)
    run(["dvc", "init", "-q"], root)
    run(["dvc", "config", "core.analytics", "false"], root)
    run(["dvc", "repro"], root)
    return root


def test_every_config_the_schema_accepts_runs_to_a_report(sparse_repo):
    report = (sparse_repo / "reports" / "report.md").read_text()
    assert "Isolation analysis: not run" in report and "Fidelity experiment: not run" in report
    assert "MLA has no run in this table" in report  # Table 2 of the main grid's methods only
    assert "suite (data/suite): none" in report
    stages = yaml.safe_load((sparse_repo / "dvc.yaml").read_text())["stages"]
    for stage in stages.values():  # every declared output exists, even of a stage with no runs
        for key in ("outs", "metrics", "plots"):
            for out in stage.get(key, []):
                assert (sparse_repo / (next(iter(out)) if isinstance(out, dict) else out)).exists(), out
    assert "didn't change" in run(["dvc", "repro"], sparse_repo).stdout
