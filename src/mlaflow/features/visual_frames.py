"""Prepared frames: the input of the end-to-end ResNet-18 visual encoder (paper Table 1, A.3.1), not a feature.

The released MLA code (after OGM-GE) feeds its visual ResNet-18 "a concatenation of three transformed images":
three frames of the clip (extracted at 1 fps), each resized to 224 x 224 at test time. This "encoder" stores, per
clip, `features.visual.frames` frames resized to `features.visual.image_size`, as floats in [0, 1] (RGB, channels
first), flattened: dim = frames * 3 * size * size, and the store's attributes hold `input_shape` [frames, 3, size,
size] so that training reads them back (`train.encoder: resnet18`, mlaflow.methods.resnet, which normalises them
and augments them at training time).

Which frames: `frames` of the clip's n_frames, evenly spaced (the first and the last included; all of them when the
clip has exactly that many). The reference draws them at random, at training and at test time alike, every time a
clip is read; fixed frames make the test set the same at every evaluation. A clip with fewer frames than `frames`
is an error naming it (extract more frames, or lower `frames`).

Its "model directory" holds only these settings (config.json, written by `build_embedded`): no weights.
Registered as `features.visual.encoder: frames`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlaflow.errors import InputError, ParamsError
from mlaflow.features.frames_io import frame_count, load_frames
from mlaflow.features.protocol import EncodedBatch, require_model_dir, write_encoder_info
from mlaflow.io import atomic_path

ARCHITECTURE = "frames"


def build_embedded(out_dir: str | Path, cfg: dict, seed: int) -> Path:
    """Write the settings (cfg = params `features.visual`) as a "model directory"; `seed` is recorded only."""
    settings = {
        "architecture": ARCHITECTURE,
        "frames": int(cfg["frames"]),
        "image_size": int(cfg["image_size"]),
    }
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        (tmp / "config.json").write_text(json.dumps(settings, indent=2) + "\n")
        write_encoder_info(tmp, architecture=ARCHITECTURE, seed=seed, details=settings)
    return out_dir


def frame_indices(available: int, wanted: int) -> list[int]:
    """`wanted` of `available` frame numbers, evenly spaced, first and last included."""
    return np.linspace(0, available - 1, wanted).round().astype(int).tolist()


class FramesVisualEncoder:
    """Encodes a clip's frames into [B, frames * 3 * size * size] floats in [0, 1]."""

    modality = "visual"
    length_unit = "frames"
    architecture = ARCHITECTURE
    pretrained = False
    dim_source = "the directory's frames x 3 x image_size x image_size (the prepared frames of a clip)"

    def __init__(self, settings: dict[str, Any], device: torch.device):
        self.frames, self.image_size = int(settings["frames"]), int(settings["image_size"])
        self.input_shape = (self.frames, 3, self.image_size, self.image_size)
        self.output_dim = int(np.prod(self.input_shape))
        self.device = device

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, cfg: dict, device: torch.device) -> FramesVisualEncoder:
        model_dir = require_model_dir(model_dir, "visual")
        settings = json.loads((model_dir / "config.json").read_text())
        if settings.get("architecture") != ARCHITECTURE:
            raise ParamsError(
                "features.visual.model",
                f"{model_dir} is not a frames directory written by mlaflow",
                "set it to `embedded` to have the settings written",
            )
        for key in ("frames", "image_size"):
            if int(settings[key]) != int(cfg[key]):
                raise ParamsError(
                    f"features.visual.{key}",
                    f"is {cfg[key]} but the directory {model_dir} has {settings[key]}",
                    f"set it to {settings[key]}, or rebuild the directory (model: embedded)",
                )
        return cls(settings, device)

    def item_length(self, row: dict) -> int:
        return frame_count(row)

    def load_item(self, row: dict) -> np.ndarray:
        """The clip's chosen frames as uint8 [frames, size, size, 3]."""
        available = frame_count(row)
        if available < self.frames:
            raise InputError(
                row["frames_dir"],
                f"has {available} frames, fewer than the {self.frames} the visual encoder takes per clip",
                "extract more frames of the clip, or lower features.visual.frames",
            )
        return load_frames(row, self.image_size, frame_indices(available, self.frames))

    def encode(self, clips: list[np.ndarray]) -> EncodedBatch:
        pixels = torch.from_numpy(np.stack(clips)).permute(0, 1, 4, 2, 3).float() / 255.0  # [B, T, 3, H, W]
        n_frames = len(clips) * self.frames
        return EncodedBatch(features=pixels.flatten(1), real_units=n_frames, padded_units=n_frames)
