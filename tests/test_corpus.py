"""The IEMOCAP adapter (on a hand-written tree in the release's layout) and the embedded-corpus generator."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mlaflow.data import synthetic
from mlaflow.data.iemocap import CLASS_NAMES, IEMOCAP_CODES, LABEL_SETUPS, MANIFEST_COLUMNS, build_manifest
from mlaflow.errors import InputError, ParamsError

# --------------------------------------------------------------------------------------------------------
# A hand-written fixture tree
# --------------------------------------------------------------------------------------------------------

# dialog -> [(utterance_id, code, transcript)]
FIXTURE = {
    "Ses01F_impro01": [
        ("Ses01F_impro01_F000", "neu", "Excuse me."),
        ("Ses01F_impro01_M000", "exc", "Wow, that is amazing!"),
        ("Ses01F_impro01_F001", "fru", "I have been waiting for hours."),
        ("Ses01F_impro01_M001", "xxx", "Well, I don't know."),
        ("Ses01F_impro01_F002", "hap", "That's nice."),
    ],
    "Ses02M_script01_1": [
        ("Ses02M_script01_1_F000", "sad", "I miss him."),
        ("Ses02M_script01_1_M000", "ang", "Shut up!"),
        ("Ses02M_script01_1_M001", "sur", "Really?"),
        ("Ses02M_script01_1_F001", "exc", "We did it!"),
    ],
}
NO_MEDIA = {"Ses01F_impro01_M001"}  # dropped in both setups: its wav and frames are never looked for


def _write_fixture(root: Path) -> Path:
    """Write FIXTURE in the IEMOCAP layout under `root`, with non-utterance lines as the release has."""
    for dialog, utterances in FIXTURE.items():
        session = root / f"Session{int(dialog[3:5])}"
        labels = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        transcript = ["M: [LAUGHTER]"]
        for i, (utt, code, text) in enumerate(utterances):
            start, end = 2.0 * i + 1.0, 2.0 * i + 2.5
            labels += [
                f"[{start:.4f} - {end:.4f}]\t{utt}\t{code}\t[2.5000, 3.0000, 2.5000]",
                "C-E1:\tNeutral;\t()",
                "A-E1:\tval 3; act 2; dom  2;\t()",
                "",
            ]
            transcript.append(f"{utt} [{start:08.4f}-{end:08.4f}]: {text}")
            if utt in NO_MEDIA:
                continue
            wav = session / "sentences" / "wav" / dialog / f"{utt}.wav"
            wav.parent.mkdir(parents=True, exist_ok=True)
            sf.write(wav, np.zeros(160, np.float32), 16000, subtype="PCM_16")
            frames = session / "sentences" / "faces" / dialog / utt
            frames.mkdir(parents=True)
            for k in range(2):
                Image.new("RGB", (8, 8), (k * 50, 0, 0)).save(frames / f"{k:03d}.png")
        transcript.append(f"{dialog}_MXX0 [099.0000-100.0000]: [BREATHING]")
        for sub, text in (("EmoEvaluation", labels), ("transcriptions", transcript)):
            path = session / "dialog" / sub / f"{dialog}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(text) + "\n")
    # the release keeps per-annotator files in subfolders: they must be ignored
    categorical = root / "Session1" / "dialog" / "EmoEvaluation" / "Categorical"
    categorical.mkdir()
    (categorical / "Ses01F_impro01_e1_cat.txt").write_text("Ses01F_impro01_F000 :Neutral state; ()\n")
    return root


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return _write_fixture(tmp_path / "IEMOCAP_full_release")


def test_constants_are_consistent():
    for setup, mapping in LABEL_SETUPS.items():
        assert set(mapping) <= IEMOCAP_CODES
        assert set(mapping.values()) == set(CLASS_NAMES[setup])
    assert LABEL_SETUPS["4class"]["exc"] == "hap"
    assert CLASS_NAMES["6class"][:4] == CLASS_NAMES["4class"]


def test_manifest_4class_merges_excited_into_happy(corpus: Path):
    manifest, counts = build_manifest(corpus, "4class")
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["utterance_id"].tolist() == sorted(manifest["utterance_id"])
    labels = dict(zip(manifest["utterance_id"], manifest["label"]))
    assert labels == {
        "Ses01F_impro01_F000": "neu",
        "Ses01F_impro01_M000": "hap",
        "Ses01F_impro01_F002": "hap",
        "Ses02M_script01_1_F000": "sad",
        "Ses02M_script01_1_M000": "ang",
        "Ses02M_script01_1_F001": "hap",
    }
    assert (manifest["label_index"] == [CLASS_NAMES["4class"].index(x) for x in manifest["label"]]).all()
    assert counts["kept_per_class"] == {"neu": 1, "hap": 3, "sad": 1, "ang": 1}
    assert counts["dropped_per_label"] == {"fru": 1, "sur": 1, "xxx": 1}
    assert (counts["n_kept"], counts["n_dropped"]) == (6, 3)

    row = manifest.set_index("utterance_id").loc["Ses02M_script01_1_F000"]
    assert row["session"] == 2 and row["speaker"] == "Ses02F"  # the F actor of a dialog recorded by M
    assert row["transcript"] == "I miss him."
    assert row["n_frames"] == 2
    assert (
        Path(row["wav_path"])
        == corpus / "Session2/sentences/wav/Ses02M_script01_1/Ses02M_script01_1_F000.wav"
    )
    assert (
        Path(row["frames_dir"])
        == corpus / "Session2/sentences/faces/Ses02M_script01_1/Ses02M_script01_1_F000"
    )
    assert manifest["session"].dtype == np.int64 and manifest["n_frames"].dtype == np.int64


def test_manifest_6class_keeps_excited_and_frustrated(corpus: Path):
    manifest, counts = build_manifest(corpus, "6class")
    assert counts["kept_per_class"] == {"neu": 1, "hap": 1, "sad": 1, "ang": 1, "exc": 2, "fru": 1}
    assert counts["dropped_per_label"] == {"sur": 1, "xxx": 1}
    assert manifest.set_index("utterance_id").loc["Ses01F_impro01_M000", "label"] == "exc"
    assert manifest["label_index"].max() == len(CLASS_NAMES["6class"]) - 1


def test_unknown_label_setup_is_a_params_error(corpus: Path):
    with pytest.raises(ParamsError, match="corpus.label_setup"):
        build_manifest(corpus, "7class")


# --------------------------------------------------------------------------------------------------------
# Bad input: one InputError that names the file at fault
# --------------------------------------------------------------------------------------------------------


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


S1 = "Session1/dialog"
UTT = "Ses01F_impro01_F000"

BAD_INPUTS = {
    # name: (how to break the fixture, text the error message must contain)
    "unknown_code": (
        lambda r: _edit(r / S1 / "EmoEvaluation/Ses01F_impro01.txt", f"{UTT}\tneu", f"{UTT}\tjoy"),
        [f"{S1}/EmoEvaluation/Ses01F_impro01.txt", UTT, "joy"],
    ),
    "empty_transcript": (
        lambda r: _edit(r / S1 / "transcriptions/Ses01F_impro01.txt", ": Excuse me.", ": "),
        [f"{S1}/transcriptions/Ses01F_impro01.txt", UTT, "empty"],
    ),
    "no_transcript_line": (
        lambda r: _edit(
            r / S1 / "transcriptions/Ses01F_impro01.txt", f"{UTT} [001.0000-002.5000]: Excuse me.\n", ""
        ),
        [f"{S1}/transcriptions/Ses01F_impro01.txt", UTT],
    ),
    "no_transcription_file": (
        lambda r: (r / S1 / "transcriptions/Ses01F_impro01.txt").unlink(),
        [f"{S1}/transcriptions/Ses01F_impro01.txt"],
    ),
    "missing_wav": (
        lambda r: (r / f"Session1/sentences/wav/Ses01F_impro01/{UTT}.wav").unlink(),
        [f"Session1/sentences/wav/Ses01F_impro01/{UTT}.wav"],
    ),
    "missing_frames_dir": (
        lambda r: shutil.rmtree(r / f"Session1/sentences/faces/Ses01F_impro01/{UTT}"),
        [f"Session1/sentences/faces/Ses01F_impro01/{UTT}"],
    ),
    "empty_frames_dir": (
        lambda r: [p.unlink() for p in (r / f"Session1/sentences/faces/Ses01F_impro01/{UTT}").iterdir()],
        [f"Session1/sentences/faces/Ses01F_impro01/{UTT}", "empty"],
    ),
    "malformed_label_line": (
        lambda r: _edit(r / S1 / "EmoEvaluation/Ses01F_impro01.txt", f"\t{UTT}\tneu", f" {UTT} neu"),
        [f"{S1}/EmoEvaluation/Ses01F_impro01.txt", "line 3"],
    ),
    "no_label_files": (
        lambda r: shutil.rmtree(r / "Session2/dialog/EmoEvaluation"),
        ["Session2/dialog/EmoEvaluation"],
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_names_the_file(corpus: Path, name: str):
    breaks, expected = BAD_INPUTS[name]
    breaks(corpus)
    with pytest.raises(InputError) as raised:
        build_manifest(corpus, "4class")
    message = str(raised.value)
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"
    assert "Fix:" in message
    assert raised.value.path is not None and Path(raised.value.path).name in message


def test_problems_of_one_kind_are_reported_together(corpus: Path):
    wav_dir = corpus / "Session1/sentences/wav/Ses01F_impro01"
    for wav in wav_dir.glob("*.wav"):
        wav.unlink()
    with pytest.raises(InputError, match="3 wav problem"):
        build_manifest(corpus, "4class")


def test_missing_root_or_sessions(tmp_path: Path):
    with pytest.raises(InputError, match="not_there"):
        build_manifest(tmp_path / "not_there", "4class")
    (tmp_path / "empty_release").mkdir()
    with pytest.raises(InputError, match="empty_release.*no Session"):
        build_manifest(tmp_path / "empty_release", "4class")


def test_no_utterance_in_the_setup(corpus: Path):
    for path in (corpus / "Session1/dialog/EmoEvaluation").glob("*.txt"):
        path.write_text(
            path.read_text()
            .replace("\tneu\t", "\toth\t")
            .replace("\texc\t", "\toth\t")
            .replace("\thap\t", "\toth\t")
        )
    shutil.rmtree(corpus / "Session2")
    with pytest.raises(InputError, match="no utterance has a label of the 4class setup"):
        build_manifest(corpus, "4class")


# --------------------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------------------


def _small_cfg(**overrides) -> dict:
    cfg = {
        "seed": 3,
        "sessions": 2,
        "dialogs_per_session": 2,
        "utterances_per_dialog": 5,
        "sample_rate": 16000,
        "min_duration_s": 0.3,
        "max_duration_s": 0.6,
        "frames_per_utterance": 2,
        "image_size": 32,
        "video_fps": 5,
        "modality_strength": {"text": 0.8, "audio": 0.5, "visual": 0.25},
    }
    return {**cfg, **overrides}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generator_is_deterministic(tmp_path: Path):
    """Same seed: byte-identical files, whatever the number of threads; another seed: other content."""
    first = tmp_path / "a" / "IEMOCAP_full_release"
    synthetic.generate_corpus(first, _small_cfg(), threads=1)
    synthetic.generate_corpus(tmp_path / "b" / "IEMOCAP_full_release", _small_cfg(), threads=2)
    synthetic.generate_corpus(tmp_path / "c" / "IEMOCAP_full_release", _small_cfg(seed=4))
    same = _files(tmp_path / "b" / "IEMOCAP_full_release")
    other = _files(tmp_path / "c" / "IEMOCAP_full_release")
    files = _files(first)
    assert all(any(name.endswith(suffix) for name in files) for suffix in (".wav", ".png", ".avi"))
    assert files == same
    common = set(files) & set(other)
    for suffix in (".wav", ".png", ".txt"):
        shared = [name for name in common if name.endswith(suffix)]
        assert shared and all(files[name] != other[name] for name in shared), suffix


def test_generated_corpus_parses_with_counts_as_configured(tmp_path: Path):
    cfg = _small_cfg(utterances_per_dialog=50, min_duration_s=0.2, max_duration_s=0.3, frames_per_utterance=1)
    root = tmp_path / "IEMOCAP_full_release"
    summary = synthetic.generate_corpus(root, cfg)
    n = 2 * 2 * 50
    assert summary["n_utterances"] == n == sum(summary["per_label"].values())
    assert summary["per_session"] == {"Session1": n // 2, "Session2": n // 2}
    for code, share in synthetic.LABEL_SHARES.items():
        assert abs(summary["per_label"].get(code, 0) / n - share) <= 0.01, code

    manifest, counts = build_manifest(root, "4class")
    assert counts["n_kept"] + counts["n_dropped"] == n
    assert abs(counts["n_kept"] / n - 0.9) <= 0.01
    kept = counts["kept_per_class"]
    assert kept["hap"] == summary["per_label"]["hap"] + summary["per_label"]["exc"]
    assert 0.25 <= kept["neu"] / counts["n_kept"] <= 0.35
    assert set(manifest["speaker"]) == {"Ses01F", "Ses01M", "Ses02F", "Ses02M"}
    assert (manifest["n_frames"] == 1).all()

    _six, six_counts = build_manifest(root, "6class")
    assert all(six_counts["kept_per_class"][name] > 0 for name in CLASS_NAMES["6class"])

    info = sf.info(manifest["wav_path"].iloc[0])
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    audio, _ = sf.read(manifest["wav_path"].iloc[0])
    assert 0.2 * 16000 <= len(audio) <= 0.3 * 16000 + 1 and np.abs(audio).max() > 0.1
    frame = Image.open(Path(manifest["frames_dir"].iloc[0]) / "000.png")
    assert frame.mode == "RGB" and frame.size == (32, 32)


def test_generator_layout_names(tmp_path: Path):
    root = tmp_path / "IEMOCAP_full_release"
    synthetic.generate_corpus(root, _small_cfg(dialogs_per_session=4))
    dialogs = sorted(p.stem for p in (root / "Session1/dialog/EmoEvaluation").glob("*.txt"))
    assert dialogs == ["Ses01F_impro01", "Ses01F_script01_1", "Ses01M_impro01", "Ses01M_script01_1"]
    label_text = (root / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt").read_text()
    assert label_text.startswith("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n[")
    assert "\nC-E1:\t" in label_text and "\nA-E1:\tval " in label_text


def test_generator_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "IEMOCAP_full_release"
    synthetic.generate_corpus(root, _small_cfg())
    before = _files(root)

    calls = []

    def failing_draw(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("killed")
        return real_draw(*args, **kwargs)

    real_draw = synthetic.draw_face_frames
    monkeypatch.setattr(synthetic, "draw_face_frames", failing_draw)
    with pytest.raises(RuntimeError, match="killed"):
        synthetic.generate_corpus(root, _small_cfg(seed=4))
    assert _files(root) == before  # the old corpus is untouched
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # and no temporary is left behind
