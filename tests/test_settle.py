"""`mlaflow settle` and content-based job configs: a copy DVC restored (no Snakemake records, arbitrary times)
is made to look exactly as up to date as dvc.lock says, and a job config is stale by its content."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import yaml

from mlaflow.pipeline.jobconfigs import config_text, stale_unrecorded_job_configs
from mlaflow.pipeline.settle import SETTLED_TIME, _dvcignore, dvc_md5, settle

BIN = Path(sys.executable).parent


def _tree(root: Path) -> None:
    (root / "data" / "runs" / "a").mkdir(parents=True)
    (root / "data" / "runs" / "a" / "run.json").write_text('{"accuracy": 0.5}\n')
    (root / "data" / "runs" / "b.json").write_text("[1, 2]\n")
    (root / "data" / "runs" / "a.json").write_text("{}\n")  # sorts before a/run.json in DVC's listing
    (root / "data" / "runs" / "__pycache__").mkdir()
    (root / "data" / "runs" / "__pycache__" / "x.pyc").write_bytes(b"\x00\x01")
    (root / "src").mkdir()
    (root / "src" / "code.py").write_text("x = 1\n")
    (root / ".dvcignore").write_text("__pycache__/\n*.pyc\n")


def test_the_hash_of_a_file_and_of_a_directory_is_dvcs_own(tmp_path):
    _tree(tmp_path)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path, env=env, check=True)
    subprocess.run(["dvc", "add", "-q", "data/runs", "src/code.py"], cwd=tmp_path, env=env, check=True)
    ignore = _dvcignore(tmp_path)
    for path in ("data/runs", "src/code.py"):
        recorded = yaml.safe_load((tmp_path / f"{path}.dvc").read_text())["outs"][0]["md5"]
        assert dvc_md5(tmp_path / path, tmp_path, ignore)[0] == recorded, path


def _lock(root: Path) -> None:
    ignore = _dvcignore(root)
    md5 = {p: dvc_md5(root / p, root, ignore)[0] for p in ("src", "data/runs")}
    lock = {
        "schema": "2.0",
        "stages": {
            "train": {
                "cmd": "x",
                "deps": [{"path": "src", "md5": md5["src"]}],
                "outs": [{"path": "data/runs", "md5": md5["data/runs"]}],
            }
        },
    }
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))


def test_settle_gives_what_dvc_lock_vouches_for_one_old_time_and_leaves_what_differs(tmp_path):
    _tree(tmp_path)
    _lock(tmp_path)
    configs = {
        "data/runs/a.config.json": {"train": {"lr": 0.1}},
        "data/runs/c.config.json": {"train": {"lr": 1}},
    }
    (tmp_path / "data" / "runs" / "a.config.json").write_text(config_text(configs["data/runs/a.config.json"]))
    (tmp_path / "data" / "runs" / "c.config.json").write_text(
        config_text({"train": {"lr": 2}})
    )  # params changed
    _lock(tmp_path)
    (tmp_path / "src" / "code.py").write_text("x = 2\n")  # edited after the results were made
    summary = settle(tmp_path, configs)
    assert summary["settled"] == ["data/runs"] and summary["differ_from_dvc_lock"] == ["src"]
    mtime = lambda p: (tmp_path / p).stat().st_mtime  # noqa: E731
    assert mtime("data/runs/a/run.json") == mtime("data/runs/b.json") == mtime("data/runs/a") == SETTLED_TIME
    assert mtime("data/runs/a.config.json") == SETTLED_TIME
    assert mtime("src/code.py") > SETTLED_TIME  # what depends on it reruns
    assert stale_unrecorded_job_configs(configs, tmp_path) == ["data/runs/c.config.json"]
    # with Snakemake's record of it, the params trigger decides and the file is left alone
    record = (
        tmp_path / ".snakemake" / "metadata" / base64.urlsafe_b64encode(b"data/runs/c.config.json").decode()
    )
    record.parent.mkdir(parents=True)
    record.write_text("{}")
    assert stale_unrecorded_job_configs(configs, tmp_path) == []


def test_settle_does_nothing_where_snakemake_has_records(tmp_path):
    _tree(tmp_path)
    _lock(tmp_path)
    (tmp_path / ".snakemake" / "metadata").mkdir(parents=True)
    (tmp_path / ".snakemake" / "metadata" / "record").write_text("{}")
    before = (tmp_path / "data" / "runs" / "b.json").stat().st_mtime
    assert "skipped" in settle(tmp_path, {})
    assert (tmp_path / "data" / "runs" / "b.json").stat().st_mtime == before
