"""Deterministic generator of a small "embedded" corpus in the UPMC Food-101 layout that
`mlaflow.data.food101.build_manifest` reads (images/{train,test}/<class>/<class>_<n>.jpg, texts/<split>_titles.csv),
and the picture and text helpers the MVSA look-alike (mlaflow.data.synthetic_mvsa) shares.

What it imitates is the layout, the split and which modality carries the label: on Food-101 the web page's text
names the dish far more reliably than the photo shows it (the paper's Table 1: text 85%, image 4-70%), so the
defaults give text strength .85 and image .6.
- Picture: a plate (a light disc of random size and place) on a grey background of random lightness; on it the dish, drawn
  with a class's appearance (a hue, a shape: disc, square, triangle or stripes, and a texture) with probability
  `modality_strength.image`, else with a uniformly drawn class's appearance; pixel noise on top; saved as JPEG.
- Text: 6 to 10 words of a page title: each is a filler word, or (about a third of them) a word of the dish's
  vocabulary, that of the sample's class with probability `modality_strength.text`, else that of a uniformly drawn
  class.
The classes are Food-101 class names (the first `classes` of mlaflow.data.food101.EMBEDDED_CLASSES); nothing is a
photo of food, and the names mean nothing here. Determinism: sample n's content comes from
`default_rng([seed, n, stream])` (stream 0 the picture, 1 the text): the same seed gives byte-identical files,
whatever the thread count.
"""

from __future__ import annotations

import csv
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mlaflow.data import food101
from mlaflow.errors import ParamsError
from mlaflow.io import atomic_path

PARAMS_KEY = "corpus.embedded_food101"
DEFAULTS = {
    "seed": 11,
    "classes": 6,
    "train_per_class": 40,
    "test_per_class": 15,
    "image_size": 64,
    "modality_strength": {"image": 0.6, "text": 0.85},
}
# per class: its dish words (the text) and its appearance (the picture: RGB colour, shape)
DISH_WORDS = {
    "apple_pie": ("apple", "pie", "crust", "cinnamon", "baked"),
    "caesar_salad": ("caesar", "salad", "lettuce", "croutons", "dressing"),
    "chocolate_cake": ("chocolate", "cake", "frosting", "cocoa", "layer"),
    "french_fries": ("fries", "potato", "crispy", "salted", "ketchup"),
    "grilled_salmon": ("salmon", "grilled", "fillet", "lemon", "fish"),
    "pizza": ("pizza", "cheese", "tomato", "oven", "slice"),
    "ramen": ("ramen", "noodle", "broth", "pork", "egg"),
    "sushi": ("sushi", "rice", "tuna", "roll", "wasabi"),
}
SHAPES = ("disc", "square", "triangle", "stripes")
COLOURS = ((196, 140, 60), (90, 170, 70), (90, 50, 30), (230, 200, 80), (240, 130, 100), (220, 60, 40),
           (200, 170, 120), (245, 245, 235))  # fmt: skip
FILLER_WORDS = (
    "recipe easy best homemade how to make the a with and for our my simple quick classic delicious "
    "healthy dinner lunch family style kitchen food blog photo review menu"
).split()


def appearance(k: int) -> tuple[tuple[int, int, int], str]:
    """Class k's dish colour and shape."""
    return COLOURS[k % len(COLOURS)], SHAPES[k % len(SHAPES)]


