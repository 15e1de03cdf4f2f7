"""The embedded CREMA-D-layout generator (mlaflow.data.synthetic_cremad), read by the CREMA-D adapter."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mlaflow.data import cremad
from mlaflow.data import synthetic_cremad as sc
from mlaflow.errors import ParamsError


def _small_cfg(**overrides) -> dict:
    cfg = {
        "seed": 3,
        "actors": 3,
        "sentences": 2,
        "level": "XX",
        "sample_rate": 16000,
        "min_duration_s": 0.3,
        "max_duration_s": 0.5,
        "frames_per_clip": 2,
        "image_size": 32,
        "modality_strength": {"audio": 0.8, "visual": 0.5},
    }
    return {**cfg, **overrides}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_constants_match_the_adapter():
    assert len(sc.SENTENCES) == 12 and set(sc.SENTENCES) == cremad.SENTENCE_CODES
    assert [cremad.LABEL_SETUPS["6class"][code] for code in sc.EMOTIONS] == cremad.CLASS_NAMES["6class"]
    assert set(sc.DEFAULTS) == set(_small_cfg()) and set(sc.DEFAULTS["modality_strength"]) == {
        "audio",
        "visual",
    }
    assert sc.DEFAULTS["modality_strength"]["audio"] > sc.DEFAULTS["modality_strength"]["visual"]


def test_tree_is_read_by_the_adapter_with_counts_as_configured(tmp_path: Path):
    cfg = _small_cfg(actors=5, sentences=3, level="HI", frames_per_clip=3, image_size=40)
    root = tmp_path / "CREMA-D"
    summary = sc.generate_corpus(root, cfg)
    n = 5 * 3 * 6
    assert summary["n_clips"] == n
    assert summary["per_label"] == dict.fromkeys(cremad.CLASS_NAMES["6class"], 15)
    assert summary["per_actor"] == {str(actor): 18 for actor in range(1001, 1006)}

    manifest, counts = cremad.build_manifest(root, "6class", speaker_groups=5)
    assert counts["n_kept"] == len(manifest) == n and counts["n_dropped"] == 0
    assert counts["kept_per_class"] == dict.fromkeys(cremad.CLASS_NAMES["6class"], 15)
    assert counts["actors_per_session"] == dict.fromkeys(range(1, 6), 1)
    assert counts["clips_per_session"] == dict.fromkeys(range(1, 6), 18)
    _, two_groups = cremad.build_manifest(root, "6class", speaker_groups=2)
    assert two_groups["actors_per_session"] == {1: 3, 2: 2}
    assert two_groups["clips_per_session"] == {1: 54, 2: 36}

    # file names: every actor x sentence x emotion exactly once, with the configured level
    expected = {
        f"{actor}_{sentence}_{emotion}_HI"
        for actor, sentence, emotion in itertools.product(range(1001, 1006), sc.SENTENCES[:3], sc.EMOTIONS)
    }
    assert set(manifest["utterance_id"]) == expected
    assert sorted(p.stem for p in (root / "AudioWAV").iterdir()) == sorted(expected)
    assert sorted(p.name for p in (root / "frames").iterdir()) == sorted(expected)
    for row in manifest.itertuples():
        assert row.label == row.utterance_id.split("_")[2].lower() and row.speaker == row.utterance_id[:4]

    durations = []
    for row in manifest.itertuples():
        info = sf.info(row.wav_path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert 0.3 * 16000 <= info.frames <= 0.5 * 16000
        durations.append(info.frames)
        assert row.n_frames == 3
        for k in range(3):
            frame = Image.open(Path(row.frames_dir) / f"{k:03d}.png")
            assert frame.mode == "RGB" and frame.size == (40, 40)
    assert len(set(durations)) > n // 2  # durations vary
    audio, _ = sf.read(manifest["wav_path"].iloc[0])
    assert np.abs(audio).max() > 0.1


def test_same_seed_same_bytes_other_seed_other_content(tmp_path: Path):
    files = {}
    for name, cfg, threads in (
        ("a", _small_cfg(), 1),
        ("b", _small_cfg(), 2),
        ("c", _small_cfg(seed=4), None),
    ):
        sc.generate_corpus(tmp_path / name / "CREMA-D", cfg, threads=threads)
        files[name] = _files(tmp_path / name / "CREMA-D")
    assert any(f.endswith(".wav") for f in files["a"]) and any(f.endswith(".png") for f in files["a"])
    assert files["a"] == files["b"]
    assert set(files["c"]) == set(files["a"])
    assert all(files["a"][name] != files["c"][name] for name in files["a"])


def test_more_actors_or_sentences_keep_the_other_clips(tmp_path: Path):
    """Clip content depends on (seed, actor rank, sentence, emotion) only; the image size leaves audio alone."""
    small, large, resized = (tmp_path / name / "CREMA-D" for name in ("small", "large", "resized"))
    sc.generate_corpus(small, _small_cfg(actors=2, sentences=1))
    sc.generate_corpus(large, _small_cfg(actors=3, sentences=2))
    sc.generate_corpus(resized, _small_cfg(actors=2, sentences=1, image_size=48, frames_per_clip=1))
    small_files, large_files, resized_files = _files(small), _files(large), _files(resized)
    assert len(large_files) > len(small_files)
    assert all(large_files[name] == data for name, data in small_files.items())
    wavs = [name for name in small_files if name.endswith(".wav")]
    assert wavs and all(resized_files[name] == small_files[name] for name in wavs)


def test_generation_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls = []
    real_draw = sc.draw_face_frames

    def failing_draw(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("killed")
        return real_draw(*args, **kwargs)

    root = tmp_path / "CREMA-D"
    monkeypatch.setattr(sc, "draw_face_frames", failing_draw)
    with pytest.raises(RuntimeError, match="killed"):
        sc.generate_corpus(root, _small_cfg())
    assert list(tmp_path.iterdir()) == []  # no output directory, no temporary

    monkeypatch.setattr(sc, "draw_face_frames", real_draw)
    sc.generate_corpus(root, _small_cfg())
    before = _files(root)
    calls.clear()
    monkeypatch.setattr(sc, "draw_face_frames", failing_draw)
    with pytest.raises(RuntimeError, match="killed"):
        sc.generate_corpus(root, _small_cfg(seed=4))
    assert _files(root) == before  # the old corpus is untouched
    assert [p.name for p in tmp_path.iterdir()] == [root.name]


@pytest.mark.parametrize(
    "key, value",
    [
        ("actors", 1),
        ("sentences", 0),
        ("sentences", 13),
        ("level", "XY"),
        ("frames_per_clip", 0),
        ("image_size", 16),
        ("min_duration_s", 0.6),
        ("modality_strength", {"audio": 1.5, "visual": 0.2}),
        ("modality_strength", {"audio": 0.5}),
        ("seed", None),
        ("seed", -1),
    ],
)
def test_bad_values_are_params_errors(tmp_path: Path, key: str, value):
    with pytest.raises(ParamsError, match=f"corpus.embedded_cremad.{key}"):
        sc.generate_corpus(tmp_path / "CREMA-D", _small_cfg(**{key: value}))
    assert not (tmp_path / "CREMA-D").exists()


def test_missing_key_is_a_params_error(tmp_path: Path):
    cfg = _small_cfg()
    del cfg["level"]
    with pytest.raises(ParamsError, match="corpus.embedded_cremad.level"):
        sc.generate_corpus(tmp_path / "CREMA-D", cfg)


# --------------------------------------------------------------------------------------------------------
# Audio carries the label more strongly than the face (a fast version of the module docstring's measurement)
# --------------------------------------------------------------------------------------------------------


def _audio_features(path: str, bands: int = 32) -> np.ndarray:
    """Mean and sd over 32 ms frames of the log power spectrum in `bands` linear bands."""
    x, _ = sf.read(path, dtype="float32")
    frames = np.lib.stride_tricks.sliding_window_view(x, 512)[::256] * np.hanning(512)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    starts = np.linspace(0, power.shape[1], bands, endpoint=False).astype(int)
    log_bands = np.log(np.add.reduceat(power, starts, axis=1) + 1e-8)
    return np.concatenate([log_bands.mean(0), log_bands.std(0)])


def _visual_features(frames_dir: str, n_frames: int) -> np.ndarray:
    """16x16 grey pixels, averaged over the frames."""
    return np.mean(
        [
            np.asarray(
                Image.open(Path(frames_dir) / f"{k:03d}.png").convert("L").resize((16, 16)), np.float32
            )
            for k in range(n_frames)
        ],
        axis=0,
    ).ravel()


def _held_out_accuracy(X: np.ndarray, y: np.ndarray, groups: np.ndarray, iters: int = 500) -> float:
    """Leave-one-group-out accuracy of softmax regression (full-batch gradient descent, standardised)."""
    correct = 0
    for group in np.unique(groups):
        train, test = groups != group, groups == group
        mean, sd = X[train].mean(0), X[train].std(0) + 1e-6
        x_train, x_test = (X[train] - mean) / sd, (X[test] - mean) / sd
        weights, bias, targets = np.zeros((X.shape[1], 6)), np.zeros(6), np.eye(6)[y[train]]
        for _ in range(iters):
            logits = x_train @ weights + bias
            p = np.exp(logits - logits.max(1, keepdims=True))
            grad = (p / p.sum(1, keepdims=True) - targets) / len(x_train)
            weights -= 0.5 * x_train.T @ grad
            bias -= 0.5 * grad.sum(0)
        correct += int(((x_test @ weights + bias).argmax(1) == y[test]).sum())
    return correct / len(y)


def test_default_strengths_make_audio_dominant_and_face_informative(tmp_path: Path):
    """Default strengths, a small fast corpus (12 actors x 3 sentences, 1 small frame): audio above the face by
    a margin, the face above chance (1/6) by a margin. Measured over seeds 1-7: audio 0.38-0.49, visual 0.30-0.36,
    audio - visual 0.07-0.19 (seed 7: 0.44 and 0.32)."""
    cfg = {
        **sc.DEFAULTS,
        "actors": 12,
        "sentences": 3,
        "min_duration_s": 1.0,
        "max_duration_s": 1.5,
        "frames_per_clip": 1,
        "image_size": 32,
    }
    root = tmp_path / "CREMA-D"
    sc.generate_corpus(root, cfg)
    manifest, _ = cremad.build_manifest(root, speaker_groups=4)
    y, groups = manifest["label_index"].to_numpy(), manifest["session"].to_numpy()
    audio = _held_out_accuracy(np.stack([_audio_features(p) for p in manifest["wav_path"]]), y, groups)
    visual = _held_out_accuracy(
        np.stack([_visual_features(d, n) for d, n in zip(manifest["frames_dir"], manifest["n_frames"])]),
        y,
        groups,
    )
    assert audio >= visual + 0.05, (audio, visual)
    assert visual >= 1 / 6 + 0.05, (audio, visual)
