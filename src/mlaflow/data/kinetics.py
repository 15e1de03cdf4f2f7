"""Kinetics-Sounds adapter: the layout of the OGM-GE / PMR line of work (audio per clip, frames at 1 fps per clip,
a class file) -> one manifest table.

Kinetics-Sounds (Arandjelovic & Zisserman 2017) is the subset of Kinetics whose classes can be heard; papers use
31, 32, 33 or 34 of them, and ship their own class lists and clip lists. mlaflow reads the tree their
pre-processing writes (GeWu-Lab/OGM-GE_CVPR2022, pre-processing; the `KSDataset` of that line of work), under the
root:

* `class.txt`: the class names on one line, comma-separated (a space inside a name reads as `_`, as their code
  reads it); the order is label_index, the count is whatever the file lists (recorded in the manifest job's log);
* `audio/train/<class>/<clip>.wav`, `audio/test/<class>/<clip>.wav`: the clip's audio;
* `visual/train_img/Image-01-FPS/<class>/<clip>/000.png, 001.png, ...` (and `val_img` for test): its frames at
  1 fps, numbered from 000 without gaps (extract them with `ffmpeg -i <clip>.mp4 -vf fps=1 -start_number 0
  <clip>/%03d.png`; the visual encoders read frames 000 .. n_frames-1).

A clip is the pair of a wav file and a frame folder of the same name in the same class and split (their code pairs
two sorted lists, which silently mispairs once a file is missing: here a clip with only one of the two is an error
naming it). The train/test split is the tree's (`split` column: one fold; mlaflow.data.folds draws validation from
the training clips). Clips with fewer frames than the visual encoder takes fail at extraction, naming the folder
(their code drops clips with fewer than 3 frames silently). There are no speakers: `speaker` is the clip's class,
`session` 1 for train and 2 for test. Problems are collected per kind and reported as one InputError.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from mlaflow.data.manifest import MANIFEST_COLUMNS, raise_problems
from mlaflow.errors import InputError

CLASS_FILE = "class.txt"
SPLITS = {
    "train": ("audio/train", "visual/train_img/Image-01-FPS"),
    "test": ("audio/test", "visual/val_img/Image-01-FPS"),
}
FRAME_SUFFIX = ".png"


# the embedded look-alike's classes (mlaflow.data.synthetic_ks): Kinetics-Sounds class names, the first
# corpus.embedded_ks.classes of them
EMBEDDED_CLASSES = (
    "playing_bagpipes",
    "playing_drums",
    "dog_barking",
    "playing_harmonica",
    "chopping_wood",
    "ripping_paper",
    "playing_trumpet",
    "laughing",
)


def configured_classes(config: dict) -> list[str]:
    """The classes of kind kinetics: corpus.classes where set, else the class file of the tree at corpus.root
    (read when the config is parsed, so every job knows them)."""
    corpus = config["corpus"]
    if corpus.get("classes"):
        return list(corpus["classes"])
    return read_class_file(Path(corpus["root"]) / CLASS_FILE)


def embedded_classes(config: dict) -> list[str]:
    """The classes of kind embedded_ks: the first corpus.embedded_ks.classes of EMBEDDED_CLASSES."""
    return list(EMBEDDED_CLASSES[: config["corpus"]["embedded_ks"]["classes"]])


def read_class_file(path: Path) -> list[str]:
    """The class names of a class file (one line, comma-separated; inner spaces -> `_`), in label_index order."""
    if not path.is_file():
        raise InputError(
            path, "class file not found", "write the class list (one line, comma-separated) there"
        )
    text = path.read_text(encoding="utf-8").strip()
    names = ["_".join(name.split()) for name in text.split(",")]
    duplicates = sorted(name for name, n in Counter(names).items() if n > 1)
    if len(names) < 2 or "" in names or duplicates:
        raise InputError(
            path,
            f"must list two or more distinct, non-empty class names on one line (duplicates: {duplicates})",
            "correct the class list",
        )
    return names


def build_manifest(root: Path, classes: list[str]) -> tuple[pd.DataFrame, dict]:
    """Manifest of every clip of a Kinetics-Sounds tree (columns MANIFEST_COLUMNS + split), sorted by split, class
    and clip, and counts. `classes`: the class names in label_index order (the class file's, or corpus.classes)."""
    root = Path(root)
    rows, problems, unknown, numbering = [], [], [], []
    for split, (audio_dir, visual_dir) in SPLITS.items():
        for folder in (root / audio_dir, root / visual_dir):
            if not folder.is_dir():
                raise InputError(
                    folder, "folder not found", "point corpus.root at a Kinetics-Sounds tree (README)"
                )
        for tree in (root / audio_dir, root / visual_dir):
            unknown += [
                (folder, "not in the class list")
                for folder in sorted(tree.iterdir())
                if folder.is_dir() and folder.name not in classes
            ]
        for index, name in enumerate(classes):
            wavs = {p.stem: p for p in sorted((root / audio_dir / name).glob("*.wav"))}
            frames = {p.name: p for p in sorted((root / visual_dir / name).glob("*")) if p.is_dir()}
            for clip in sorted(set(wavs) ^ set(frames)):
                where = wavs.get(clip) or frames[clip]
                problems.append((where, "no frames folder" if clip in wavs else "no wav file"))
            for clip in sorted(set(wavs) & set(frames)):
                names = sorted(p.name for p in frames[clip].iterdir() if p.is_file())
                n_frames = len(names)
                if names != [f"{k:03d}{FRAME_SUFFIX}" for k in range(n_frames)]:
                    numbering.append((frames[clip], f"{n_frames} files, first {names[:2]}"))
                rows.append(
                    {
                        "utterance_id": clip,
                        "session": 1 if split == "train" else 2,
                        "speaker": name,
                        "label": name,
                        "label_index": index,
                        "wav_path": str(wavs[clip]),
                        "transcript": "",
                        "frames_dir": str(frames[clip]),
                        "n_frames": n_frames,
                        "split": split,
                    }
                )
    raise_problems(unknown, "class folders", "class", "add the class to the class file, or remove the folder")
    raise_problems(
        numbering,
        "frame folders not numbered 000.png, 001.png, ... without gaps",
        "frames",
        "extract the frames with ffmpeg's -start_number 0 and %03d.png (docs/data-formats.md)",
    )
    raise_problems(
        problems,
        "clips without both a wav file and a frames folder",
        "clip",
        "restore the missing half of each clip, or remove the clip from both trees",
    )
    manifest = pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, "split"])
    duplicated = manifest["utterance_id"][manifest["utterance_id"].duplicated()].tolist()
    if duplicated:
        raise InputError(root, f"clip name(s) used twice: {duplicated[:5]}", "give every clip a unique name")
    if manifest.empty:
        raise InputError(root, "no clips found", "point corpus.root at a Kinetics-Sounds tree (README)")
    manifest = manifest.astype({"session": "int64", "label_index": "int64", "n_frames": "int64"})
    per_class = Counter(zip(manifest["split"], manifest["label"]))
    counts = {
        "n_classes": len(classes),
        "n_kept": len(manifest),
        "n_dropped": 0,
        "dropped_per_label": {},
        "kept_per_class": {name: per_class[("train", name)] + per_class[("test", name)] for name in classes},
        "split": manifest["split"].value_counts().to_dict(),
    }
    return manifest, counts


def manifest_for(config: dict, root: Path) -> tuple[pd.DataFrame, dict]:
    """The manifest job's entry (mlaflow.data.manifest): the tree at `root`, with the config's classes."""
    return build_manifest(Path(root), list(config["classes"]))
