"""Face frames cut from IEMOCAP's dialog videos (the `faces` rule, corpus.face_frames: from_video).

The release ships no face frames: each dialog is one video, `SessionN/dialog/avi/DivX/<dialog>.avi`, both actors
side by side, and each utterance's window is the `[start - end]` of its line in `dialog/EmoEvaluation/<dialog>.txt`.
For every utterance with such a line this module:

1. samples times in its window at `sample_fps` (t = start + (k + 1/2) / sample_fps while t < end; the middle of
   the window when it is shorter than one period) and takes the video frame shown at each time (floor(t * fps));
2. keeps the half of the frame where the speaking actor sits. The utterance id says who speaks (`..._F012`: the
   female actor); which half is whose is the session's entry of `layout` (SESSION_LAYOUT below): `marked_left`,
   the actor the dialog is named after (`Ses01F_...`: F, the one wearing the motion-capture markers) on the left,
   as the public IEMOCAP parsers read the release (Kansizoglou's Iemocap-preprocess, `find_speaker`), or
   `F_left` / `M_left` for a copy laid out otherwise;
3. detects faces there with OpenCV's frontal-face Haar cascade, whose weights ship inside the opencv-python-headless
   wheel (no download, deterministic, fast on CPU; facenet-pytorch's MTCNN pins older torch releases than the
   workflow's), keeps the largest, widens it by `margin` on each side into a square inside the half, resizes it
   to `size` x `size` and writes it as `<out>/SessionN/<dialog>/<utterance>/000.png, 001.png, ...` (the layout
   the IEMOCAP adapter reads, docs/data-formats.md).

Videos are decoded by OpenCV's VideoCapture with the FFmpeg its wheel bundles: no system FFmpeg is needed, and one
library both decodes and detects. Frames are read in order (grab, then retrieve only the sampled ones), which is
exact for any codec, where seeking is not.

An utterance where no sampled frame has a face follows `on_no_face`: `missing` (the default) leaves its directory
empty, which the adapter reads as "no face": its visual modality is marked missing in every mask
(mlaflow.data.masks), counted in the log, in summary.json and in the report; `error` stops with an InputError
listing such utterances once every dialog is done (the finished dialogs are kept).

Resumable per dialog and atomic: dialogs are written into `<out>.partial/`, each renamed into place when complete
(with its counts as `<dialog>.json`); a rerun keeps the complete ones made with the same settings. The whole tree
is renamed onto `<out>` at the end, with `summary.json` (share of utterances with a face per dialog and session)
and `contact_sheet.png` (a few crops per session, for a look in the report).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlaflow.data.manifest import raise_problems
from mlaflow.errors import InputError
from mlaflow.io import atomic_path, write_json

log = logging.getLogger(__name__)

# Which half of the dialog video each actor occupies, per session of the release (see the module docstring).
SESSION_LAYOUT = {f"Session{n}": "marked_left" for n in range(1, 6)}
LAYOUTS = ("marked_left", "F_left", "M_left")
CASCADE = "haarcascade_frontalface_default.xml"
VIDEO_DIR = Path("dialog") / "avi" / "DivX"
VIDEO_SUFFIX = ".avi"
# `[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[...]`
WINDOW_LINE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\t(Ses\d\d[FM]\w*_([FM])\d+)\t")
CONTACT_SHEET_CROPS = 8  # per session


@dataclass(frozen=True)
class Window:
    utterance_id: str
    speaker: str  # F | M
    start_s: float
    end_s: float


def sample_times(start_s: float, end_s: float, sample_fps: float) -> list[float]:
    """Times sampled in [start, end): start + (k + 1/2) / sample_fps, or the window's middle if none fits."""
    period = 1.0 / sample_fps
    times = []
    t = start_s + period / 2
    while t < end_s:
        times.append(t)
        t += period
    return times or [(start_s + end_s) / 2]


def frame_index(t: float, fps: float) -> int:
    """The video frame shown at time t (frame k covers [k / fps, (k + 1) / fps))."""
    return int(np.floor(t * fps + 1e-9))


