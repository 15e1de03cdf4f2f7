"""MVSA adapter: MVSA-Single and MVSA-Multiple (Niu et al. 2016, "Sentiment analysis on multi-view social data")
-> one manifest table of tweets (a picture and its text) labelled positive, neutral or negative.

The release's layout, under the root (the folder `MVSA_Single` or `MVSA` of the archive):

* `data/<id>.jpg` and `data/<id>.txt`: each tweet's picture and text;
* `labelResultAll.txt`: a header line, then one line per tweet, tab-separated: the id, then one `text,image` pair of
  labels per annotator (one annotator in MVSA-Single, three in MVSA-Multiple; the adapter reads how many from the
  header).

The label, as the field does it (the rule of Xu & Mao 2017, MultiSentiNet, and of the public pre-processing of
MVSA that later work reuses, e.g. QMF's and MLA's data; the counts are in the manifest job's log):
1. MVSA-Multiple: each modality's label is the one at least two of the three annotators gave; a modality without
   such a majority drops the tweet (`no_majority`). MVSA-Single: the annotator's labels.
2. The tweet's label: the text's and the image's label where they agree; where one of them is neutral, the other
   one; where one is positive and the other negative, the pair is inconsistent and the tweet is dropped
   (`inconsistent`).
MVSA has no official split: the test split is a fixed 10% of the kept tweets, stratified by label and drawn with a
fixed seed (TEST_SEED), recorded in the `split` column (one fold; validation is drawn from the rest by
mlaflow.data.folds), so the split is the same on every machine.

Errors, each naming the file and the fix, all collected per kind in one InputError: an id of the label file without
its picture or its text file, an empty text, a picture whose header does not read, a label outside positive /
neutral / negative, a line with another number of fields than the header. Texts are read as UTF-8, with undecodable
bytes replaced (the release mixes encodings).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from mlaflow.data.manifest import MANIFEST_COLUMNS, raise_problems
from mlaflow.data.pictures import readable_image
from mlaflow.errors import InputError

CLASS_NAMES = ["positive", "neutral", "negative"]
LABEL_FILE = "labelResultAll.txt"
DATA_DIR = "data"
TEST_FRACTION = 0.1
TEST_SEED = 0


def combined_label(text: str | None, image: str | None) -> str | None:
    """The tweet's label from its text's and image's labels (None: dropped as inconsistent or without majority)."""
    if text is None or image is None:
        return None
    if text == image:
        return text
    if text == "neutral":
        return image
    if image == "neutral":
        return text
    return None  # positive against negative


def majority(labels: list[str]) -> str | None:
    """The label at least two of the annotators gave (the only one, for a single annotator), else None."""
    if len(labels) == 1:
        return labels[0]
    label, votes = Counter(labels).most_common(1)[0]
    return label if votes >= 2 else None


