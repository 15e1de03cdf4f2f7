"""Face frames cut from IEMOCAP's dialog videos (mlaflow.data.faces): the window arithmetic, the speaker's half,
the detector on the embedded corpus's videos, the no-face policy, bad videos and layouts, resuming; and what the
rest of the workflow makes of an utterance without a face (manifest, masks, visual features)."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mlaflow.data import synthetic
from mlaflow.data.faces import (
    SESSION_LAYOUT,
    crop_square,
    cut_faces,
    frame_index,
    read_windows,
    sample_times,
    speaker_half,
)
from mlaflow.data.iemocap import build_manifest
from mlaflow.data.masks import make_masks, recorded, within_recorded
from mlaflow.errors import InputError

SETTINGS = {
    "sample_fps": 2.0,
    "size": 48,
    "margin": 0.2,
    "min_face": 0.3,
    "min_neighbors": 3,
    "on_no_face": "missing",
    "layout": SESSION_LAYOUT,
}
CORPUS = {
    "seed": 3,
    "sessions": 2,
    "dialogs_per_session": 2,
    "utterances_per_dialog": 8,
    "sample_rate": 16000,
    "min_duration_s": 1.0,
    "max_duration_s": 2.0,
    "frames_per_utterance": 3,
    "image_size": 64,
    "video_fps": 5,
    "modality_strength": {"text": 0.8, "audio": 0.5, "visual": 0.25},
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faces") / "IEMOCAP_full_release"
    synthetic.generate_corpus(root, CORPUS, threads=1)
    return root


def _copy(corpus: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "IEMOCAP_full_release"
    shutil.copytree(corpus, dest)
    return dest


def _video(root: Path, dialog: str) -> Path:
    return root / f"Session{int(dialog[3:5])}" / "dialog" / "avi" / "DivX" / f"{dialog}.avi"


def _rewrite_video(path: Path, keep_frames: int | None = None, blank: bool = False) -> None:
    """The video again with only its first `keep_frames` frames, or with every frame a flat gray."""
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(np.full_like(frame, 90) if blank else frame)
    capture.release()
    frames = frames[:keep_frames] if keep_frames is not None else frames
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"DIVX"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()


# --------------------------------------------------------------------------------------------------------
# Arithmetic and layout
# --------------------------------------------------------------------------------------------------------


def test_sampled_times_lie_in_the_emoevaluation_window_at_the_configured_rate():
    # IEMOCAP's first line: [6.2901 - 8.2357] Ses01F_impro01_F000; the release's videos run at 29.97 fps
    times = sample_times(6.2901, 8.2357, 2.0)
    assert times == pytest.approx([6.5401, 7.0401, 7.5401, 8.0401])
    assert [frame_index(t, 29.97) for t in times] == [196, 210, 225, 240]
    # a window shorter than one period: its middle
    assert sample_times(3.0, 3.2, 2.0) == pytest.approx([3.1])
    # frame k covers [k / fps, (k + 1) / fps)
    assert frame_index(0.199999, 5) == 0 and frame_index(0.2, 5) == 1


def test_the_speaker_half_follows_the_session_layout():
    assert speaker_half("Ses01F_impro01", "F", "marked_left") == "left"
    assert speaker_half("Ses01F_impro01", "M", "marked_left") == "right"
    assert speaker_half("Ses01M_impro01", "M", "marked_left") == "left"
    assert speaker_half("Ses01M_impro01", "F", "F_left") == "left"
    assert speaker_half("Ses01F_impro01", "F", "M_left") == "right"


def test_a_crop_is_the_widened_square_box_kept_inside_the_image():
    image = np.arange(100 * 120).reshape(100, 120)
    crop = crop_square(image, (10, 20, 20, 30), margin=0.5)  # 30 x 1.5 ... side 60, centred on (20, 35)
    assert crop.shape == (60, 60)
    assert crop[0, 0] == image[5, 0]  # shifted right and down to stay inside


def test_windows_are_read_as_the_embedded_corpus_planned_them(corpus):
    planned = {u.utterance_id: u for u in synthetic.plan_corpus(CORPUS)}
    windows = read_windows(corpus / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt")
    assert len(windows) == CORPUS["utterances_per_dialog"]
    for window in windows:
        utt = planned[window.utterance_id]
        assert (window.start_s, window.end_s) == pytest.approx((utt.start_s, utt.end_s))
        assert window.speaker == utt.speaker.speaker_id[-1]


# --------------------------------------------------------------------------------------------------------
# The rule on the embedded videos
# --------------------------------------------------------------------------------------------------------


def test_the_faces_land_where_the_adapter_reads_them_and_the_detector_finds_the_drawn_faces(corpus, tmp_path):
    out = tmp_path / "faces"
    summary = cut_faces(corpus, out, SETTINGS, threads=2)
    n = CORPUS["sessions"] * CORPUS["dialogs_per_session"] * CORPUS["utterances_per_dialog"]
    assert summary["n_utterances"] == n
    assert summary["share_with_face"] >= 0.8  # measured: 0.91-0.95 on the embedded corpus
    assert set(summary["per_dialog"]) == {
        synthetic.dialog_name(s, d) for s in (1, 2) for d in range(CORPUS["dialogs_per_session"])
    }
    assert not out.with_name("faces.partial").exists()  # renamed into place
    assert (out / "contact_sheet.png").is_file()
    manifest, counts = build_manifest(corpus, "6class", faces_root=out)
    assert all(Path(d).parent.parent.parent == out for d in manifest["frames_dir"])
    with_frames = manifest[manifest["n_frames"] > 0]
    assert len(with_frames) >= 0.8 * len(manifest)
    assert counts["no_face"] == int((manifest["n_frames"] == 0).sum())
    first = cv2.imread(str(Path(with_frames["frames_dir"].iloc[0]) / "000.png"))
    assert first.shape == (SETTINGS["size"], SETTINGS["size"], 3)


def _distance_to_drawn(corpus: Path, faces: Path) -> float:
    """Mean absolute difference between each utterance's first crop and its drawn (pre-cut) first frame."""
    distances = []
    for crop_path in sorted(faces.glob("Session*/*/*/000.png")):
        utt_dir = crop_path.parent
        session, dialog = utt_dir.parent.parent.name, utt_dir.parent.name
        drawn = cv2.imread(str(corpus / session / "sentences" / "faces" / dialog / utt_dir.name / "000.png"))
        crop = cv2.resize(cv2.imread(str(crop_path)), drawn.shape[:2][::-1], interpolation=cv2.INTER_AREA)
        distances.append(np.abs(crop.astype(float) - drawn.astype(float)).mean())
    return float(np.mean(distances))


