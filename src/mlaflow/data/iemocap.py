"""IEMOCAP adapter: the release's directory tree -> one manifest table of the utterances of a label setup.

Reads, for every `Session*` directory under the root (the real `IEMOCAP_full_release` or the embedded corpus
of `mlaflow.data.synthetic`, which share the layout):

* `SessionN/dialog/EmoEvaluation/<dialog>.txt`: the consensus label of each utterance (lines starting `[`);
* `SessionN/dialog/transcriptions/<dialog>.txt`: `<utterance_id> [start-end]: text` lines;
* `SessionN/sentences/wav/<dialog>/<utterance_id>.wav`: the audio;
* face frames, `<dialog>/<utterance_id>/000.png, 001.png, ...`: with corpus.face_frames from_video (the default)
  under `<faces_root>/SessionN/`, where the `faces` rule cut them from the release's dialog videos
  (mlaflow.data.faces); an empty directory there is an utterance without a detected face, kept with 0 frames
  (its visual modality is masked as missing). With precut, under `SessionN/sentences/faces/` of the tree, cut
  beforehand by any face detector (see docs/data-formats.md).

Only existence is checked here; decoding happens in feature extraction. Problems are collected per kind
and reported as one `InputError` naming the first few files at fault and the count.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pandas as pd

from mlaflow.data.manifest import MANIFEST_COLUMNS, raise_problems
from mlaflow.errors import InputError, ParamsError

# Every label code that appears in the release's EmoEvaluation files (xxx: no majority among annotators).
IEMOCAP_CODES = frozenset({"neu", "hap", "exc", "sad", "ang", "fru", "sur", "fea", "dis", "oth", "xxx"})

# Raw code -> class name per setup; codes not listed are dropped. 4class merges excited into happy, as is
# customary on IEMOCAP (and as the MLA paper does).
LABEL_SETUPS = {
    "4class": {"neu": "neu", "hap": "hap", "exc": "hap", "sad": "sad", "ang": "ang"},
    "6class": {"neu": "neu", "hap": "hap", "sad": "sad", "ang": "ang", "exc": "exc", "fru": "fru"},
}
# Class order = label_index. 6class starts with the 4 classes of 4class, in the same order.
CLASS_NAMES = {"4class": ["neu", "hap", "sad", "ang"], "6class": ["neu", "hap", "sad", "ang", "exc", "fru"]}

SESSION_DIR = re.compile(r"^Session(\d+)$")
# `Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.` (the text may be empty: that is reported later)
TRANSCRIPT_LINE = re.compile(r"^(Ses\w+)\s*\[\s*[\d.]+\s*-\s*[\d.]+\s*\]:\s?(.*)$")
TIME_SPAN = re.compile(r"^\[\s*(\d+(?:\.\d+)?)\s*-\s*\d+(?:\.\d+)?\s*\]$")  # [start - end], seconds
UTTERANCE_ID = re.compile(r"^(Ses\d\d[FM]\w*)_([FM])\d+$")  # groups: dialog, gender of the speaker
FRAME_SUFFIX = ".png"


def build_manifest(root: Path, label_setup: str, faces_root: Path | None = None) -> tuple[pd.DataFrame, dict]:
    """Manifest of the utterances whose label belongs to `label_setup` (4class | 6class), and counts.

    Returns (manifest, counts): the manifest has MANIFEST_COLUMNS, one row per kept utterance, sorted by
    utterance_id; `counts` = {"kept_per_class": {class: n}, "dropped_per_label": {raw code: n},
    "n_kept": n, "n_dropped": n, "no_face": n}. `faces_root`: the `faces` rule's output (face_frames from_video), None
    for frames in the tree (precut). Raises InputError naming the file for a missing, incomplete or
    inconsistent tree, and ParamsError for an unknown label setup.
    """
    if label_setup not in LABEL_SETUPS:
        raise ParamsError(
            "corpus.label_setup", f"unknown label setup {label_setup!r}", f"use one of {sorted(LABEL_SETUPS)}"
        )
    root = Path(root)
    sessions = _session_dirs(root)
    labels = _read_labels(sessions)
    mapping = LABEL_SETUPS[label_setup]
    kept = {utt: entry for utt, entry in labels.items() if entry["code"] in mapping}
    dropped = Counter(entry["code"] for entry in labels.values() if entry["code"] not in mapping)
    if not kept:
        raise InputError(
            root,
            f"no utterance has a label of the {label_setup} setup "
            f"({len(labels)} labelled utterances, labels {dict(sorted(dropped.items()))})",
            "check corpus.root and corpus.label_setup in params.yaml",
        )

    transcripts = _read_transcripts(root, kept)
    rows = []
    for utt, entry in kept.items():
        session_dir = entry["session_dir"]
        dialog = UTTERANCE_ID.match(utt).group(1)
        frames_dir = (
            Path(faces_root) / session_dir.name / dialog / utt
            if faces_root is not None
            else session_dir / "sentences" / "faces" / dialog / utt
        )
        rows.append(
            {
                "utterance_id": utt,
                "session": entry["session"],
                "speaker": utt[:5] + UTTERANCE_ID.match(utt).group(2),  # Ses01 + F/M: the actor who speaks
                "label": mapping[entry["code"]],
                "label_index": CLASS_NAMES[label_setup].index(mapping[entry["code"]]),
                "wav_path": str(session_dir / "sentences" / "wav" / dialog / f"{utt}.wav"),
                "transcript": transcripts[utt],
                "frames_dir": str(frames_dir),
                "n_frames": _count_frames(frames_dir),
                "dialog": dialog,
                "start": entry["start"],
            }
        )
    manifest = pd.DataFrame(rows).sort_values("utterance_id", ignore_index=True)
    # the conversation order (GCNet's graph): the kept utterances of a dialog by start time
    manifest["turn"] = manifest.groupby("dialog")["start"].rank(method="first").astype("int64") - 1
    manifest = manifest.reindex(columns=MANIFEST_COLUMNS)  # image_path: none here
    manifest = manifest.astype({"session": "int64", "label_index": "int64", "n_frames": "int64"})
    _check_media(manifest, from_video=faces_root is not None)

    per_class = Counter(manifest["label"])
    counts = {
        "kept_per_class": {name: per_class.get(name, 0) for name in CLASS_NAMES[label_setup]},
        "dropped_per_label": dict(sorted(dropped.items())),
        "n_kept": len(manifest),
        "n_dropped": sum(dropped.values()),
        "no_face": int((manifest["n_frames"] == 0).sum()),
    }
    return manifest, counts


# --------------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------------


def _session_dirs(root: Path) -> list[tuple[int, Path]]:
    """(session number, directory) of every SessionN directory under `root`, in session order."""
    if not root.is_dir():
        raise InputError(
            root,
            "corpus root directory not found",
            "set corpus.root in params.yaml to the IEMOCAP_full_release directory "
            "(or corpus.kind: embedded to generate a corpus)",
        )
    sessions = sorted(
        (int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := SESSION_DIR.match(p.name))
    )
    if not sessions:
        raise InputError(
            root,
            "no Session* directory (Session1 ... Session5) found",
            "point corpus.root at the IEMOCAP_full_release directory itself",
        )
    return sessions


def _read_labels(sessions: list[tuple[int, Path]]) -> dict[str, dict]:
    """utterance_id -> {code, session, session_dir, label_file, line} from all EmoEvaluation files."""
    labels: dict[str, dict] = {}
    unknown, malformed, duplicates, no_label_files = [], [], [], []
    for session, session_dir in sessions:
        label_dir = session_dir / "dialog" / "EmoEvaluation"
        # top-level *.txt only: the release's Categorical/, Attribute/, Self-evaluation/ subfolders hold
        # per-annotator files; names starting with "." are macOS metadata in some copies
        label_files = sorted(p for p in label_dir.glob("*.txt") if not p.name.startswith("."))
        if not label_files:
            no_label_files.append((label_dir, "no <dialog>.txt files"))
        for label_file in label_files:
            for line_no, line in enumerate(label_file.read_text(errors="replace").splitlines(), start=1):
                if not line.startswith("["):
                    continue  # header, blank, annotator lines
                fields = line.split("\t")
                if len(fields) < 3 or not UTTERANCE_ID.match(fields[1].strip()):
                    malformed.append((label_file, f"line {line_no}: {line.strip()[:60]!r}"))
                    continue
                utt, code = fields[1].strip(), fields[2].strip()
                start = TIME_SPAN.match(fields[0].strip())
                if start is None:
                    malformed.append((label_file, f"line {line_no}: {line.strip()[:60]!r}"))
                    continue
                if code not in IEMOCAP_CODES:
                    unknown.append((label_file, f"line {line_no}: {utt} has {code!r}"))
                    continue
                if utt in labels:
                    duplicates.append(
                        (label_file, f"line {line_no}: {utt}, also in {labels[utt]['label_file']}")
                    )
                    continue
                labels[utt] = {
                    "code": code,
                    "start": float(start.group(1)),  # seconds into the dialog: the turn order
                    "session": session,
                    "session_dir": session_dir,
                    "label_file": label_file,
                }
    raise_problems(
        no_label_files,
        "session(s) without label files",
        "EmoEvaluation",
        "restore dialog/EmoEvaluation/<dialog>.txt from the IEMOCAP release",
    )
    raise_problems(
        malformed,
        "malformed label line(s); expected `[start - end]<TAB>utterance_id<TAB>code<TAB>[v, a, d]`",
        "EmoEvaluation",
        "restore the file from the IEMOCAP release",
    )
    raise_problems(
        unknown,
        f"unknown label code(s); known: {', '.join(sorted(IEMOCAP_CODES))}",
        "EmoEvaluation",
        "correct the code in the label file",
    )
    raise_problems(duplicates, "utterance(s) labelled twice", "EmoEvaluation", "remove the duplicate line")
    return labels


def _read_transcripts(root: Path, wanted: dict[str, dict]) -> dict[str, str]:
    """utterance_id -> transcript text for the `wanted` utterances; errors for missing or empty ones.

    Lines that are not utterances are skipped: ids containing XX (untranscribed, unlabelled segments) and
    lines without an id such as `M: [LAUGHTER]`.
    """
    files: dict[Path, list[str]] = {}
    for utt, entry in wanted.items():
        dialog = UTTERANCE_ID.match(utt).group(1)
        files.setdefault(entry["session_dir"] / "dialog" / "transcriptions" / f"{dialog}.txt", []).append(utt)
    transcripts: dict[str, str] = {}
    missing_file, missing_line, empty = [], [], []
    for path, utterances in sorted(files.items()):
        if not path.is_file():
            missing_file.append(
                (path, f"needed for {len(utterances)} labelled utterance(s), e.g. {utterances[0]}")
            )
            continue
        in_file = {}
        for line in path.read_text(errors="replace").splitlines():
            match = TRANSCRIPT_LINE.match(line.strip())
            if match and "XX" not in match.group(1):
                in_file[match.group(1)] = match.group(2).strip()
        for utt in utterances:
            if utt not in in_file:
                missing_line.append((path, utt))
            elif not in_file[utt]:
                empty.append((path, utt))
            else:
                transcripts[utt] = in_file[utt]
    raise_problems(
        missing_file,
        "transcription file(s) missing",
        "transcription",
        "restore dialog/transcriptions/<dialog>.txt from the IEMOCAP release",
    )
    raise_problems(
        missing_line,
        "labelled utterance(s) without a transcription line",
        "transcription",
        "add the line `<utterance_id> [start-end]: text` or remove the utterance's label",
    )
    raise_problems(empty, "empty transcript(s)", "transcription", "add the utterance's text to the line")
    return transcripts


def _count_frames(frames_dir: Path) -> int:
    if not frames_dir.is_dir():
        return -1
    return sum(1 for p in frames_dir.iterdir() if p.suffix.lower() == FRAME_SUFFIX)


def _check_media(manifest: pd.DataFrame, from_video: bool) -> None:
    """Every kept utterance needs its wav file and a face-frame directory, not empty unless the `faces` rule
    made it (from_video: no face found)."""
    missing_wav = [(p, "not found") for p in manifest["wav_path"] if not Path(p).is_file()]
    raise_problems(
        missing_wav,
        "wav file(s) missing",
        "wav",
        "restore sentences/wav/<dialog>/<utterance_id>.wav from the IEMOCAP release",
    )
    no_dir = [(p, "not found") for p in manifest.loc[manifest["n_frames"] < 0, "frames_dir"]]
    raise_problems(
        no_dir,
        "face-frame directory(ies) missing",
        "face-frame",
        "the faces rule writes a directory for every utterance with an EmoEvaluation line: check the utterance "
        "has one and rerun it (`snakemake --forcerun faces`)"
        if from_video
        else "extract the utterance's face frames into sentences/faces/<dialog>/<utterance_id>/000.png, "
        "001.png, ... (see docs/data-formats.md), or set corpus.face_frames: from_video to cut them from the "
        "dialog videos",
    )
    if from_video:
        return  # an empty directory: no face found; its visual modality is masked as missing
    no_frames = [(p, "empty") for p in manifest.loc[manifest["n_frames"] == 0, "frames_dir"]]
    raise_problems(
        no_frames,
        f"face-frame directory(ies) without {FRAME_SUFFIX} frames",
        "face-frame",
        f"extract the utterance's face frames there as 000{FRAME_SUFFIX}, 001{FRAME_SUFFIX}, ... "
        "(see docs/data-formats.md)",
    )


def manifest_for(config: dict, root: Path) -> tuple[pd.DataFrame, dict]:
    """The manifest job's entry (mlaflow.data.manifest): the tree at `root` under config's label setup."""
    faces_root = config.get("faces_root") if config.get("face_frames") == "from_video" else None
    return build_manifest(Path(root), config["label_setup"], Path(faces_root) if faces_root else None)
