"""UPMC Food-101 adapter: the release's layout (images per class folder, the web pages' texts, its train/test split)
-> one manifest table.

UPMC Food-101 (Wang et al. 2015, "Recipe recognition with large multimodal food dataset"; the paper's Food-101)
pairs each of ~90k food pictures of the 101 Food-101 classes with the text of the web page it was found on. mlaflow
reads the tree of its distributed archive, under the root:

* `images/train/<class>/<image>.jpg`, `images/test/<class>/<image>.jpg`: the pictures, one folder per class;
* `texts/train_titles.csv`, `texts/test_titles.csv`: one row per picture, no header: the image's file name, its text,
  its class (the CSV module's quoting: a text with commas is quoted).

The classes are the class folders of `images/train`, sorted (101 in the release; corpus.classes overrides them,
for a subset). A sample is a row of a titles file whose picture is in the class folder of the same split: a row whose
picture is missing, a row of another class than its folder, a picture with no row, an empty text, or a file that
is not a readable image (its header is read, not its pixels) is an error naming the file, all collected per kind in
one InputError. The split is the release's (`split` column: one fold; mlaflow.data.folds draws validation from the
training rows, as QMF's and MLA's loaders do with a held-out part of train). There are no speakers: `speaker` is
empty, `session` 1 for train and 2 for test.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pandas as pd

from mlaflow.data.manifest import MANIFEST_COLUMNS, raise_problems
from mlaflow.data.pictures import readable_image
from mlaflow.errors import InputError

SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# the embedded look-alike's classes (mlaflow.data.synthetic_food101): Food-101 class names, the first
# corpus.embedded_food101.classes of them
EMBEDDED_CLASSES = (
    "apple_pie",
    "caesar_salad",
    "chocolate_cake",
    "french_fries",
    "grilled_salmon",
    "pizza",
    "ramen",
    "sushi",
)


def titles_file(root: Path, split: str) -> Path:
    return root / "texts" / f"{split}_titles.csv"


def images_dir(root: Path, split: str) -> Path:
    return root / "images" / split


def configured_classes(config: dict) -> list[str]:
    """The classes of kind food101: corpus.classes where set, else the class folders of images/train (read when the
    config is parsed, so every job knows them)."""
    corpus = config["corpus"]
    if corpus.get("classes"):
        return list(corpus["classes"])
    folder = images_dir(Path(corpus["root"]), "train")
    if not folder.is_dir():
        raise InputError(
            folder, "folder not found", "point corpus.root at a UPMC Food-101 tree (docs/data-formats.md)"
        )
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def embedded_classes(config: dict) -> list[str]:
    """The classes of kind embedded_food101: the first corpus.embedded_food101.classes of EMBEDDED_CLASSES."""
    return list(EMBEDDED_CLASSES[: config["corpus"]["embedded_food101"]["classes"]])


def read_titles(path: Path) -> list[tuple[str, str, str]]:
    """(image file name, text, class) rows of a titles file."""
    if not path.is_file():
        raise InputError(
            path, "texts file not found", "point corpus.root at a UPMC Food-101 tree (docs/data-formats.md)"
        )
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        rows = [row for row in csv.reader(handle) if row]
    bad = [index + 1 for index, row in enumerate(rows) if len(row) != 3]
    if bad:
        raise InputError(
            path,
            f"row(s) {bad[:5]} do not have 3 fields (image, text, class)",
            "correct the file (quote texts with commas)",
        )
    return [(name.strip(), text, label.strip()) for name, text, label in rows]


def build_manifest(root: Path, classes: list[str]) -> tuple[pd.DataFrame, dict]:
    """Manifest of every picture-text pair of a UPMC Food-101 tree (columns MANIFEST_COLUMNS + split), and counts."""
    root = Path(root)
    rows: list[dict] = []
    problems: dict[str, list[tuple[Path | str, str]]] = {
        "missing": [],
        "unpaired": [],
        "empty": [],
        "class": [],
        "image": [],
    }
    skipped = Counter()
    for split in SPLITS:
        folder = images_dir(root, split)
        if not folder.is_dir():
            raise InputError(
                folder, "folder not found", "point corpus.root at a UPMC Food-101 tree (docs/data-formats.md)"
            )
        titles = titles_file(root, split)
        paired: set[Path] = set()
        for name, text, label in read_titles(titles):
            if label not in classes:
                skipped[label] += 1  # a class left out by corpus.classes
                continue
            path = folder / label / name
            paired.add(path)
            if not path.is_file():
                elsewhere = list(folder.glob(f"*/{name}"))
                detail = (
                    f"row of class {label}, but the picture is in {elsewhere[0].parent.name}"
                    if elsewhere
                    else "no such picture"
                )
                problems["class" if elsewhere else "missing"].append((path, f"{titles.name}: {detail}"))
                continue
            if not text.strip():
                problems["empty"].append((path, f"{titles.name}: empty text"))
                continue
            unreadable = readable_image(path)
            if unreadable:
                problems["image"].append((path, unreadable))
                continue
            rows.append(
                {
                    "utterance_id": f"{split}/{Path(name).stem}",
                    "session": 1 if split == "train" else 2,
                    "speaker": "",
                    "label": label,
                    "label_index": classes.index(label),
                    "wav_path": "",
                    "transcript": " ".join(text.split()),
                    "frames_dir": "",
                    "n_frames": 0,
                    "image_path": str(path),
                    "split": split,
                }
            )
        for name in classes:
            for path in sorted((folder / name).glob("*")):
                if path.suffix.lower() in IMAGE_SUFFIXES and path not in paired:
                    problems["unpaired"].append((path, f"no row in {titles.name}"))
    raise_problems(
        problems["missing"],
        "rows whose picture is missing",
        "image",
        "restore the pictures, or delete their rows",
    )
    raise_problems(
        problems["class"],
        "rows of another class than their picture's folder",
        "class",
        "correct the class column",
    )
    raise_problems(
        problems["unpaired"],
        "pictures without a text",
        "text",
        "add the picture's row to the titles file, or remove the picture",
    )
    raise_problems(
        problems["empty"], "empty texts", "text", "restore the page's text, or delete the row and its picture"
    )
    raise_problems(
        problems["image"],
        "unreadable pictures",
        "image",
        "re-download the pictures, or delete them and their rows",
    )
    manifest = pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, "split"])
    if manifest.empty:
        raise InputError(
            root,
            "no picture-text pairs found",
            "point corpus.root at a UPMC Food-101 tree (docs/data-formats.md)",
        )
    manifest = manifest.astype({"session": "int64", "label_index": "int64", "n_frames": "int64"})
    per_class = Counter(manifest["label"])
    counts = {
        "n_classes": len(classes),
        "n_kept": len(manifest),
        "n_dropped": int(sum(skipped.values())),
        "dropped_per_label": dict(sorted(skipped.items())),
        "kept_per_class": {name: per_class[name] for name in classes},
        "split": manifest["split"].value_counts().to_dict(),
    }
    return manifest, counts


def manifest_for(config: dict, root: Path) -> tuple[pd.DataFrame, dict]:
    """The manifest job's entry (mlaflow.data.manifest): the tree at `root`, with the config's classes."""
    return build_manifest(Path(root), list(config["classes"]))