def speaker_half(dialog: str, speaker: str, layout: str) -> str:
    """'left' or 'right': where `speaker` (F | M) sits in `dialog`'s video under a session's `layout`."""
    if layout == "marked_left":
        left = dialog[5]  # Ses01F_impro01: the actor the dialog is named after
    elif layout in ("F_left", "M_left"):
        left = layout[0]
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return "left" if speaker == left else "right"


def read_windows(label_file: Path) -> list[Window]:
    """Every utterance window of one EmoEvaluation file, in file order."""
    windows = []
    for line in label_file.read_text(errors="replace").splitlines():
        match = WINDOW_LINE.match(line)
        if match:
            start, end, utt, speaker = match.groups()
            windows.append(Window(utt, speaker, float(start), float(end)))
    return windows


def detect_face(gray: np.ndarray, cascade, min_face: float, min_neighbors: int) -> tuple | None:
    """(x, y, w, h) of the largest face in a grayscale image, or None."""
    import cv2

    side = max(1, round(min_face * gray.shape[0]))
    gray = cv2.equalizeHist(
        gray
    )  # the cascade compares the brightness of regions: stretch a dim or flat image
    faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=min_neighbors, minSize=(side, side))
    if len(faces) == 0:
        return None
    return tuple(int(v) for v in max(faces, key=lambda box: (box[2] * box[3], -box[0], -box[1])))


def crop_square(image: np.ndarray, box: tuple, margin: float) -> np.ndarray:
    """The box widened by `margin` of its side on each side, made square, shifted to lie inside the image."""
    x, y, w, h = box
    side = round(max(w, h) * (1 + 2 * margin))
    side = min(side, image.shape[0], image.shape[1])
    cx, cy = x + w / 2, y + h / 2
    left = int(np.clip(round(cx - side / 2), 0, image.shape[1] - side))
    top = int(np.clip(round(cy - side / 2), 0, image.shape[0] - side))
    return image[top : top + side, left : left + side]


# --------------------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------------------


def cut_faces(corpus_root: str | Path, out: str | Path, settings: dict, threads: int = 1) -> dict:
    """Cut every utterance's face frames from the dialog videos under `corpus_root` into `out`.

    `settings` is corpus.faces (sample_fps, size, margin, min_face, min_neighbors, on_no_face, layout).
    Returns the summary written to `out`/summary.json.
    """
    import cv2

    started = time.perf_counter()
    corpus_root, out = Path(corpus_root), Path(out)
    dialogs = _dialogs(corpus_root, settings["layout"])
    partial = out.with_name(out.name + ".partial")
    _reuse_or_clear(partial, settings)
    cascade_path = str(Path(cv2.data.haarcascades) / CASCADE)

    def run(dialog: tuple) -> dict:
        session, name, label_file, layout = dialog
        done = partial / session / f"{name}.json"
        if done.is_file():
            return json.loads(done.read_text())
        cascade = cv2.CascadeClassifier(cascade_path)  # one per thread: a classifier is not thread-safe
        counts = _cut_dialog(
            corpus_root / session, name, label_file, layout, partial / session, settings, cascade
        )
        write_json(done, counts)
        return counts

    cv2.setNumThreads(1)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = list(pool.map(_collect_errors(run), dialogs))
    errors = [r for r in results if isinstance(r, InputError)]
    if errors:
        raise (
            errors[0]
            if len(errors) == 1
            else InputError(
                errors[0].path,
                f"{len(errors)} dialogs failed; the first: {errors[0]}",
                "see each dialog's error in the log",
            )
        )
    per_dialog = {r["dialog"]: r for r in results}
    no_face = [utt for r in results for utt in r["no_face"]]
    if no_face and settings["on_no_face"] == "error":
        raise_problems(
            [(utt, "no face in any sampled frame") for utt in no_face],
            "utterance(s) without a detected face",
            "face",
            "set corpus.faces.on_no_face: missing (their visual modality is then marked missing), or lower "
            "corpus.faces.min_face / min_neighbors; the finished dialogs are kept for the rerun",
        )
    summary = _summary(per_dialog, settings, time.perf_counter() - started)
    write_json(partial / "summary.json", summary)
    _contact_sheet(partial, per_dialog, settings["size"])
    for utt in no_face:
        log.warning("no face found in %s: its visual modality is marked missing", utt)
    with atomic_path(out) as tmp:
        partial.rename(tmp)
    log.info(
        "faces: %s", {k: summary[k] for k in ("n_utterances", "with_face", "share_with_face", "seconds")}
    )
    return summary