def test_the_speaking_actors_half_is_cut(corpus, tmp_path):
    right = cut_faces(corpus, tmp_path / "right", SETTINGS)
    # M_left swaps the halves of the dialogs named after the female actor (Ses0xF_...): compare on those
    wrong = cut_faces(
        corpus, tmp_path / "wrong", {**SETTINGS, "layout": dict.fromkeys(SESSION_LAYOUT, "M_left")}
    )
    assert right["n_utterances"] == wrong["n_utterances"]
    for faces in (tmp_path / "right", tmp_path / "wrong"):
        for dialog_dir in faces.glob("Session*/Ses0?M_*"):
            shutil.rmtree(dialog_dir) if dialog_dir.is_dir() else dialog_dir.unlink()
    # the speaker's crops look like the utterance's drawn frames; the listener's neutral face does not
    # (measured: 22.8 against 32.7 grey levels)
    assert _distance_to_drawn(corpus, tmp_path / "right") < 0.8 * _distance_to_drawn(
        corpus, tmp_path / "wrong"
    )


# --------------------------------------------------------------------------------------------------------
# No face, bad videos, bad layouts, resuming
# --------------------------------------------------------------------------------------------------------


def test_no_face_marks_the_visual_modality_missing_by_default(corpus, tmp_path):
    root = _copy(corpus, tmp_path)
    _rewrite_video(_video(root, "Ses01F_impro01"), blank=True)
    summary = cut_faces(root, tmp_path / "faces", SETTINGS)
    assert summary["per_dialog"]["Ses01F_impro01"]["with_face"] == 0
    assert len(summary["no_face"]) >= CORPUS["utterances_per_dialog"]
    manifest, counts = build_manifest(root, "6class", faces_root=tmp_path / "faces")
    blank = manifest["utterance_id"].str.startswith("Ses01F_impro01")
    assert (manifest.loc[blank, "n_frames"] == 0).all() and counts["no_face"] >= blank.sum()
    # every mask drops their visual modality, at every missing rate
    manifest_path = tmp_path / "manifest.csv"
    manifest.to_csv(manifest_path, index=False)
    config = {
        "masks": {"protocol": "bernoulli"},
        "modalities": ["audio", "visual", "text"],
        "all_missing": "prior",
        "seeds": [0, 1],
    }
    make_masks(config, manifest_path, 0.0, tmp_path / "masks.h5")
    import h5py

    with h5py.File(tmp_path / "masks.h5") as f:
        for seed in (0, 1):
            present = f[f"seed_{seed}"][:]
            assert not present[blank.to_numpy(), 1].any()
            assert present[~(manifest["n_frames"] == 0).to_numpy()].all()


def test_no_face_as_an_error_names_the_utterances_and_keeps_the_finished_dialogs(corpus, tmp_path):
    root = _copy(corpus, tmp_path)
    _rewrite_video(_video(root, "Ses01F_impro01"), blank=True)
    settings = {**SETTINGS, "on_no_face": "error"}
    with pytest.raises(InputError, match="without a detected face.*Ses01F_impro01_") as err:
        cut_faces(root, tmp_path / "faces", settings)
    assert "on_no_face: missing" in str(err.value)
    partial = tmp_path / "faces.partial"
    done = sorted(p.name for p in partial.glob("Session*/*.json"))
    assert len(done) == CORPUS["sessions"] * CORPUS["dialogs_per_session"]
    assert not (tmp_path / "faces").exists()
    # the fixed video: the rerun cuts only that dialog again (the others are kept, unchanged)
    kept = (partial / "Session2" / "Ses02F_impro01.json").stat().st_mtime_ns
    shutil.copy(_video(corpus, "Ses01F_impro01"), _video(root, "Ses01F_impro01"))
    (partial / "Session1" / "Ses01F_impro01.json").unlink()
    shutil.rmtree(partial / "Session1" / "Ses01F_impro01")
    summary = cut_faces(root, tmp_path / "faces", settings | {"on_no_face": "missing"})
    assert summary["per_dialog"]["Ses01F_impro01"]["with_face"] > 0
    # other settings: the partial tree was not reused
    assert (tmp_path / "faces" / "Session2" / "Ses02F_impro01.json").stat().st_mtime_ns != kept


