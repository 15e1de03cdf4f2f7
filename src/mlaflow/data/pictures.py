"""What the image-text adapters (food101, mvsa) share: whether a picture file reads as an image, checked when the
manifest is built (its header only: the pixels are decoded at extraction, mlaflow.features.image_io)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def readable_image(path: Path) -> str | None:
    """None when the file's header reads as an image, else why not."""
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 -- parsing the header is the check
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for damaged files
        return f"not a readable image ({err})"
    return None