def _collect_errors(function):
    def wrapped(item):
        try:
            return function(item)
        except InputError as err:
            log.error("%s", err)
            return err

    return wrapped


def _dialogs(corpus_root: Path, layouts: dict) -> list[tuple[str, str, Path, str]]:
    """(session, dialog, label file, layout) of every dialog with an EmoEvaluation file; a session without a
    layout is an InputError before any video is read."""
    if not corpus_root.is_dir():
        raise InputError(
            corpus_root, "corpus root directory not found", "set corpus.root to IEMOCAP_full_release"
        )
    dialogs, unknown = [], []
    for session_dir in sorted(p for p in corpus_root.iterdir() if re.fullmatch(r"Session\d+", p.name)):
        label_files = sorted(
            p for p in (session_dir / "dialog" / "EmoEvaluation").glob("*.txt") if not p.name.startswith(".")
        )
        if label_files and session_dir.name not in layouts:
            unknown.append((session_dir, "no entry in corpus.faces.layout"))
        for label_file in label_files:
            dialogs.append((session_dir.name, label_file.stem, label_file, layouts.get(session_dir.name)))
    raise_problems(
        unknown,
        "session(s) whose actor layout is unknown",
        "layout",
        "add `<SessionN>: marked_left` (or F_left / M_left: who sits on the left of its dialog videos) to "
        "corpus.faces.layout in params.yaml",
    )
    if not dialogs:
        raise InputError(
            corpus_root,
            "no Session*/dialog/EmoEvaluation/*.txt found",
            "point corpus.root at IEMOCAP_full_release",
        )
    return dialogs


def _reuse_or_clear(partial: Path, settings: dict) -> None:
    """Keep a partial tree made with the same settings (resume); remove one made with others."""
    stamp = partial / "settings.json"
    if partial.exists() and (not stamp.is_file() or json.loads(stamp.read_text()) != settings):
        shutil.rmtree(partial)
    if not partial.exists():
        partial.mkdir(parents=True)
        write_json(stamp, settings)
    else:
        log.info("resuming from %s", partial)


