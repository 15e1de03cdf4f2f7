"""The workflow through DVC (`dvc repro` wraps one Snakemake target per stage), on the tiny config in a temporary
git repository: it runs to the report, a second repro does nothing, and a training parameter change reruns only
the stages and the jobs that depend on it, which `dvc metrics diff` shows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import yaml
from tiny_workflow import copy_workflow, tiny_params

from mlaflow.pipeline import params as P

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
    # the tiny Table 1 analogue (.test/tiny.yaml `table1`): ResNet-18 encoders end to end on the KS look-alike,
    # frozen ViT and BERT features on the MVSA look-alike; the Table 4 analogue (CLIP's towers) on Food-101's
    assert (
        "## Table 1 analogue on the paper's other corpora" in report
        and "### embedded_ks (audio-video" in report
    )
    assert "Encoders: **ResNet-18 trained end to end** (first-stage width 2" in report
    assert "### embedded_mvsa (image-text" in report and "paper (MVSA): image / text / multi" in report
    assert "## Table 4 analogue: CLIP's image and text towers" in report
    assert re.search(
        r"\| mla \| [\d.]+ ± [\d.]+ \| [\d.]+ ± [\d.]+ \| [\d.]+ ± [\d.]+ \| 72.22 / 85.34 / 93.47 \|", report
    )
    for entry in ("embedded_ks", "embedded_mvsa", "clip_embedded_food101"):
        assert (repo / "data" / "table1" / entry / "reports" / "metrics.json").is_file()
    with h5py.File(repo / "data/table1/clip_embedded_food101/data/features/image.h5", "r") as f:
        assert f["features"].shape[1] == 16  # the tiny CLIP's projection, for both towers
    with h5py.File(repo / "data/table1/clip_embedded_food101/data/features/text.h5", "r") as f:
        assert f["features"].shape[1] == 16
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == {
        "features",
        "tuning",
        "main_grid",
        "missing_suite",
        "isolation",
        "fidelity",
        "table1",
        "report",
    }


def test_second_repro_does_nothing(repo):
    out = run(["dvc", "repro"], repo).stdout
    assert "didn't change" in out and "Running stage" not in out
    assert "Nothing to be done" in run([str(BIN / "snakemake"), "-n"], repo).stdout


def test_dvc_plots_show_draws_every_plot_a_line_per_series(repo):
    """dvc.yaml names no method or variant: each data plot draws every series its long CSV holds."""
    shown = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)
    assert not shown.get("errors"), shown["errors"]
    series = {
        path: {row["series"] for plot in plots for row in plot["content"]["data"]["values"]}
        for path, plots in shown["data"].items()
        if path.endswith(".csv")
    }
    assert series["reports/plots/accuracy_vs_missing_rate.csv"] == {
        "mla",
        "late_fusion",
        "paper_mla",
        "paper_late_fusion",
    }
    assert {"released_code", "test_set_selection"} <= series["reports/plots/fidelity_effects.csv"]
    assert series["reports/plots/accuracy_vs_missing_rate_by_protocol.csv"] == {
        "late_fusion_bernoulli",
        "late_fusion_cpm",
    }
    assert all(path in shown["data"] for path in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"])


def _tracked_files(root: Path) -> dict[str, str]:
    """{path: md5} of every file under the DVC outputs named in dvc.lock, but those .dvcignore leaves out (the
    Table 1 analogue's inner Snakemake records, logs and benchmarks)."""
    import hashlib

    import pathspec

    ignored = pathspec.PathSpec.from_lines("gitwildmatch", (root / ".dvcignore").read_text().splitlines())
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    outs = [o["path"] for stage in lock["stages"].values() for o in stage.get("outs", [])]
    files = [f for out in outs for f in ([root / out] if (root / out).is_file() else (root / out).rglob("*"))]
    return {
        str(f.relative_to(root)): hashlib.md5(f.read_bytes()).hexdigest()
        for f in files
        if f.is_file() and not ignored.match_file(str(f.relative_to(root)))
    }


def test_a_colleague_pulls_from_a_dvc_remote_and_repro_does_nothing(repo, tmp_path):
    """Sharing: a local-directory remote (S3, SSH, ... work the same through DVC's plugins), `dvc push`, then a
    fresh git clone with `dvc pull` has every output, `dvc status` is up to date and `dvc repro` runs nothing.
    The committed dvc.lock names exactly what the push holds (a pull that missed a file would fail)."""
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "shared", str(remote)], repo)
    run([*GIT, "add", "-A"], repo)
    run([*GIT, "commit", "-qm", "results, and a remote to share them"], repo)
    push = run(["dvc", "push"], repo)
    assert "pushed" in push.stdout + push.stderr
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / "data" / "runs").exists()
    run(["dvc", "pull"], clone)
    assert _tracked_files(clone) == _tracked_files(repo)
    assert "up to date" in run(["dvc", "status"], clone).stdout
    out = run(["dvc", "repro"], clone).stdout
    assert "Running stage" not in out and "didn't change" in out


