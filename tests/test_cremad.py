"""The CREMA-D adapter (on generated trees in the release's layout) and the fbank audio features."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from mlaflow.data import cremad
from mlaflow.data.folds import make_folds
from mlaflow.data.manifest import MANIFEST_COLUMNS
from mlaflow.errors import InputError, ParamsError
from mlaflow.features import audio_fbank

SAMPLE_RATE = 16000
EMOTIONS = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
ACTORS = [str(actor) for actor in range(1001, 1011)]  # 10 actors -> 2 per speaker group


def _clips() -> list[str]:
    """Two clips per actor, the emotions cycling so that every class occurs."""
    stems = []
    for i, actor in enumerate(ACTORS):
        stems.append(f"{actor}_DFA_{EMOTIONS[i % 6]}_XX")
        stems.append(f"{actor}_IEO_{EMOTIONS[(i + 1) % 6]}_HI")
    return stems


def _write_clip(root: Path, stem: str, seed: int, n_frames: int = 2) -> None:
    wav = root / "AudioWAV" / f"{stem}.wav"
    wav.parent.mkdir(parents=True, exist_ok=True)
    wave = 0.1 * np.random.default_rng(seed).standard_normal(1600).astype(np.float32)
    sf.write(wav, wave, SAMPLE_RATE, subtype="PCM_16")
    frames = root / "frames" / stem
    frames.mkdir(parents=True)
    for k in range(n_frames):
        Image.new("RGB", (8, 8), (k * 50, seed % 256, 0)).save(frames / f"{k:03d}.png")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "CREMA-D"
    for seed, stem in enumerate(_clips()):
        _write_clip(root, stem, seed)
    (root / "VideoDemographics.csv").write_text(
        "ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n"
    )
    (root / "AudioWAV" / ".DS_Store").write_bytes(b"\0")  # metadata of some copies: ignored
    return root


# --------------------------------------------------------------------------------------------------------
# The manifest
# --------------------------------------------------------------------------------------------------------


def test_manifest_columns_and_rows(corpus: Path):
    manifest, counts = cremad.build_manifest(corpus)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["utterance_id"].tolist() == sorted(_clips())
    assert manifest["session"].dtype == np.int64 and manifest["n_frames"].dtype == np.int64
    row = manifest.set_index("utterance_id").loc["1003_IEO_HAP_HI"]
    assert row["speaker"] == "1003" and row["label"] == "hap" and row["transcript"] == ""
    assert Path(row["wav_path"]) == corpus / "AudioWAV/1003_IEO_HAP_HI.wav"
    assert Path(row["frames_dir"]) == corpus / "frames/1003_IEO_HAP_HI"
    assert row["n_frames"] == 2
    assert (counts["n_kept"], counts["n_dropped"], counts["dropped_per_label"]) == (20, 0, {})


def test_labels_follow_the_file_name_in_the_fixed_class_order(corpus: Path):
    assert cremad.CLASS_NAMES["6class"] == ["neu", "hap", "sad", "fea", "dis", "ang"]  # OGM-GE's order
    assert set(cremad.LABEL_SETUPS["6class"]) == cremad.EMOTION_CODES == set(EMOTIONS)
    manifest, counts = cremad.build_manifest(corpus, "6class")
    for stem, label, index in zip(manifest["utterance_id"], manifest["label"], manifest["label_index"]):
        assert label == stem.split("_")[2].lower()
        assert index == cremad.CLASS_NAMES["6class"].index(label)
    assert sum(counts["kept_per_class"].values()) == 20
    assert all(counts["kept_per_class"][name] > 0 for name in cremad.CLASS_NAMES["6class"])


def test_speaker_groups_are_deterministic_round_robin_and_speaker_independent(corpus: Path):
    manifest, counts = cremad.build_manifest(corpus)
    again, _ = cremad.build_manifest(corpus)
    assert manifest.equals(again)
    groups_of_actor = manifest.groupby("speaker")["session"].unique()
    assert all(len(groups) == 1 for groups in groups_of_actor)  # no actor in two groups
    assert {actor: groups[0] for actor, groups in groups_of_actor.items()} == {
        actor: rank % 5 + 1 for rank, actor in enumerate(ACTORS)
    }
    assert counts["actors_per_session"] == {1: 2, 2: 2, 3: 2, 4: 2, 5: 2}
    assert counts["clips_per_session"] == {1: 4, 2: 4, 3: 4, 4: 4, 5: 4}

    folds = make_folds(
        manifest, [1, 2, 3, 4, 5], validation_fraction=0.1, seed=0, classes=cremad.CLASS_NAMES["6class"]
    )
    for fold in range(1, 6):
        test = set(manifest.loc[folds[f"fold{fold}"] == "test", "speaker"])
        rest = set(manifest.loc[folds[f"fold{fold}"] != "test", "speaker"])
        assert test and not test & rest


def test_speaker_groups_of_the_real_actor_range():
    groups = cremad.assign_speaker_groups({str(a) for a in range(1001, 1092)}, 5)
    assert sorted(np.bincount(list(groups.values()))[1:]) == [18, 18, 18, 18, 19]
    assert (groups["1001"], groups["1005"], groups["1006"], groups["1091"]) == (1, 5, 1, 1)


def test_bad_parameters(corpus: Path):
    with pytest.raises(ParamsError, match="corpus.label_setup"):
        cremad.build_manifest(corpus, "4class")
    with pytest.raises(ParamsError, match="corpus.speaker_groups"):
        cremad.build_manifest(corpus, speaker_groups=1)
    with pytest.raises(InputError, match="only 10 actor"):
        cremad.build_manifest(corpus, speaker_groups=11)


# --------------------------------------------------------------------------------------------------------
# Bad input: one InputError that names the file at fault
# --------------------------------------------------------------------------------------------------------


def _rename_wav(root: Path, stem: str, new_name: str) -> None:
    (root / "AudioWAV" / f"{stem}.wav").rename(root / "AudioWAV" / new_name)


def _renumber_frames(root: Path, stem: str) -> None:
    frames = root / "frames" / stem
    for k in reversed(range(2)):  # 000, 001 -> 001, 002: what ffmpeg writes without -start_number 0
        (frames / f"{k:03d}.png").rename(frames / f"{k + 1:03d}.png")


def _empty_audio_dir(root: Path) -> None:
    shutil.rmtree(root / "AudioWAV")
    (root / "AudioWAV").mkdir()


BAD_INPUTS = {
    # name: (how to break the fixture, texts the error message must contain)
    "malformed_name": (
        lambda r: _rename_wav(r, "1001_DFA_ANG_XX", "1001_DFA_ANG_X.wav"),
        ["AudioWAV/1001_DFA_ANG_X.wav", "malformed"],
    ),
    "unknown_sentence": (
        lambda r: _rename_wav(r, "1001_DFA_ANG_XX", "1001_ABC_ANG_XX.wav"),
        ["AudioWAV/1001_ABC_ANG_XX.wav", "malformed"],
    ),
    "unknown_level": (
        lambda r: _rename_wav(r, "1001_DFA_ANG_XX", "1001_DFA_ANG_ZZ.wav"),
        ["AudioWAV/1001_DFA_ANG_ZZ.wav", "malformed"],
    ),
    "unknown_emotion": (
        lambda r: _rename_wav(r, "1001_DFA_ANG_XX", "1001_DFA_JOY_XX.wav"),
        ["AudioWAV/1001_DFA_JOY_XX.wav", "unknown emotion", "'JOY'"],
    ),
    "no_frames_root": (lambda r: shutil.rmtree(r / "frames"), ["CREMA-D/frames", "ffmpeg"]),
    "wav_without_frames": (
        lambda r: shutil.rmtree(r / "frames/1002_IEO_FEA_HI"),
        ["AudioWAV/1002_IEO_FEA_HI.wav", "without a frames directory", "ffmpeg"],
    ),
    "frames_without_wav": (
        lambda r: (r / "AudioWAV/1002_IEO_FEA_HI.wav").unlink(),
        ["frames/1002_IEO_FEA_HI", "without a wav"],
    ),
    "empty_frames_dir": (
        lambda r: [p.unlink() for p in (r / "frames/1005_DFA_NEU_XX").iterdir()],
        ["frames/1005_DFA_NEU_XX", "empty"],
    ),
    "frames_numbered_from_one": (
        lambda r: _renumber_frames(r, "1005_DFA_NEU_XX"),
        ["frames/1005_DFA_NEU_XX", "001.png", "-start_number 0"],
    ),
    "empty_audio_dir": (_empty_audio_dir, ["CREMA-D/AudioWAV", "no .wav"]),
    "no_audio_dir": (lambda r: shutil.rmtree(r / "AudioWAV"), ["CREMA-D/AudioWAV", "no AudioWAV"]),
    "no_root": (lambda r: shutil.rmtree(r), ["CREMA-D", "not found"]),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_names_the_file(corpus: Path, name: str):
    breaks, expected = BAD_INPUTS[name]
    breaks(corpus)
    with pytest.raises(InputError) as raised:
        cremad.build_manifest(corpus)
    message = str(raised.value)
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"
    assert "Fix:" in message
    assert raised.value.path is not None and Path(raised.value.path).name in message


def test_problems_of_one_kind_are_reported_together(corpus: Path):
    for stem in _clips()[:7]:
        shutil.rmtree(corpus / "frames" / stem)
    with pytest.raises(InputError, match=r"7 frames problem\(s\).*and 2 more"):
        cremad.build_manifest(corpus)


def test_frames_follow_the_visual_encoders_layout(corpus: Path):
    from mlaflow.features.frames_io import frame_paths

    manifest, _ = cremad.build_manifest(corpus)
    for row in manifest.to_dict("records"):
        paths = frame_paths(row)
        assert len(paths) == 2 and all(path.is_file() for path in paths)


# --------------------------------------------------------------------------------------------------------
# fbank features
# --------------------------------------------------------------------------------------------------------

FBANK_CFG = {"max_seconds": 20.0, "n_mels": 32}  # params features.audio, as the fbank encoder reads it


def _noise(seed: int, n: int = SAMPLE_RATE) -> np.ndarray:
    return 0.1 * np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def test_fbank_shape_and_pooling():
    frames = audio_fbank.fbank_features(_noise(0), SAMPLE_RATE, n_mels=64)
    assert frames.shape == (1 + (SAMPLE_RATE - 400) // 160, 64) and frames.dtype == np.float32
    pooled = audio_fbank.pool_mean_std(frames)
    assert pooled.shape == (128,)
    np.testing.assert_allclose(pooled[:64], frames.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(pooled[64:], frames.std(axis=0), rtol=1e-5)
    assert audio_fbank.utterance_fbank(_noise(0), SAMPLE_RATE).shape == (2 * audio_fbank.N_MELS,)


def test_fbank_differs_between_waves_and_is_deterministic():
    first = audio_fbank.utterance_fbank(_noise(0), SAMPLE_RATE)
    assert np.array_equal(first, audio_fbank.utterance_fbank(_noise(0), SAMPLE_RATE))  # no dither
    tone = np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE) / SAMPLE_RATE).astype(np.float32) * 0.1
    assert not np.allclose(first, audio_fbank.utterance_fbank(_noise(1), SAMPLE_RATE))
    assert not np.allclose(first, audio_fbank.utterance_fbank(tone, SAMPLE_RATE))


def test_fbank_of_silence_is_finite():
    pooled = audio_fbank.utterance_fbank(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    assert np.isfinite(pooled).all()
    np.testing.assert_allclose(pooled[audio_fbank.N_MELS :], 0.0, atol=1e-5)  # constant frames: zero std


def test_fbank_rejects_a_wave_shorter_than_one_window():
    with pytest.raises(ValueError, match="shorter than one"):
        audio_fbank.fbank_features(np.zeros(399, np.float32), SAMPLE_RATE)


def test_fbank_encoder_on_a_cremad_manifest(corpus: Path, tmp_path: Path):
    model_dir = audio_fbank.build_embedded(tmp_path / "fbank", {"n_mels": 32}, seed=0)
    encoder = audio_fbank.FbankAudioEncoder.from_pretrained(model_dir, FBANK_CFG, torch.device("cpu"))
    assert (encoder.output_dim, encoder.pretrained, encoder.architecture) == (64, False, "fbank")
    manifest, _ = cremad.build_manifest(corpus)
    rows = manifest.to_dict("records")[:3]
    assert [encoder.item_length(row) for row in rows] == [1600, 1600, 1600]
    waves = [encoder.load_item(row) for row in rows]
    encoded = encoder.encode(waves)
    assert encoded.features.shape == (3, 64) and encoded.real_units == encoded.padded_units == 4800
    for wave, vector in zip(waves, encoded.features.numpy()):
        np.testing.assert_allclose(
            vector, audio_fbank.utterance_fbank(wave, SAMPLE_RATE, n_mels=32), rtol=1e-5, atol=1e-5
        )


def test_fbank_encoder_names_bad_wavs(corpus: Path, tmp_path: Path):
    model_dir = audio_fbank.build_embedded(tmp_path / "fbank", {"n_mels": 32}, seed=0)
    encoder = audio_fbank.FbankAudioEncoder.from_pretrained(model_dir, FBANK_CFG, torch.device("cpu"))
    resampled = corpus / "AudioWAV/1001_DFA_ANG_XX.wav"
    sf.write(resampled, _noise(0, 800), 8000)
    lfs_pointer = corpus / "AudioWAV/1002_DFA_DIS_XX.wav"
    lfs_pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
    short = corpus / "AudioWAV/1003_DFA_FEA_XX.wav"
    sf.write(short, _noise(0, 100), SAMPLE_RATE)
    for path, problem in (
        (resampled, "8000 Hz"),
        (lfs_pointer, "cannot be read as audio"),
        (short, "too short"),
    ):
        with pytest.raises(InputError, match=problem) as raised:
            encoder.item_length({"wav_path": str(path)})
        assert raised.value.path == str(path)
    with pytest.raises(ParamsError, match="features.audio.model"):
        audio_fbank.FbankAudioEncoder.from_pretrained(tmp_path / "nothing", FBANK_CFG, torch.device("cpu"))


def test_fbank_encoder_runs_in_the_extraction_driver(corpus: Path, tmp_path: Path):
    """`features.audio.encoder: fbank` (the registry) hands the driver the fbank encoder; read the store."""
    from mlaflow.features import extract
    from mlaflow.features.store import read_store

    model_dir = audio_fbank.build_embedded(tmp_path / "fbank", {"n_mels": 16}, seed=0)
    features_cfg = {
        "half_precision": False,
        "audio": {
            "encoder": "fbank",
            "model": "embedded",
            "dim": 32,
            "n_mels": 16,
            "max_seconds": 20.0,
            "batch_size": 4,
        },
    }
    manifest, _ = cremad.build_manifest(corpus)
    stats = extract.extract_features(
        "audio", manifest, model_dir, tmp_path / "audio.h5", features_cfg, "hash"
    )
    assert (stats["n"], stats["padding_fraction"]) == (20, 0.0)
    table = read_store(tmp_path / "audio.h5", modality="audio", expected_dim=32)
    assert table.ids == manifest["utterance_id"].tolist() and table.attrs["encoder"] == "fbank"
    first = audio_fbank.utterance_fbank(
        sf.read(manifest["wav_path"].iloc[0], dtype="float32")[0], SAMPLE_RATE, 16
    )
    np.testing.assert_allclose(table.features[0], first, rtol=1e-5, atol=1e-5)