def test_a_rerun_with_the_same_settings_resumes_from_the_finished_dialogs(corpus, tmp_path):
    root = _copy(corpus, tmp_path)
    _video(root, "Ses02M_impro01").unlink()
    with pytest.raises(InputError, match="dialog video not found"):
        cut_faces(root, tmp_path / "faces", SETTINGS)
    partial = tmp_path / "faces.partial"
    kept = (partial / "Session1" / "Ses01F_impro01.json").stat().st_mtime_ns
    shutil.copy(_video(corpus, "Ses02M_impro01"), _video(root, "Ses02M_impro01"))
    cut_faces(root, tmp_path / "faces", SETTINGS)
    assert (tmp_path / "faces" / "Session1" / "Ses01F_impro01.json").stat().st_mtime_ns == kept


def test_a_missing_video_is_an_error_naming_it_and_the_fix(corpus, tmp_path):
    root = _copy(corpus, tmp_path)
    _video(root, "Ses01M_impro01").unlink()
    with pytest.raises(InputError, match="Ses01M_impro01.avi.*dialog video not found.*restore") as err:
        cut_faces(root, tmp_path / "faces", SETTINGS)
    assert "IEMOCAP release" in str(err.value)


def test_every_failed_dialog_is_counted_and_the_first_named(corpus, tmp_path):
    root = _copy(corpus, tmp_path)
    _video(root, "Ses01M_impro01").unlink()
    _video(root, "Ses02M_impro01").unlink()
    with pytest.raises(
        InputError, match="2 dialogs failed; the first: .*Ses01M_impro01.avi.*dialog video not found"
    ):
        cut_faces(root, tmp_path / "faces", SETTINGS, threads=2)
    # the two good dialogs are kept for the rerun
    assert len(list((tmp_path / "faces.partial").glob("Session*/*.json"))) == 2


def test_an_unreadable_video_is_an_error_naming_it(corpus, tmp_path):
    root = _copy(corpus, tmp_path)
    _video(root, "Ses01M_impro01").write_bytes(b"not a video at all" * 100)
    with pytest.raises(InputError, match="Ses01M_impro01.avi.*cannot be decoded"):
        cut_faces(root, tmp_path / "faces", SETTINGS)


def test_a_video_cut_short_leaves_windows_outside_it(corpus, tmp_path):
    root = _copy(corpus, tmp_path)
    _rewrite_video(_video(root, "Ses02F_impro01"), keep_frames=20)  # 4 s of the dialog
    with pytest.raises(
        InputError,
        match="window.*outside the dialog video.*Ses02F_impro01_.*ends after the video's 20 frames",
    ):
        cut_faces(root, tmp_path / "faces", SETTINGS)


def test_a_session_without_a_layout_is_an_error_before_any_video_is_read(corpus, tmp_path):
    layout = {"Session1": "marked_left"}
    with pytest.raises(InputError, match="Session2.*actor layout is unknown.*corpus.faces.layout"):
        cut_faces(corpus, tmp_path / "faces", {**SETTINGS, "layout": layout})
    assert not list((tmp_path / "faces.partial").glob("Session*"))


# --------------------------------------------------------------------------------------------------------
# Masks and features of an utterance without a face
# --------------------------------------------------------------------------------------------------------


def test_recorded_is_false_only_for_the_visual_modality_of_an_empty_face_directory():
    manifest = pd.DataFrame(
        {"frames_dir": ["f/a", "f/b", "", "f/d"], "n_frames": [3, 0, 0, 2]}  # "": kind features, no frames
    )
    expected = np.ones((4, 3), bool)
    expected[1, 1] = False
    assert (recorded(manifest, ["audio", "visual", "text"]) == expected).all()
    assert recorded(manifest, ["speech", "words"]).all()


def test_within_recorded_keeps_one_recorded_modality_where_the_protocol_needs_one():
    present = np.array([[False, True, False], [True, True, False], [False, True, False]])
    corpus = np.array([[True, False, True], [True, False, True], [False, False, False]])
    kept = within_recorded(present, corpus, keep_one=True, seed=0)
    assert kept[1].tolist() == [True, False, False]  # the drawn audio stays
    assert kept[0].sum() == 1 and not kept[0, 1]  # emptied: one recorded modality instead
    assert not kept[2].any()  # nothing recorded: nothing to keep
    assert within_recorded(present, corpus, keep_one=False, seed=0)[0].sum() == 0