def _experiments(shown: list) -> dict[float, dict]:
    """train.lr -> reports/metrics.json of each experiment in `dvc exp show --json`."""
    found = {}

    def visit(node):
        if isinstance(node, dict):
            data = node.get("data")
            if isinstance(data, dict) and node.get("name") and "params" in data:
                lr = data["params"]["params.yaml"]["data"]["train"]["lr"]
                found[lr] = data["metrics"]["reports/metrics.json"]["data"]
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(shown)
    return found


def test_a_dvc_experiment_sweep_gives_what_a_workspace_run_gives(repo):
    """`dvc exp run --queue -S train.lr=<v>` for two values, `dvc queue start`: each experiment runs in DVC's
    temporary copy (no Snakemake records, restored files in any order); `mlaflow settle` makes Snakemake rerun
    exactly what the change invalidates there: training and what follows, never the corpus, features, folds
    or masks. Each experiment's metrics equal a workspace `dvc repro` with the same value."""
    run([*GIT, "add", "-A"], repo)
    run([*GIT, "commit", "-qm", "before the sweep", "--allow-empty"], repo)
    values = [0.02, 0.05]
    for value in values:
        run(["dvc", "exp", "run", "--queue", "-S", f"train.lr={value}"], repo)
    run(["dvc", "queue", "start"], repo)
    deadline = time.time() + 1800
    while True:
        status = run(["dvc", "queue", "status"], repo).stdout
        if not any(word in status for word in ("Queued", "Running")):
            break
        assert time.time() < deadline, status
        time.sleep(5)
    assert status.count("Success") == 2, status
    for name in re.findall(r"^\w+\s+(\S+)\s+.*Success", status, re.M):
        log = run(["dvc", "queue", "logs", name], repo).stdout
        ran = {
            rule
            for table in log.split("Job stats:")[1:]
            for rule in re.findall(r"^(\w+)\s+\d+$", table, re.M)
        }
        assert "train" in ran and not ran & {"corpus", "build_encoder", "extract", "folds", "masks"}, (
            name,
            ran,
        )
    experiments = _experiments(json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout))
    assert set(values) <= set(experiments), experiments.keys()
    original = (repo / "params.yaml").read_text()
    try:
        for value in values:
            params = yaml.safe_load(original)
            params["train"]["lr"] = value
            (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            # --no-run-cache: computed here, not restored from what the experiments left in DVC's run cache
            run(["dvc", "repro", "--no-run-cache"], repo)
            workspace = json.loads((repo / "reports" / "metrics.json").read_text())
            assert experiments[value] == workspace, value
    finally:
        (repo / "params.yaml").write_text(original)
        run(["dvc", "repro"], repo)


def test_training_param_change_reruns_only_what_depends_on_it(repo):
    masks = sorted((repo / "data" / "splits" / "masks").rglob("*.h5"))
    features = sorted((repo / "data" / "features").glob("*.h5"))
    before = {p: p.stat().st_mtime_ns for p in masks + features}
    run([*GIT, "add", "-A"], repo)
    run([*GIT, "commit", "-qm", "results", "--allow-empty"], repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["epochs"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro"], repo).stdout
    assert "Running stage 'main_grid'" in out and "Running stage 'features'" not in out
    for stage in ("tuning", "missing_suite", "isolation", "fidelity", "report"):  # train is tuned too
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
    an empty suite, no isolation analysis, no fidelity experiment, no tuning."""
    root = tmp_path_factory.mktemp("sparse")
    copy_workflow(REPO, root)
    params = tiny_params(REPO)
    params.update(methods=["late_fusion"], complete_modality_methods=["concat"])
    params["masks"]["missing_rates"] = [0.5]
    params["missing_suite"]["methods"] = []
    params["isolation"]["enabled"] = False
    params["fidelity"]["enabled"] = False
    params["tuning"]["enabled"] = False
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
    assert "Not run (tuning.enabled: false): every table shows params.yaml's values." in report
    assert json.loads((sparse_repo / "reports" / "tuning.json").read_text()) == {"enabled": False}
    run_file = next((sparse_repo / "data" / "runs" / "late_fusion").rglob("seed*_fold*.json"))
    assert json.loads(run_file.read_text())["tuned"] is None
    stages = yaml.safe_load((sparse_repo / "dvc.yaml").read_text())["stages"]
    for stage in stages.values():  # every declared output exists, even of a stage with no runs
        for key in ("outs", "metrics", "plots"):
            for out in stage.get(key, []):
                assert (sparse_repo / (next(iter(out)) if isinstance(out, dict) else out)).exists(), out
    assert "didn't change" in run(["dvc", "repro"], sparse_repo).stdout
