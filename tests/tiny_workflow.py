"""The tiny workflow (.test/tiny.yaml), shared by the integration tests (tests/test_workflow.py,
tests/test_dvc_workflow.py) and the real-SLURM test (tests/slurm): which repository items a copy of the
workflow needs, and the tiny config as a complete params.yaml."""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from mlaflow import params as P

WORKFLOW_ITEMS = ("Snakefile", "dvc.yaml", ".dvcignore", "workflow", "profiles", "src", "data/reference", ".test",
                  "params.yaml")
TINY_CONFIG = Path(".test") / "tiny.yaml"


def tiny_params(repo: Path, seeds=None, gpu_per_job: int = 0) -> dict:
    """.test/tiny.yaml with the schema's defaults filled in: a complete params.yaml (3 sessions x 2 dialogs x 12
    utterances, tiny encoders, 2 folds, missing rates 0.0 and 0.5, 2 epochs)."""
    params = yaml.safe_load((repo / TINY_CONFIG).read_text())
    if seeds is not None:
        params["train"]["seeds"] = list(seeds)
    params.setdefault("resources", {})["gpu_per_job"] = gpu_per_job
    return P.validate(params)


def copy_workflow(repo: Path, dest: Path, items=WORKFLOW_ITEMS) -> None:
    """Copy the items of the repository a workflow run needs (no caches) into dest."""
    for item in items:
        src = repo / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (dest / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / item)