def read_labels(path: Path) -> tuple[list[tuple[str, list[str], list[str]]], int]:
    """(id, text labels, image labels) per tweet of the label file, and the number of annotators."""
    if not path.is_file():
        raise InputError(
            path, "label file not found", "point corpus.root at an MVSA-Single or MVSA-Multiple folder"
        )
    lines = [line.rstrip("\r\n") for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise InputError(path, "is empty", "restore the release's label file")
    n_annotators = len(lines[0].split("\t")) - 1
    if n_annotators < 1:
        raise InputError(path, "the header has no `text,image` column", "restore the release's label file")
    tweets, bad = [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        pairs = [field.split(",") for field in fields[1:]]
        if len(fields) != n_annotators + 1 or any(len(pair) != 2 for pair in pairs):
            bad.append((path, f"line {number}: {line[:60]!r}"))
            continue
        labels = [(text.strip().lower(), image.strip().lower()) for text, image in pairs]
        unknown = sorted({value for pair in labels for value in pair} - set(CLASS_NAMES))
        if unknown:
            bad.append((path, f"line {number}: unknown label(s) {unknown}"))
            continue
        tweets.append((fields[0].strip(), [text for text, _ in labels], [image for _, image in labels]))
    raise_problems(
        bad,
        f"lines that are not an id and {n_annotators} `text,image` pair(s) of positive/neutral/negative",
        "label",
        "correct the lines",
    )
    return tweets, n_annotators


def test_split(labels: pd.Series) -> np.ndarray:
    """True for the test rows: TEST_FRACTION of each label's rows (at least one where it has two), seeded."""
    rng = np.random.default_rng(TEST_SEED)
    test = np.zeros(len(labels), dtype=bool)
    for label in sorted(labels.unique()):
        rows = np.flatnonzero(labels.to_numpy() == label)
        n_test = round(TEST_FRACTION * len(rows)) or (1 if len(rows) > 1 else 0)
        test[rng.choice(rows, size=n_test, replace=False)] = True
    return test


def build_manifest(root: Path) -> tuple[pd.DataFrame, dict]:
    """Manifest of the kept tweets of an MVSA folder (columns MANIFEST_COLUMNS + split), and counts."""
    root = Path(root)
    tweets, n_annotators = read_labels(root / LABEL_FILE)
    data = root / DATA_DIR
    rows, unpaired, empty, unreadable = [], [], [], []
    dropped = Counter()
    for tweet_id, text_labels, image_labels in tweets:
        picture, text_file = data / f"{tweet_id}.jpg", data / f"{tweet_id}.txt"
        lacking = [path.name for path in (picture, text_file) if not path.is_file()]
        if lacking:
            unpaired.append((data / tweet_id, f"no {' and no '.join(lacking)}"))
            continue
        text_label, image_label = majority(text_labels), majority(image_labels)
        label = combined_label(text_label, image_label)
        if label is None:
            dropped["no_majority" if text_label is None or image_label is None else "inconsistent"] += 1
            continue
        text = " ".join(text_file.read_text(encoding="utf-8", errors="replace").split())
        if not text:
            empty.append((text_file, "empty text"))
            continue
        problem = readable_image(picture)
        if problem:
            unreadable.append((picture, problem))
            continue
        rows.append(
            {
                "utterance_id": tweet_id,
                "session": 1,
                "speaker": "",
                "label": label,
                "label_index": CLASS_NAMES.index(label),
                "wav_path": "",
                "transcript": text,
                "frames_dir": "",
                "n_frames": 0,
                "image_path": str(picture),
            }
        )
    raise_problems(
        unpaired,
        "ids of the label file without their picture or text",
        "tweet",
        "restore the files, or delete the id's line",
    )
    raise_problems(empty, "empty texts", "text", "restore the tweet's text, or delete its id's line")
    raise_problems(
        unreadable, "unreadable pictures", "image", "re-download the pictures, or delete their ids' lines"
    )
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    if manifest.empty:
        raise InputError(root, "no tweet kept", "point corpus.root at an MVSA-Single or MVSA-Multiple folder")
    manifest = manifest.astype({"session": "int64", "label_index": "int64", "n_frames": "int64"})
    manifest["split"] = np.where(test_split(manifest["label"]), "test", "train")
    manifest.loc[manifest["split"] == "test", "session"] = 2
    per_class = Counter(manifest["label"])
    counts = {
        "variant": "MVSA-Single" if n_annotators == 1 else f"MVSA-Multiple ({n_annotators} annotators)",
        "n_classes": len(CLASS_NAMES),
        "n_labelled": len(tweets),
        "n_kept": len(manifest),
        "n_dropped": int(sum(dropped.values())),
        "dropped_per_reason": dict(sorted(dropped.items())),
        "kept_per_class": {name: per_class[name] for name in CLASS_NAMES},
        "split": manifest["split"].value_counts().to_dict(),
    }
    return manifest, counts


def manifest_for(config: dict, root: Path) -> tuple[pd.DataFrame, dict]:
    """The manifest job's entry (mlaflow.data.manifest): the MVSA folder at `root` (its classes are fixed)."""
    return build_manifest(Path(root))