def _cut_dialog(
    session_dir: Path, dialog: str, label_file: Path, layout: str, out_session: Path, settings: dict, cascade
) -> dict:
    """Crops of every utterance of one dialog into out_session/<dialog>/ (atomically); its counts."""
    import cv2

    video_path = session_dir / VIDEO_DIR / f"{dialog}{VIDEO_SUFFIX}"
    restore = f"restore {VIDEO_DIR}/{dialog}{VIDEO_SUFFIX} of {session_dir.name} from the IEMOCAP release"
    if not video_path.is_file():
        raise InputError(video_path, "dialog video not found", restore)
    capture = cv2.VideoCapture(str(video_path))
    fps, n_frames = capture.get(cv2.CAP_PROP_FPS), int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    if not capture.isOpened() or fps <= 0 or n_frames <= 0:
        capture.release()
        raise InputError(video_path, "cannot be decoded as a video", restore)

    windows = read_windows(label_file)
    wanted: dict[int, list[tuple[str, str]]] = {}  # frame index -> [(utterance, half)]
    outside = []
    for window in windows:
        half = speaker_half(dialog, window.speaker, layout)
        indices = sorted(
            {frame_index(t, fps) for t in sample_times(window.start_s, window.end_s, settings["sample_fps"])}
        )
        if indices[-1] >= n_frames:
            outside.append(
                (
                    video_path,
                    f"{window.utterance_id} [{window.start_s}-{window.end_s}] ends after the video's "
                    f"{n_frames} frames at {fps:g} fps ({n_frames / fps:.2f} s)",
                )
            )
        for index in indices:
            wanted.setdefault(index, []).append((window.utterance_id, half))
    if outside:
        capture.release()
        raise_problems(
            outside,
            "utterance window(s) outside the dialog video",
            "window",
            f"check {label_file} against the video: a video cut short must be restored from the release",
        )

    crops: dict[str, list[np.ndarray]] = {w.utterance_id: [] for w in windows}
    last = max(wanted) if wanted else -1
    index = 0
    try:
        while index <= last:
            if not capture.grab():
                raise InputError(
                    video_path,
                    f"decoding stopped at frame {index} of {n_frames} (a damaged or truncated file)",
                    restore,
                )
            if index in wanted:
                ok, frame = capture.retrieve()
                if not ok:
                    raise InputError(video_path, f"frame {index} cannot be decoded", restore)
                width = frame.shape[1] // 2
                for utt, half in wanted[index]:
                    image = frame[:, :width] if half == "left" else frame[:, width : 2 * width]
                    box = detect_face(
                        cv2.cvtColor(image, cv2.COLOR_BGR2GRAY),
                        cascade,
                        settings["min_face"],
                        settings["min_neighbors"],
                    )
                    if box is not None:
                        crop = crop_square(image, box, settings["margin"])
                        size = settings["size"]
                        crops[utt].append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
            index += 1
    finally:
        capture.release()

    with atomic_path(out_session / dialog) as tmp:
        tmp.mkdir(parents=True)
        for utt, images in crops.items():
            (tmp / utt).mkdir()
            for k, image in enumerate(images):
                cv2.imwrite(str(tmp / utt / f"{k:03d}.png"), image)
    no_face = sorted(utt for utt, images in crops.items() if not images)
    return {
        "dialog": dialog,
        "session": session_dir.name,
        "n_utterances": len(crops),
        "with_face": len(crops) - len(no_face),
        "frames_written": sum(len(images) for images in crops.values()),
        "no_face": no_face,
    }


def _summary(per_dialog: dict, settings: dict, seconds: float) -> dict:
    sessions: dict[str, dict] = {}
    for counts in per_dialog.values():
        entry = sessions.setdefault(counts["session"], {"n_utterances": 0, "with_face": 0})
        entry["n_utterances"] += counts["n_utterances"]
        entry["with_face"] += counts["with_face"]
    for entry in sessions.values():
        entry["share_with_face"] = round(entry["with_face"] / max(1, entry["n_utterances"]), 4)
    n = sum(c["n_utterances"] for c in per_dialog.values())
    with_face = sum(c["with_face"] for c in per_dialog.values())
    return {
        "detector": f"OpenCV Haar cascade {CASCADE}",
        "settings": settings,
        "n_utterances": n,
        "with_face": with_face,
        "share_with_face": round(with_face / max(1, n), 4),
        "no_face": sorted(utt for c in per_dialog.values() for utt in c["no_face"]),
        "per_session": dict(sorted(sessions.items())),
        "per_dialog": {
            name: {
                "n_utterances": c["n_utterances"],
                "with_face": c["with_face"],
                "share_with_face": round(c["with_face"] / max(1, c["n_utterances"]), 4),
            }
            for name, c in sorted(per_dialog.items())
        },
        "seconds": round(seconds, 2),
    }


def _contact_sheet(root: Path, per_dialog: dict, size: int) -> None:
    """contact_sheet.png: one row per session, its first CONTACT_SHEET_CROPS crops (first frame of each utterance)."""
    import cv2

    rows = []
    for session in sorted({c["session"] for c in per_dialog.values()}):
        crops = []
        for dialog in sorted(d for d, c in per_dialog.items() if c["session"] == session):
            for utt_dir in sorted((root / session / dialog).iterdir()):
                first = utt_dir / "000.png"
                if first.is_file() and len(crops) < CONTACT_SHEET_CROPS:
                    crops.append(cv2.imread(str(first)))
        crops += [np.zeros((size, size, 3), np.uint8)] * (CONTACT_SHEET_CROPS - len(crops))
        rows.append(np.concatenate(crops, axis=1))
    if rows:
        cv2.imwrite(str(root / "contact_sheet.png"), np.concatenate(rows, axis=0))
