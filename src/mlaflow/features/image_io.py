"""Reading a sample's picture for the image encoders (ViT, CLIP's image tower): one image per sample, named by the
manifest's `image_path` (the image-text corpora: Food-101, MVSA).

Kept apart from the encoders so that neither imports the other. Every problem with a file is an InputError naming
it, so extraction skips the sample, goes on, and lists all bad files at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from mlaflow.errors import InputError, ParamsError

if TYPE_CHECKING:
    import torch


def image_path(row: dict) -> Path:
    """The row's image file; a row without one (an empty cell) is an InputError naming the sample."""
    value = row.get("image_path")
    if not isinstance(value, str) or not value:
        raise InputError(
            None,
            f"sample {row['utterance_id']} has no image_path in the manifest",
            "rebuild the manifest from an image-text corpus (corpus.kind food101 or mvsa)",
        )
    return Path(value)


def load_image(row: dict, size: int) -> np.ndarray:
    """The row's picture as uint8 [size, size, 3] (RGB, resized bicubically to a square, as CLIP's and ViT's
    processors do after their resize and centre crop)."""
    path = image_path(row)
    if not path.is_file():
        raise InputError(path, "image not found", "restore it, or correct `image_path` in the manifest")
    try:
        with Image.open(path) as image:
            image = image.convert("RGB").resize((size, size), Image.BICUBIC)
            return np.asarray(image, dtype=np.uint8)
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for damaged files
        raise InputError(
            path,
            f"cannot be decoded as an image ({err})",
            "re-download or re-export the image, or remove the sample from the corpus",
        ) from err


def pixel_batch(images: list[np.ndarray], mean: tuple, std: tuple) -> torch.Tensor:
    """[B, 3, H, W] float32 normalised with the model's mean and std (its image processor's)."""
    import torch

    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (pixels - mean_t) / std_t


def processor_statistics(model_dir: Path, key: str, mean: tuple, std: tuple) -> tuple[tuple, tuple]:
    """The mean and std of the directory's image processor (preprocessor_config.json); `mean` and `std` (the
    architecture's own) for a directory without one. An unloadable processor is a ParamsError naming `key`."""
    from transformers import AutoImageProcessor

    if not (model_dir / "preprocessor_config.json").is_file():
        return mean, std
    try:
        processor = AutoImageProcessor.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ParamsError(
            key, f"the image processor in {model_dir} does not load ({err})", "save it again"
        ) from err
    return tuple(processor.image_mean), tuple(processor.image_std)
