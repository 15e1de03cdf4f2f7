"""A tiny copy of the workflow, shared by the integration test (tests/test_workflow.py) and the real-SLURM
test (tests/slurm): which repository items a run needs, and params small enough to run in seconds."""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

WORKFLOW_ITEMS = ("Snakefile", "dvc.yaml", ".dvcignore", "workflow", "profiles", "src", "data/reference")


def tiny_params(repo: Path, seeds=(0, 1), gpu_per_job: int = 0) -> dict:
    """3 sessions x 2 dialogs x 12 utterances, tiny encoders, 2 folds, missing rates 0.0 and 0.5, 2 epochs."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["corpus"]["embedded"].update(sessions=3, dialogs_per_session=2, utterances_per_dialog=12,
                                        frames_per_utterance=2, image_size=32, max_duration_s=1.2)
    params["features"]["text"].update(dim=32, batch_size=16, embedded={"num_layers": 1, "num_heads": 2,
                                                                       "intermediate_size": 32})
    params["features"]["audio"].update(dim=32, batch_size=8, embedded={"conv_dim": [16, 32], "hidden_size": 32,
                                                                        "num_layers": 1, "num_heads": 2})
    params["features"]["visual"].update(image_size=32)
    params["splits"]["folds"] = [1, 2]
    params["masks"]["missing_rates"] = [0.0, 0.5]
    params["train"].update(seeds=list(seeds), epochs=2, threads=1)
    params["complete_modality_methods"] = ["concat", "qmf"]
    params["missing_suite"] = {"methods": ["qmf"], "missing_rates": [0.5]}
    params["isolation"].update(methods=["mla", "qmf"], modalities=["text"], training_missing_rates=[0.5])
    released = params["fidelity"]["variants"]["released_code"]
    params["fidelity"].update(missing_rates=[0.5], protocol_methods=["late_fusion"],
                              variants={"released_code": released})
    params["resources"]["gpu_per_job"] = gpu_per_job
    return params


def copy_workflow(repo: Path, dest: Path, items=WORKFLOW_ITEMS) -> None:
    """Copy the items of the repository a workflow run needs (no caches) into dest."""
    for item in items:
        src = repo / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dest / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / item)