def draw_picture(rng: np.random.Generator, colour: tuple, shape: str, size: int) -> Image.Image:
    """A plate on a random background, the dish drawn on it in `colour` and `shape`, with noise."""
    grey = int(rng.integers(40, 200))  # a grey of random lightness, lightly tinted: no colour of any dish
    background = tuple(int(v) for v in np.clip(grey + rng.integers(-15, 16, size=3), 0, 255))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    radius = size * rng.uniform(0.28, 0.42)
    cx, cy = (size / 2 + rng.uniform(-0.12, 0.12, size=2) * size).tolist()
    draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=(225, 225, 220))
    r = radius * rng.uniform(0.7, 0.9)
    shade = np.clip(np.asarray(colour) + rng.integers(-30, 31, size=3), 0, 255)
    fill = tuple(int(v) for v in shade)
    if shape == "disc":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r * 0.8, cy - r * 0.8, cx + r * 0.8, cy + r * 0.8], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fill)
    else:
        for offset in np.arange(-r, r, max(r / 3, 2)):
            draw.rectangle([cx - r, cy + offset, cx + r, cy + offset + r / 6], fill=fill)
    pixels = np.asarray(image, dtype=np.int16) + rng.normal(0, 18, size=(size, size, 3)).astype(np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_text(rng: np.random.Generator, words: tuple[str, ...], filler: list[str]) -> str:
    """6 to 10 words, about a third of them from `words`, the rest from `filler`."""
    n = int(rng.integers(6, 11))
    own = rng.random(n) < 0.35
    own[int(rng.integers(n))] = True  # at least one
    return " ".join(str(rng.choice(words)) if pick else str(rng.choice(filler)) for pick in own)


def pick_class(rng: np.random.Generator, k: int, n_classes: int, strength: float) -> int:
    """k with probability `strength`, else a uniformly drawn class (k included)."""
    return k if rng.random() < strength else int(rng.integers(n_classes))


def class_names(cfg: dict) -> list[str]:
    return food101.embedded_classes({"corpus": {"embedded_food101": cfg}})


def plan(cfg: dict) -> list[tuple[int, str, int, int]]:
    """(sample number, split, class index, position in its class and split) of every sample."""
    per_split = {"train": cfg["train_per_class"], "test": cfg["test_per_class"]}
    stride = max(per_split.values())
    return [
        ((k * 2 + s) * stride + position, split, k, position)
        for k in range(cfg["classes"])
        for s, (split, count) in enumerate(per_split.items())
        for position in range(count)
    ]


def _sample(
    root: Path, cfg: dict, number: int, split: str, k: int, position: int
) -> tuple[str, str, str, str]:
    names = class_names(cfg)
    name = names[k]
    strength = cfg["modality_strength"]
    picture_rng = np.random.default_rng([cfg["seed"], number, 0])
    shown = pick_class(picture_rng, k, len(names), strength["image"])
    colour, shape = appearance(shown)
    file_name = f"{name}_{position}.jpg"
    draw_picture(picture_rng, colour, shape, cfg["image_size"]).save(
        food101.images_dir(root, split) / name / file_name, quality=90
    )
    text_rng = np.random.default_rng([cfg["seed"], number, 1])
    named = names[pick_class(text_rng, k, len(names), strength["text"])]
    return split, file_name, write_text(text_rng, DISH_WORDS[named], FILLER_WORDS), name


def generate_corpus(out_root: Path, cfg: dict, threads: int | None = None) -> dict:
    """Write the embedded Food-101-like corpus under `out_root` (built in a temporary sibling, renamed onto it once
    complete). `cfg` is `params["corpus"]["embedded_food101"]` (keys as DEFAULTS, all required)."""
    started = time.perf_counter()
    _check(cfg)
    samples = plan(cfg)
    with atomic_path(Path(out_root)) as tmp_root:
        for split in food101.SPLITS:
            for name in class_names(cfg):
                (food101.images_dir(tmp_root, split) / name).mkdir(parents=True)
        (tmp_root / "texts").mkdir()
        with ThreadPoolExecutor(threads or 2) as pool:
            rows = list(pool.map(lambda s: _sample(tmp_root, cfg, *s), samples))
        for split in food101.SPLITS:
            with food101.titles_file(tmp_root, split).open("w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerows(row[1:] for row in rows if row[0] == split)
    return {
        "n_samples": len(samples),
        "per_split": {split: sum(s[1] == split for s in samples) for split in food101.SPLITS},
        "seconds": round(time.perf_counter() - started, 2),
    }


def check_settings(
    cfg: dict, key: str, defaults: dict, counts: dict[str, tuple[int, int]], strengths: set[str]
) -> None:
    """ParamsError for a missing key or a value out of range (shared with the MVSA look-alike)."""
    missing = [name for name in defaults if name not in cfg]
    if missing:
        raise ParamsError(f"{key}.{missing[0]}", "is missing", f"set it (default: {defaults[missing[0]]!r})")
    for name, (low, high) in counts.items():
        value = cfg[name]
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not low <= value <= high:
            raise ParamsError(f"{key}.{name}", f"is {value!r}; must be an integer from {low} to {high}")
    strength = cfg["modality_strength"]
    if (
        not isinstance(strength, dict)
        or set(strength) != strengths
        or not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in strength.values())
    ):
        shown = ", ".join(f"{name}: number" for name in sorted(strengths))
        raise ParamsError(f"{key}.modality_strength", f"is {strength!r}; must be {{{shown}}}, each in [0, 1]")


def _check(cfg: dict) -> None:
    counts = {
        "seed": (0, 2**32 - 1),
        "classes": (2, len(food101.EMBEDDED_CLASSES)),
        "train_per_class": (2, 100_000),
        "test_per_class": (1, 100_000),
        "image_size": (16, 1024),
    }
    check_settings(cfg, PARAMS_KEY, DEFAULTS, counts, {"image", "text"})
