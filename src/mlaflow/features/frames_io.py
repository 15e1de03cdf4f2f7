"""Reading an utterance's (or clip's) frames for the visual encoders (MANet-style features, prepared frames).

Kept apart from the encoders so that one needing only these (visual_frames) does not import another encoder's
module. A row lists its frames as `frames_dir` and `n_frames`: frames_dir/000.png .. (n_frames - 1). Every
problem with a file is an InputError naming it, so extraction skips the utterance, goes on, and lists all bad
files at the end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mlaflow.errors import InputError


def frame_count(row: dict) -> int:
    """The row's n_frames, checked to be a number."""
    try:
        return int(row["n_frames"])
    except (TypeError, ValueError) as err:
        raise InputError(
            row["frames_dir"],
            f"n_frames is {row['n_frames']!r}, not a number of frames",
            "correct `n_frames` in the manifest",
        ) from err


def frame_paths(row: dict) -> list[Path]:
    frames_dir = Path(row["frames_dir"])
    return [frames_dir / f"{index:03d}.png" for index in range(frame_count(row))]


def load_frame(path: Path, size: int) -> np.ndarray:
    """One frame as uint8 [size, size, 3] (RGB, resized bilinearly)."""
    if not path.is_file():
        raise InputError(
            path, "frame not found", "restore it, or correct `frames_dir`/`n_frames` in the manifest"
        )
    try:
        with Image.open(path) as image:
            image = image.convert("RGB").resize((size, size), Image.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for damaged files
        raise InputError(
            path,
            f"cannot be decoded as an image ({err})",
            "re-export the frame as an RGB PNG, or remove the utterance from the manifest",
        ) from err


def load_frames(row: dict, size: int, indices: list[int] | None = None) -> np.ndarray:
    """The row's frames (those at `indices`, default all) as uint8 [n, size, size, 3]."""
    paths = frame_paths(row)
    if not paths:
        raise InputError(
            row["frames_dir"],
            "the manifest lists 0 frames for this utterance",
            "extract its frames, or remove the utterance from the manifest",
        )
    chosen = paths if indices is None else [paths[i] for i in indices]
    return np.stack([load_frame(path, size) for path in chosen])
