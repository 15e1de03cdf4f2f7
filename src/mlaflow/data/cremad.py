"""CREMA-D adapter: the release's AudioWAV folder plus extracted video frames -> one manifest table.

CREMA-D (github.com/CheyneyComputerScience/CREMA-D) has 7,442 clips of 91 actors (1001-1091), each saying
one of 12 sentences with one of 6 emotions. Reads, under the root:

* `AudioWAV/<ActorID>_<Sentence>_<Emotion>_<Level>.wav`, e.g. `1001_DFA_ANG_XX.wav`: the audio;
* `frames/<stem>/000.png, 001.png, ...`: frames of `VideoFlash/<stem>.flv`. The release has videos, not
  frames; mlaflow expects them extracted into this layout (see docs/data-formats.md, section CREMA-D), numbered from 000 without
  gaps, because the visual encoder reads frames 000 .. n_frames-1.

The label is the emotion the actor was asked to portray, from the file name (as OGM-GE and the MLA code
use it), not the raters' perceived emotion of `finishedResponses.csv`. All intensity levels are kept.
CREMA-D has no text: `transcript` is the empty string.

CREMA-D has no recording sessions. To keep mlaflow's leave-one-session-out folds speaker independent,
`session` is a speaker group: actors sorted by ID are dealt round-robin into `speaker_groups` groups
numbered 1..K (the i-th actor goes to group i mod K + 1), so every actor is in exactly one group and group
sizes differ by at most one actor (91 actors, K=5: 19, 18, 18, 18, 18). Fold k then tests on actors no
training fold has heard or seen.

Only names and existence are checked here; decoding happens in feature extraction. Problems are collected
per kind and reported as one `InputError` naming the first few files at fault and the count.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pandas as pd

from mlaflow.data.manifest import MANIFEST_COLUMNS, raise_problems
from mlaflow.errors import InputError, ParamsError

# Emotion code of the file name -> class name, per label setup.
LABEL_SETUPS = {
    "6class": {"NEU": "neu", "HAP": "hap", "SAD": "sad", "FEA": "fea", "DIS": "dis", "ANG": "ang"}
}
# Class order = label_index: OGM-GE's and the MLA code's order (NEU 0, HAP 1, SAD 2, FEA 3, DIS 4, ANG 5).
CLASS_NAMES = {"6class": ["neu", "hap", "sad", "fea", "dis", "ang"]}
EMOTION_CODES = frozenset(LABEL_SETUPS["6class"])
SENTENCE_CODES = frozenset(
    {"IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI"}
)
LEVEL_CODES = frozenset({"LO", "MD", "HI", "XX"})  # low, medium, high, unspecified
DEFAULT_SPEAKER_GROUPS = 5

CLIP_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")  # actor, sentence, emotion, level
AUDIO_DIR = "AudioWAV"
FRAMES_DIR = "frames"
FRAME_SUFFIX = ".png"
EXTRACT_FRAMES = (
    "extract them with `ffmpeg -i VideoFlash/<stem>.flv -vf fps=1 -start_number 0 "
    "frames/<stem>/%03d.png` (see docs/data-formats.md, section CREMA-D)"
)


def build_manifest(
    root: Path, label_setup: str = "6class", speaker_groups: int = DEFAULT_SPEAKER_GROUPS
) -> tuple[pd.DataFrame, dict]:
    """Manifest of every clip of a CREMA-D tree, and counts.

    Returns (manifest, counts): the manifest has MANIFEST_COLUMNS (mlaflow.data.manifest), one row per clip,
    sorted by utterance_id (= the file stem); `session` is the clip's speaker group (see the module
    docstring).
    `counts` = {"kept_per_class": {class: n}, "dropped_per_label": {}, "n_kept": n, "n_dropped": 0,
    "actors_per_session": {group: n}, "clips_per_session": {group: n}}: nothing is dropped, since every
    emotion code belongs to the 6-class setup and an unknown code is an error. Raises InputError naming
    the file for a missing, misnamed or inconsistent tree, ParamsError for an unknown label setup.
    """
    if label_setup not in LABEL_SETUPS:
        raise ParamsError(
            "corpus.label_setup",
            f"unknown label setup {label_setup!r} for CREMA-D",
            f"use one of {sorted(LABEL_SETUPS)}",
        )
    if speaker_groups < 2:
        raise ParamsError(
            "corpus.speaker_groups",
            f"is {speaker_groups}; folds need at least 2 speaker groups",
            "set it to 2 or more (5 is customary)",
        )
    root = Path(root)
    clips = _read_clip_names(root)
    frame_dirs = _frame_dirs(root, clips)
    group_of = assign_speaker_groups({clip["actor"] for clip in clips.values()}, speaker_groups, root)

    mapping, classes = LABEL_SETUPS[label_setup], CLASS_NAMES[label_setup]
    rows = [
        {
            "utterance_id": stem,
            "session": group_of[clip["actor"]],
            "speaker": clip["actor"],
            "label": mapping[clip["emotion"]],
            "label_index": classes.index(mapping[clip["emotion"]]),
            "wav_path": str(clip["wav_path"]),
            "transcript": "",
            "frames_dir": str(frame_dirs[stem][0]),
            "n_frames": frame_dirs[stem][1],
        }
        for stem, clip in clips.items()
    ]
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS).sort_values("utterance_id", ignore_index=True)
    manifest = manifest.astype({"session": "int64", "label_index": "int64", "n_frames": "int64"})

    per_class = Counter(manifest["label"])
    actors = manifest.drop_duplicates("speaker")["session"].value_counts()
    clips_per_group = manifest["session"].value_counts()
    counts = {
        "kept_per_class": {name: per_class.get(name, 0) for name in classes},
        "dropped_per_label": {},
        "n_kept": len(manifest),
        "n_dropped": 0,
        "actors_per_session": {int(g): int(actors[g]) for g in sorted(actors.index)},
        "clips_per_session": {int(g): int(clips_per_group[g]) for g in sorted(clips_per_group.index)},
    }
    return manifest, counts


def assign_speaker_groups(actors: set[str], n_groups: int, root: Path | None = None) -> dict[str, int]:
    """Actor ID -> speaker group 1..n_groups: actors sorted by ID, dealt round-robin (deterministic)."""
    if len(actors) < n_groups:
        raise InputError(
            root,
            f"only {len(actors)} actor(s) for {n_groups} speaker groups: some folds would have no test clips",
            "add the missing actors' clips, or lower corpus.speaker_groups",
        )
    return {actor: rank % n_groups + 1 for rank, actor in enumerate(sorted(actors))}


# --------------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------------


def _read_clip_names(root: Path) -> dict[str, dict]:
    """stem -> {actor, emotion, wav_path} for every AudioWAV/*.wav, names validated."""
    audio_dir = root / AUDIO_DIR
    if not root.is_dir():
        raise InputError(
            root,
            "corpus root directory not found",
            f"set corpus.root in params.yaml to the CREMA-D directory (the one holding {AUDIO_DIR}/)",
        )
    if not audio_dir.is_dir():
        raise InputError(
            audio_dir,
            f"no {AUDIO_DIR} directory under the corpus root",
            f"point corpus.root at the CREMA-D directory itself (the one holding {AUDIO_DIR}/)",
        )
    # names starting with "." are macOS metadata in some copies
    wavs = sorted(p for p in audio_dir.glob("*.wav") if not p.name.startswith("."))
    if not wavs:
        raise InputError(
            audio_dir,
            "holds no .wav files",
            "copy the release's AudioWAV/*.wav there (with git-lfs: a plain clone holds pointers)",
        )
    clips, malformed, unknown_emotion = {}, [], []
    for wav in wavs:
        match = CLIP_NAME.match(wav.stem)
        if not match or match.group(2) not in SENTENCE_CODES or match.group(4) not in LEVEL_CODES:
            malformed.append((wav, "not <ActorID>_<Sentence>_<Emotion>_<Level>"))
            continue
        actor, _, emotion, _ = match.groups()
        if emotion not in EMOTION_CODES:
            unknown_emotion.append((wav, f"emotion {emotion!r}"))
            continue
        clips[wav.stem] = {"actor": actor, "emotion": emotion, "wav_path": wav}
    raise_problems(
        malformed,
        "malformed clip name(s); expected e.g. 1001_DFA_ANG_XX.wav (4-digit actor, sentence "
        f"one of {', '.join(sorted(SENTENCE_CODES))}, level one of {', '.join(sorted(LEVEL_CODES))})",
        "file-name",
        "rename the file as in the CREMA-D release, or remove it",
    )
    raise_problems(
        unknown_emotion,
        f"unknown emotion code(s); known: {', '.join(sorted(EMOTION_CODES))}",
        "file-name",
        "rename the file as in the CREMA-D release, or remove it",
    )
    return clips


def _frame_dirs(root: Path, clips: dict[str, dict]) -> dict[str, tuple[Path, int]]:
    """stem -> (frames directory, number of frames); errors unless wavs and frame directories pair up."""
    frames_root = root / FRAMES_DIR
    if not frames_root.is_dir():
        raise InputError(
            frames_root,
            "frames directory not found (CREMA-D ships videos, not frames)",
            f"extract every clip's frames into {FRAMES_DIR}/<stem>/: {EXTRACT_FRAMES}",
        )
    found = {p.name: p for p in frames_root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    no_frames = [
        (root / AUDIO_DIR / f"{stem}.wav", f"no {FRAMES_DIR}/{stem}/")
        for stem in sorted(clips)
        if stem not in found
    ]
    no_wav = [(found[stem], f"no {AUDIO_DIR}/{stem}.wav") for stem in sorted(found) if stem not in clips]
    raise_problems(no_frames, "clip(s) without a frames directory", "frames", EXTRACT_FRAMES)
    raise_problems(
        no_wav,
        "frames directory(ies) without a wav",
        "frames",
        f"restore the clip's {AUDIO_DIR}/<stem>.wav, or delete its frames directory",
    )

    frame_dirs, empty, misnumbered = {}, [], []
    for stem in sorted(clips):
        names = sorted(p.name for p in found[stem].iterdir() if p.suffix == FRAME_SUFFIX)
        expected = {f"{index:03d}{FRAME_SUFFIX}" for index in range(len(names))}  # what the encoder reads
        if not names:
            empty.append((found[stem], f"empty: no {FRAME_SUFFIX} frames"))
        elif set(names) != expected:
            misnumbered.append(
                (found[stem], f"has {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}")
            )
        frame_dirs[stem] = (found[stem], len(names))
    raise_problems(empty, "frames directory(ies) without frames", "frames", EXTRACT_FRAMES)
    raise_problems(
        misnumbered,
        f"frames not numbered 000{FRAME_SUFFIX}, 001{FRAME_SUFFIX}, ... without gaps",
        "frames",
        "re-extract them with ffmpeg's `-start_number 0` (its default starts at 001), "
        "or rename them in order",
    )
    return frame_dirs


SPLIT_VALUES = ("train", "test")


def manifest_for(config: dict, root: Path) -> tuple[pd.DataFrame, dict]:
    """The manifest job's entry (mlaflow.data.manifest): the tree at `root`, in speaker-group folds, or, with
    `split_file` (OGM-GE's fixed train/test clip list: a CSV with columns clip and split), one fold of that split
    (column `split`; validation is drawn from its training clips by mlaflow.data.folds)."""
    manifest, counts = build_manifest(Path(root), config["label_setup"], config["speaker_groups"])
    if config.get("split_file"):
        manifest = apply_split_file(manifest, Path(config["split_file"]))
        counts["split"] = manifest["split"].value_counts().to_dict()
    return manifest, counts


def apply_split_file(manifest: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The manifest with a `split` column from a clip list; every clip listed exactly once, as train or test."""
    if not path.is_file():
        raise InputError(
            path, "split file not found", "point corpus.split_file at the CSV, or set it to null"
        )
    table = pd.read_csv(path, dtype=str)
    if {"clip", "split"} - set(table.columns):
        raise InputError(
            path, f"has columns {list(table.columns)}, expected clip and split", "rename the columns"
        )
    unknown = sorted(set(table["split"]) - set(SPLIT_VALUES))
    if unknown:
        raise InputError(
            path, f"split value(s) {unknown}; expected {list(SPLIT_VALUES)}", "correct the values"
        )
    twice = table["clip"][table["clip"].duplicated()].unique().tolist()
    if twice:
        raise InputError(path, f"clip(s) listed twice: {twice[:5]}", "list every clip once")
    split = dict(zip(table["clip"], table["split"]))
    unlisted = [clip for clip in manifest["utterance_id"] if clip not in split]
    foreign = sorted(set(split) - set(manifest["utterance_id"]))
    if unlisted or foreign:
        raise InputError(
            path,
            f"{len(unlisted)} clip(s) of the corpus are not listed (first: {unlisted[:3]}) and "
            f"{len(foreign)} listed clip(s) are not in the corpus (first: {foreign[:3]})",
            "list exactly the corpus's clips (file stems of AudioWAV)",
        )
    return manifest.assign(split=manifest["utterance_id"].map(split), session=1)
