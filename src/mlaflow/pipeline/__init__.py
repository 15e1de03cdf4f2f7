"""The workflow's plumbing: the config (params, schema), the experiment table, every job's config file, the code
inputs of the rules (codedeps), and what DVC stages run around Snakemake (settle, integrity). The Snakefile and
the CLI use it; the steps below it (data, features, methods, train, tune) never import it, and report reads
only the experiment table."""

from __future__ import annotations

import shutil
from pathlib import Path

# what a copy of the workflow needs to run elsewhere (the integration tests' and benchmarks' copies): no caches,
# no results
WORKFLOW_ITEMS = (
    "Snakefile",
    "dvc.yaml",
    ".dvcignore",
    ".gitignore",  # a git repository of the copy must not commit .snakemake/, logs, or DVC outputs
    "workflow",
    "profiles",
    "src",
    "data/reference",
    ".test",
    "params.yaml",
)


def copy_workflow(repo: Path, dest: Path, items=WORKFLOW_ITEMS) -> None:
    """Copy the items of the repository a workflow run needs (no caches) into dest."""
    for item in items:
        src = Path(repo) / item
        if src.is_dir():
            shutil.copytree(
                src, Path(dest) / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        elif src.exists():
            (Path(dest) / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, Path(dest) / item)
