"""The manifest job (`mlaflow manifest`): the corpus kind's adapter (mlaflow.data.corpora) turns its tree into
one table of the utterances kept, written atomically."""
from __future__ import annotations

import importlib
import logging
from pathlib import Path

from mlaflow.io import atomic_path

log = logging.getLogger(__name__)


def write_manifest(manifest_module: str, corpus_root: str | Path, label_setup: str, out: str | Path):
    build = importlib.import_module(manifest_module).build_manifest
    manifest, counts = build(Path(corpus_root), label_setup)
    log.info("manifest: %d utterances kept; counts: %s", len(manifest), counts)
    with atomic_path(out, ".csv") as tmp:
        manifest.to_csv(tmp, index=False)
    return manifest
