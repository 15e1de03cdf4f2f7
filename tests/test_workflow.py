"""The whole workflow on a tiny embedded corpus, in a temporary copy of the repository, through Snakemake and
DVC: it runs end to end, a second run does nothing, a training parameter change reruns only training and
the report, and a wrong parameter fails before any job starts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlaflow import params as P
from tiny_workflow import copy_workflow, tiny_params

pytestmark = pytest.mark.integration

REPO = P.REPO_ROOT
BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mlaflow")
    copy_workflow(REPO, root)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(REPO), sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], root)
    run(["dvc", "init", "-q"], root)
    run(["dvc", "config", "core.analytics", "false"], root)
    run(["dvc", "repro"], root)
    return root


def test_workflow_produces_the_report(workspace):
    report = (workspace / "reports" / "report.md").read_text()
    assert "mla" in report and "late_fusion" in report and "not pretrained" in report
    metrics = json.loads((workspace / "reports" / "metrics.json").read_text())
    assert set(metrics["mla"]) == {"r00", "r50"} and set(metrics["late_fusion"]) == {"r00", "r50"}
    assert metrics["mla"]["r00"]["n_runs"] == 4  # 2 seeds x 2 folds
    runs = sorted((workspace / "data" / "runs").rglob("*.json"))
    assert len(runs) == 2 * 2 * 2 * 2 + 2 * 2 * 2   # main grid + 2 complete-modality methods at rate 0
    record = json.loads(runs[0].read_text())
    for key in ("accuracy", "unweighted_accuracy", "macro_f1", "weighted_f1", "per_modality_accuracy"):
        assert key in record["metrics"]
    assert {"seed", "fold", "missing_rate", "params_hash", "git_commit"} <= set(record)
    assert (workspace / "reports" / "figures" / "accuracy_vs_missing_rate.png").stat().st_size > 1000


def test_workflow_produces_the_complete_modality_tables(workspace):
    report = (workspace / "reports" / "report.md").read_text()
    assert "Table 1 analogue" in report and "| concat |" in report and "| qmf |" in report
    assert "Laziness claim on this corpus" in report
    metrics = json.loads((workspace / "reports" / "metrics.json").read_text())
    assert set(metrics["concat"]) == {"r00"} and set(metrics["qmf"]) == {"r00"}   # complete modalities only


def test_workflow_produces_the_fidelity_section(workspace):
    # tiny fidelity grid: released_code MLA at 0.5, late fusion under cpm masks at 0.0 and 0.5
    # (at 0.0 the cpm masks remove nothing: those cells are the main grid's runs, not retrained)
    assert len(list((workspace / "data" / "fidelity" / "released_code" / "mla").rglob("*.json"))) == 4
    assert len(list((workspace / "data" / "fidelity" / "masks_cpm" / "late_fusion").rglob("*.json"))) == 4
    report = (workspace / "reports" / "report.md").read_text()
    assert "## Fidelity" in report and "released_code **(optimistic)**" in report
    assert "Optimism of test-set model selection" in report and "| late_fusion | cpm |" in report
    metrics = json.loads((workspace / "reports" / "fidelity.json").read_text())
    assert set(metrics["fidelity"]) == {"released_code", "per_batch_fusion", "fixed_fusion", "test_set_selection"}
    assert metrics["fidelity"]["test_set_selection"]["r50"]["delta_mean"] >= 0
    assert set(metrics["optimism"]) == {"mla", "late_fusion", "concat", "qmf"}   # every method that ran
    assert set(metrics["by_protocol"]) == {"bernoulli", "cpm"}
    effects = (workspace / "reports" / "plots" / "fidelity_effects.csv").read_text().splitlines()
    assert effects[0].startswith("missing_rate,released_code") and len(effects) == 2


def test_workflow_produces_the_missing_suite_shift_and_isolation(workspace):
    # suite: qmf at 0.5 (its rate-0 runs are the complete-modality grid's); isolation: text masked at share 0.5
    assert len(list((workspace / "data" / "suite" / "qmf").rglob("*.json"))) == 4
    for method in ("mla", "qmf"):
        runs = sorted((workspace / "data" / "isolation" / "isolate_text" / method).rglob("*.json"))
        assert len(runs) == 4
        record = json.loads(runs[0].read_text())
        assert record["variant"] == "isolate_text" and record["mask_protocol"] == "isolate_text"
    main_run = json.loads(next((workspace / "data" / "runs" / "mla" / "missing_0.50").glob("*.json")).read_text())
    assert set(main_run["test_time_shift"]) == {"0.00", "0.50"}
    assert main_run["test_time_shift"]["0.50"] == pytest.approx(main_run["metrics"]["accuracy"])  # the diagonal
    report = (workspace / "reports" / "report.md").read_text()
    assert "## Missing-modality suite (Table 2 analogue)" in report and "| qmf (paper) |" in report
    assert "### Test-time shift" in report and "## Isolation of modalities" in report
    metrics = json.loads((workspace / "reports" / "missing_suite.json").read_text())
    assert set(metrics) == {"params_hash", "mla", "late_fusion", "qmf"} and set(metrics["qmf"]) == {"r50"}
    assert metrics["qmf"]["r50"]["n_runs"] == 4
    shift = (workspace / "reports" / "plots" / "test_time_shift.csv").read_text().splitlines()
    assert shift[0] == "method,train_rate,test_rate,accuracy" and len(shift) == 1 + 3 * 2 * 2
    isolation = (workspace / "reports" / "plots" / "isolation.csv").read_text().splitlines()
    assert isolation[0].startswith("training_missing_rate,") and len(isolation) == 3   # shares 0.0 and 0.5
    assert "mla_audio_without_text" in isolation[0]
    assert (workspace / "reports" / "figures" / "isolation.png").stat().st_size > 1000


def test_second_repro_does_nothing(workspace):
    out = run(["dvc", "repro"], workspace).stdout
    assert "didn't change" in out and "Running stage" not in out
    assert "Nothing to be done" in run([str(BIN / "snakemake"), "-n"], workspace).stdout


def test_training_param_change_reruns_only_what_depends_on_it(workspace):
    masks = sorted((workspace / "data" / "splits" / "masks").rglob("*.h5"))
    features = sorted((workspace / "data" / "features").glob("*.h5"))
    before = {p: p.stat().st_mtime_ns for p in masks + features}
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], workspace)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results"], workspace)
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["train"]["epochs"] = 3
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro"], workspace).stdout
    assert "Running stage 'experiments'" in out and "Running stage 'features'" not in out
    assert "Running stage 'analyses'" in out and "Running stage 'fidelity'" in out
    assert {p: p.stat().st_mtime_ns for p in masks + features} == before  # masks and features kept
    diff = run(["dvc", "metrics", "diff", "--json"], workspace).stdout
    assert json.loads(diff)  # the metrics changed and DVC shows it


def test_wrong_param_fails_before_any_job(tmp_path):
    copy_workflow(REPO, tmp_path, items=("Snakefile", "workflow", "src", "data/reference"))
    params = tiny_params(REPO)
    params["train"]["epochz"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run([str(BIN / "snakemake"), "-n"], tmp_path, check=False)
    assert proc.returncode != 0
    assert "train.epochz" in proc.stdout + proc.stderr
    assert not (tmp_path / "data" / "corpus").exists()


@pytest.mark.parametrize("job_group, per_cell", [("cell", 1), ("seed", 2), ("run", 4)])
def test_job_group_decides_how_many_runs_one_training_job_covers(tmp_path, job_group, per_cell):
    copy_workflow(REPO, tmp_path, items=("Snakefile", "workflow", "profiles", "src", "data/reference"))
    params = tiny_params(REPO)                       # 2 seeds x 2 folds per (method, missing rate)
    params["train"]["job_group"] = job_group
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = run([str(BIN / "snakemake"), "-n", "--quiet", "rules"], tmp_path).stdout
    counts = dict(line.split()[:2] for line in out.splitlines() if line.split()[:1] in (["train"], ["train_variant"]))
    cells = 2 * 2 + 2                                # main grid (2 methods x 2 rates) + 2 complete-modality methods
    assert int(counts["train"]) == cells * per_cell
    shell = run([str(BIN / "snakemake"), "-n", "-p", "data/runs/mla/missing_0.50/seed1_fold2.json"], tmp_path).stdout
    expected = {"cell": "--seed-list 0 1 --fold-list 1 2", "seed": "--seed-list 1 --fold-list 1 2",
                "run": "--seed-list 1 --fold-list 2"}[job_group]
    assert expected in shell
