"""The manifest job (`mlaflow manifest`): the corpus kind's adapter (mlaflow.data.corpora) turns its source (a
corpus tree, or the label table of kind features) into one table of the utterances kept, written atomically.
The adapter is named in the job's config ("module:function"), so the job's code inputs are that module's.

What every adapter shares is here too: the manifest's columns (`MANIFEST_COLUMNS`) and one error for all
the problems of a kind found in a corpus (`raise_problems`). An adapter imports these from here, never from
another adapter."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from mlaflow.errors import InputError
from mlaflow.io import atomic_path

log = logging.getLogger(__name__)

# every adapter's manifest has these columns (a corpus without text has empty transcripts; one without images,
# the image-text corpora's single picture per sample, empty image paths)
MANIFEST_COLUMNS = [
    "utterance_id",
    "session",
    "speaker",
    "label",
    "label_index",
    "wav_path",
    "transcript",
    "frames_dir",
    "n_frames",
    "image_path",
    "dialog",  # the conversation an utterance belongs to (IEMOCAP's dialog); empty for corpora without
    "turn",  # its 0-based position in the conversation (by start time); empty without conversations
]
SHOWN_PER_ERROR = 5  # files named in one error message
VISUAL = "visual"  # the modality read from frames_dir


def no_face(row) -> bool:
    """Whether a manifest row is an utterance where the `faces` rule found no face: a face directory with 0 frames
    (mlaflow.data.faces, on_no_face: missing; every adapter refuses an empty directory otherwise). Its visual
    feature is zeros and its visual modality is masked as missing (mlaflow.data.masks.recorded)."""
    frames_dir = row["frames_dir"]
    return isinstance(frames_dir, str) and bool(frames_dir) and int(row["n_frames"]) == 0


def raise_problems(problems: list[tuple[Path | str, str]], problem: str, kind: str, fix: str) -> None:
    """Raise one InputError for all `problems` ((file, detail) pairs), naming the first few and the count."""
    if not problems:
        return
    shown = "; ".join(f"{path} ({detail})" for path, detail in problems[:SHOWN_PER_ERROR])
    more = f"; and {len(problems) - SHOWN_PER_ERROR} more" if len(problems) > SHOWN_PER_ERROR else ""
    raise InputError(problems[0][0], f"{len(problems)} {kind} problem(s): {problem}: {shown}{more}", fix)


def write_manifest(config: dict, source: str | Path, out: str | Path):
    module, function = config["adapter"].split(":")
    manifest, counts = getattr(importlib.import_module(module), function)(config, Path(source))
    n_classes = len(config["classes"])
    bad = manifest.index[(manifest["label_index"] < 0) | (manifest["label_index"] >= n_classes)].tolist()
    if bad:
        raise InputError(
            source,
            f"{len(bad)} utterance(s) with a label outside the corpus's {n_classes} classes "
            f"(first: {manifest['utterance_id'].iloc[bad[0]]})",
            "correct the labels of the corpus",
        )
    log.info("manifest: %d utterances kept; counts: %s", len(manifest), counts)
    with atomic_path(out, ".csv") as tmp:
        manifest.to_csv(tmp, index=False)
    return manifest
