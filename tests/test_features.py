"""Feature extraction and the HDF5 feature store, on tiny encoders and a tiny synthetic corpus (fast, CPU)."""

from __future__ import annotations

import ast
import copy
import graphlib
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for a model hub: every model here is a local directory

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile
import torch
from PIL import Image

from mlaflow.errors import InputError, ParamsError
from mlaflow.features import protocol
from mlaflow.features import store as store_module
from mlaflow.features.extract import build_embedded_encoder, extract_features, load_encoder
from mlaflow.features.merge import merge_shards
from mlaflow.features.protocol import ENCODER_INFO_FILE, ENCODERS, Encoder, encoder_class, encoder_module
from mlaflow.features.store import FeatureStoreWriter, partial_path_for, read_store

MODALITIES = ("audio", "visual", "text")
TRANSCRIPTS = [
    "Oh.",
    "I don't know what you mean, honestly.",
    "Yeah, okay!",
    "Why would you say something like that to me right now?",
    "Fine",
    "Hmm... whatever, café Zürich #42",
    "We're getting married next week in Las Vegas!",
]
DURATIONS_S = [0.30, 0.95, 0.55, 1.20, 0.40, 0.80, 0.65]
N_FRAMES = [1, 3, 2, 3, 1, 2, 3]
LABELS = ["neu", "hap", "sad", "ang", "neu", "hap", "sad"]


def tiny_features_cfg() -> dict:
    """params.yaml `features` with tiny encoders; batch_size 3 so 7 utterances make uneven batches."""
    return {
        "half_precision": True,
        "embedded_seed": 0,
        "text": {
            "encoder": "bert",
            "model": "embedded",
            "precomputed": None,
            "dim": 32,
            "pooling": "mean",
            "max_length": 24,
            "batch_size": 3,
            "embedded": {"num_layers": 1, "num_heads": 2, "intermediate_size": 64},
        },
        "audio": {
            "encoder": "wav2vec2",
            "model": "embedded",
            "precomputed": None,
            "dim": 32,
            "layer": "conv",
            "max_seconds": 1.0,
            "n_mels": 128,
            "batch_size": 3,
            "embedded": {"conv_dim": [16, 32], "hidden_size": 32, "num_layers": 1, "num_heads": 2},
        },
        "visual": {
            "encoder": "manet",
            "model": "embedded",
            "precomputed": None,
            "dim": 1024,
            "image_size": 32,
            "batch_size": 3,
        },
    }


def write_wav(path, seconds, rate=16_000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * (120 + 40 * seed) * t) + 0.05 * rng.standard_normal(len(t))
    soundfile.write(path, wave.astype(np.float32), rate, subtype="PCM_16")


def write_frame(path, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture()
def corpus(tmp_path):
    """A 7-utterance manifest with wavs, face frames and transcripts of varied lengths under tmp_path."""
    rows = []
    for i, (text, seconds, n_frames, label) in enumerate(zip(TRANSCRIPTS, DURATIONS_S, N_FRAMES, LABELS)):
        utterance_id = f"Ses01F_test_{i:03d}"
        wav_path = tmp_path / "wav" / f"{utterance_id}.wav"
        wav_path.parent.mkdir(exist_ok=True)
        write_wav(wav_path, seconds, seed=i)
        frames_dir = tmp_path / "frames" / utterance_id
        frames_dir.mkdir(parents=True)
        for k in range(n_frames):
            write_frame(frames_dir / f"{k:03d}.png", seed=10 * i + k)
        rows.append(
            {
                "utterance_id": utterance_id,
                "session": 1,
                "speaker": "F",
                "label": label,
                "label_index": ["neu", "hap", "sad", "ang"].index(label),
                "wav_path": str(wav_path),
                "transcript": text,
                "frames_dir": str(frames_dir),
                "n_frames": n_frames,
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """The three embedded encoders of tiny_features_cfg, built once per test session."""
    root = tmp_path_factory.mktemp("models")
    cfg = tiny_features_cfg()
    return {modality: build_embedded_encoder(modality, root / modality, cfg) for modality in MODALITIES}


def extract(modality, corpus, models, out, cfg=None, **overrides):
    cfg = copy.deepcopy(cfg or tiny_features_cfg())
    cfg[modality].update(overrides)
    return extract_features(modality, corpus, models[modality], out, cfg, params_hash="test-hash")


def write_store(path, ids, features, labels=None, **attrs):
    """A store written directly with h5py, to feed read_store whatever a user might hand it."""
    with h5py.File(path, "w") as f:
        f.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("features", data=features)
        f.create_dataset(
            "labels", data=np.array(labels or ["neu"] * len(ids), dtype=object), dtype=h5py.string_dtype()
        )
        for name, value in {"modality": "audio", "dim": features.shape[1], "complete": True, **attrs}.items():
            f.attrs[name] = value


# ----------------------------------------------------------------------------------------------- store


def test_store_round_trip(tmp_path):
    out = tmp_path / "audio.h5"
    ids, labels = [f"u{i}" for i in range(5)], ["neu", "hap", "sad", "ang", "neu"]
    features = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    attrs = {
        "modality": "audio",
        "encoder": "wav2vec2",
        "model_source": "embedded",
        "pretrained": False,
        "params_hash": "abc",
    }
    with FeatureStoreWriter(out, ids, labels, 4, attrs) as writer:
        writer.write([3, 0], features[[3, 0]])  # any row order
        assert list(writer.pending_rows()) == [1, 2, 4]
        writer.write([4, 1, 2], features[[4, 1, 2]])
        writer.finish()
    assert not partial_path_for(out).exists()
    table = read_store(out, modality="audio", expected_dim=4)
    assert table.ids == ids and table.labels == labels
    np.testing.assert_array_equal(table.features, features)
    assert table.features.dtype == np.float32
    assert table.attrs["complete"] is True and table.attrs["pretrained"] is False
    assert (
        table.attrs["dim"] == 4
        and table.attrs["params_hash"] == "abc"
        and table.attrs["encoder"] == "wav2vec2"
    )
    with h5py.File(out) as f:
        assert "written" not in f and h5py.check_string_dtype(f["ids"].dtype).encoding == "utf-8"


def test_read_store_accepts_a_minimal_precomputed_store(tmp_path):
    path = tmp_path / "user.h5"
    with h5py.File(path, "w") as f:  # fixed-length byte strings, float64, only the modality attribute
        f["ids"] = np.array([b"a", b"b"])
        f["labels"] = np.array([b"neu", b"ang"])
        f["features"] = np.ones((2, 3))
        f.attrs["modality"] = "text"
    table = read_store(path, modality="text", expected_dim=3)
    assert table.ids == ["a", "b"] and table.labels == ["neu", "ang"] and table.features.dtype == np.float32
    assert table.attrs["dim"] == 3 and table.attrs["complete"] is True


def test_read_store_errors_name_the_file_and_the_fix(tmp_path):
    good = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(InputError, match="not found") as err:
        read_store(tmp_path / "absent.h5")
    assert "absent.h5" in str(err.value)

    nan = good.copy()
    nan[1, 2] = np.nan
    nan[2, 0] = np.inf
    write_store(tmp_path / "nan.h5", ["a", "b", "c"], nan)
    with pytest.raises(InputError, match=r"NaN or inf features in 2 utterance\(s\): b, c") as err:
        read_store(tmp_path / "nan.h5")
    assert "nan.h5" in str(err.value)

    write_store(tmp_path / "dim.h5", ["a", "b", "c"], good)
    with pytest.raises(InputError) as err:
        read_store(tmp_path / "dim.h5", modality="audio", expected_dim=512)
    message = str(err.value)
    assert "dim.h5" in message and "4-d" in message and "512" in message and "features.audio.dim" in message

    write_store(tmp_path / "partial.h5", ["a", "b", "c"], good, complete=False)
    with pytest.raises(InputError, match="incomplete"):
        read_store(tmp_path / "partial.h5")

    write_store(tmp_path / "dup.h5", ["a", "b", "a"], good)
    with pytest.raises(InputError, match="duplicate utterance id.*a") as err:
        read_store(tmp_path / "dup.h5")
    assert "dup.h5" in str(err.value)

    write_store(tmp_path / "modality.h5", ["a", "b", "c"], good, modality="visual")
    with pytest.raises(InputError, match="holds `visual` features.*features.audio.precomputed"):
        read_store(tmp_path / "modality.h5", modality="audio")

    (tmp_path / "garbage.h5").write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(InputError, match="garbage.h5: not a readable HDF5 file"):
        read_store(tmp_path / "garbage.h5")


def test_writer_distrusts_rows_flagged_written_but_not_finite(tmp_path):
    out = tmp_path / "text.h5"
    attrs = {
        "modality": "text",
        "encoder": "bert",
        "model_source": "embedded",
        "pretrained": False,
        "params_hash": "h",
    }
    with FeatureStoreWriter(out, ["a", "b", "c"], ["neu"] * 3, 2, attrs) as writer:
        writer.write([0, 1], np.ones((2, 2)))
    with h5py.File(partial_path_for(out), "r+") as f:  # as if the flag reached the disk but the row did not
        f["features"][1] = np.nan
    with FeatureStoreWriter(out, ["a", "b", "c"], ["neu"] * 3, 2, attrs) as writer:
        assert list(writer.pending_rows()) == [1, 2]


# ----------------------------------------------------------------------------------------------- encoders


def test_embedded_encoders_are_deterministic_and_load_through_from_pretrained(tmp_path, corpus, models):
    from mlaflow.features.text_bert import SPECIAL_TOKENS
    from mlaflow.features.wordpiece import embedded_vocabulary

    cfg = tiny_features_cfg()
    for modality in MODALITIES:
        info = json.loads((models[modality] / ENCODER_INFO_FILE).read_text())
        assert info["pretrained"] is False and info["seed"] == 0 and info["architecture"]
        rebuilt = build_embedded_encoder(modality, tmp_path / f"again_{modality}", cfg)
        reseeded_cfg = {**cfg, "embedded_seed": 1}
        reseeded = build_embedded_encoder(modality, tmp_path / f"seed1_{modality}", reseeded_cfg)
        first = extract(modality, corpus, models, tmp_path / f"{modality}_a.h5")
        assert first["n_computed"] == len(corpus)
        features = {}
        for name, model_dir in [("rebuilt", rebuilt), ("reseeded", reseeded)]:
            out = tmp_path / f"{modality}_{name}.h5"
            extract_features(modality, corpus, model_dir, out, cfg, params_hash="test-hash")
            features[name] = read_store(out).features
        first_features = read_store(tmp_path / f"{modality}_a.h5").features
        np.testing.assert_array_equal(features["rebuilt"], first_features)  # same seed: identical
        assert not np.allclose(features["reseeded"], first_features), modality
        table = read_store(tmp_path / f"{modality}_a.h5", modality=modality)
        assert table.attrs["pretrained"] is False and table.attrs["model_source"] == "embedded"

    tokenizer = load_encoder("text", models["text"], cfg, torch.device("cpu")).tokenizer
    vocabulary = embedded_vocabulary(SPECIAL_TOKENS)
    assert tokenizer.get_vocab() == {token: index for index, token in enumerate(vocabulary)}
    assert len(vocabulary) > 1000
    tokens = tokenizer.tokenize("I don't know, maybe we're getting married!")
    assert "[UNK]" not in tokens and "married" in tokens and "know" in tokens


@pytest.mark.parametrize("modality", MODALITIES)
def test_output_dims_match_cfg(tmp_path, corpus, models, modality):
    cfg = tiny_features_cfg()
    stats = extract(modality, corpus, models, tmp_path / "out.h5")
    table = read_store(tmp_path / "out.h5", modality=modality, expected_dim=cfg[modality]["dim"])
    assert table.features.shape == (len(corpus), cfg[modality]["dim"])
    assert table.ids == corpus["utterance_id"].tolist() and table.labels == corpus["label"].tolist()
    assert stats["n"] == len(corpus) and stats["device"] == "cpu" and stats["dtype"] == "float32"
    assert 0.0 <= stats["padding_fraction"] < 1.0 and stats["utterances_per_second"] > 0

    wrong = copy.deepcopy(cfg)
    wrong[modality]["dim"] = 7
    with pytest.raises(ParamsError, match=f"features.{modality}.dim"):
        extract_features(modality, corpus, models[modality], tmp_path / "wrong.h5", wrong, params_hash="h")


@pytest.mark.parametrize(
    "modality,overrides",
    [
        ("text", {}),
        ("text", {"pooling": "cls"}),
        ("audio", {}),
        ("audio", {"layer": "transformer", "dim": 32}),
        ("visual", {}),
    ],
)
def test_batched_extraction_equals_one_at_a_time(tmp_path, corpus, models, modality, overrides):
    batched = extract(modality, corpus, models, tmp_path / "batched.h5", batch_size=4, **overrides)
    extract(modality, corpus, models, tmp_path / "single.h5", batch_size=1, **overrides)
    if modality != "visual":
        assert batched["padding_fraction"] > 0  # there was padding to mask
    np.testing.assert_allclose(
        read_store(tmp_path / "batched.h5").features,
        read_store(tmp_path / "single.h5").features,
        rtol=1e-4,
        atol=1e-5,
    )


def test_audio_conv_features_are_wav2vec2_extract_features(corpus, models):
    encoder = load_encoder("audio", models["audio"], tiny_features_cfg(), torch.device("cpu"))
    wave = encoder.load_item(corpus.iloc[1].to_dict())
    with torch.inference_mode():
        ours = encoder.encode([wave]).features
        inputs = encoder.feature_extractor([wave], sampling_rate=16_000, return_tensors="pt")
        reference = encoder.model(inputs["input_values"]).extract_features.mean(dim=1)
    torch.testing.assert_close(ours, reference)


def test_an_utterance_without_a_face_gets_a_zero_visual_feature_and_changes_no_other(
    tmp_path, corpus, models
):
    clean = extract("visual", corpus, models, tmp_path / "clean.h5")
    no_face = corpus.copy()
    frames_dir = Path(no_face.loc[2, "frames_dir"])
    for frame in frames_dir.iterdir():  # the faces rule leaves an empty directory (mlaflow.data.faces)
        frame.unlink()
    no_face.loc[2, "n_frames"] = 0
    extract("visual", no_face, models, tmp_path / "no_face.h5")
    before = read_store(tmp_path / "clean.h5")
    after = read_store(tmp_path / "no_face.h5")
    assert clean is not None and np.abs(before.features[2]).sum() > 0
    assert (after.features[2] == 0).all()
    others = [i for i in range(len(corpus)) if i != 2]
    np.testing.assert_allclose(after.features[others], before.features[others], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------- failures


def test_bad_files_keep_good_rows_and_a_rerun_computes_only_the_missing_ones(tmp_path, corpus, models):
    clean = tmp_path / "clean"
    extract("audio", corpus, models, clean / "audio.h5")
    extract("visual", corpus, models, clean / "visual.h5")

    wavs, frames = corpus["wav_path"].tolist(), corpus["frames_dir"].tolist()
    originals = {wavs[1]: Path(wavs[1]).read_bytes(), wavs[4]: Path(wavs[4]).read_bytes()}
    Path(wavs[1]).write_bytes(b"RIFF garbage, not a wav")
    write_wav(wavs[4], 0.5, rate=8_000)  # wrong sample rate
    broken_png = os.path.join(frames[3], "001.png")
    missing_png = os.path.join(frames[6], "002.png")
    Path(broken_png).write_bytes(Path(broken_png).read_bytes()[:40])  # truncated image
    os.remove(missing_png)

    out = tmp_path / "run"
    with pytest.raises(InputError) as err:
        extract("audio", corpus, models, out / "audio.h5")
    message = str(err.value)
    assert (
        "2 of 7 utterances" in message and wavs[1] in message and wavs[4] in message and "8000 Hz" in message
    )
    assert "re-run" in message and not (out / "audio.h5").exists()
    with h5py.File(partial_path_for(out / "audio.h5")) as f:
        assert f["written"][()].tolist() == [True, False, True, True, False, True, True]

    with pytest.raises(InputError) as err:
        extract("visual", corpus, models, out / "visual.h5")
    assert broken_png in str(err.value) and missing_png in str(err.value) and "not found" in str(err.value)

    for path, content in originals.items():
        Path(path).write_bytes(content)
    write_frame(broken_png, seed=31)
    write_frame(missing_png, seed=62)
    for modality, expected_missing in [("audio", 2), ("visual", 2)]:
        stats = extract(modality, corpus, models, out / f"{modality}.h5")
        assert (
            stats["n_computed"] == expected_missing and stats["n_resumed"] == len(corpus) - expected_missing
        )
        np.testing.assert_allclose(
            read_store(out / f"{modality}.h5").features,
            read_store(clean / f"{modality}.h5").features,
            rtol=1e-4,
            atol=1e-5,
        )


def test_empty_wav_and_missing_file_are_input_errors(tmp_path, corpus, models):
    wavs = corpus["wav_path"].tolist()
    soundfile.write(wavs[0], np.zeros(0, dtype=np.float32), 16_000)
    os.remove(wavs[2])
    with pytest.raises(InputError) as err:
        extract("audio", corpus, models, tmp_path / "audio.h5")
    assert f"{wavs[0]}: contains no audio samples" in str(err.value)
    assert f"{wavs[2]}: wav file not found" in str(err.value)


class SimulatedKill(Exception):
    pass


def test_resume_after_a_kill_continues_and_matches_an_uninterrupted_run(
    tmp_path, corpus, models, monkeypatch
):
    for modality in MODALITIES:
        extract(modality, corpus, models, tmp_path / f"{modality}_clean.h5")
        original_write = FeatureStoreWriter.write
        calls = []

        def write_then_die(self, rows, features, calls=calls, original_write=original_write):
            if calls:
                raise SimulatedKill
            calls.append(len(rows))
            original_write(self, rows, features)

        monkeypatch.setattr(FeatureStoreWriter, "write", write_then_die)
        out = tmp_path / f"{modality}.h5"
        with pytest.raises(SimulatedKill):
            extract(modality, corpus, models, out)
        monkeypatch.setattr(FeatureStoreWriter, "write", original_write)
        assert partial_path_for(out).exists() and not out.exists()

        stats = extract(modality, corpus, models, out)
        assert stats["n_resumed"] == 3 and stats["n_computed"] == len(corpus) - 3
        np.testing.assert_allclose(
            read_store(out).features,
            read_store(tmp_path / f"{modality}_clean.h5").features,
            rtol=1e-4,
            atol=1e-5,
        )


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_params"])
def test_a_damaged_or_foreign_partial_file_is_not_trusted(tmp_path, corpus, models, monkeypatch, damage):
    extract("text", corpus, models, tmp_path / "clean.h5")
    out = tmp_path / "text.h5"
    partial = partial_path_for(out)
    if damage == "garbage":
        partial.write_bytes(os.urandom(5000))
    else:
        monkeypatch.setattr(store_module.FeatureStoreWriter, "finish", lambda self: None)  # leave the partial
        if damage == "truncated":
            extract("text", corpus, models, out)
            partial.write_bytes(partial.read_bytes()[: partial.stat().st_size // 2])
        else:
            cfg = tiny_features_cfg()
            extract_features("text", corpus, models["text"], out, cfg, params_hash="another-hash")
        monkeypatch.undo()
    stats = extract("text", corpus, models, out)
    assert stats["n_resumed"] == 0 and stats["n_computed"] == len(corpus)
    assert "starting over" in stats["resume"]
    np.testing.assert_allclose(
        read_store(out).features, read_store(tmp_path / "clean.h5").features, atol=1e-6
    )


FULL_DISK_EXTRACTION = """
import json, os, sys
from pathlib import Path

import pandas as pd

from mlaflow.features.extract import extract_features
from mlaflow.features.store import FeatureStoreWriter

manifest, model_dir, out, cfg = sys.argv[1:]
write, batches = FeatureStoreWriter.write, []


def write_then_fill_the_disk(self, rows, features):
    batches.append(sorted(int(row) for row in rows))
    write(self, rows, features)
    Path(os.environ["FULL_DISK_FLAG"]).touch()


FeatureStoreWriter.write = write_then_fill_the_disk
corpus = pd.read_csv(manifest, dtype={"utterance_id": str, "transcript": str})
try:
    extract_features("audio", corpus, model_dir, out, json.loads(cfg), params_hash="test-hash", threads=1)
except Exception as err:
    print(json.dumps({"type": type(err).__name__, "message": str(err), "batches": batches}))
"""


def test_a_full_disk_during_extraction_names_the_file_keeps_the_rows_and_the_rerun_resumes(
    tmp_path, corpus, models, full_disk
):
    """The disk fills up after the first batch, under HDF5's own file driver (tests/full_disk.py)."""
    extract("audio", corpus, models, tmp_path / "clean.h5")
    corpus.to_csv(tmp_path / "manifest.csv", index=False)
    out = tmp_path / "audio.h5"
    partial = partial_path_for(out)
    error = full_disk.run(
        FULL_DISK_EXTRACTION, tmp_path / "manifest.csv", models["audio"], out, json.dumps(tiny_features_cfg())
    )
    assert error["type"] == "InputError", error
    assert error["message"].startswith(f"{partial}: cannot be written (No space left on device). Fix: free")
    assert "the rows written so far are kept" in error["message"]
    first, *_ = error["batches"]
    assert len(error["batches"]) == 2 and not out.exists()
    with h5py.File(partial, "r") as handle:  # the first batch, written before the disk filled, is kept
        assert np.flatnonzero(handle["written"][()]).tolist() == first
        kept = handle["features"][first]
    np.testing.assert_array_equal(kept, read_store(tmp_path / "clean.h5").features[first])

    stats = extract("audio", corpus, models, out)  # space again
    assert stats["n_resumed"] == len(first) and stats["n_computed"] == len(corpus) - len(first)
    resumed, clean = read_store(out), read_store(tmp_path / "clean.h5")
    assert resumed.ids == clean.ids and resumed.labels == clean.labels
    np.testing.assert_allclose(resumed.features, clean.features, rtol=1e-4, atol=1e-5)


def test_missing_model_directory_is_a_params_error(tmp_path, corpus):
    with pytest.raises(ParamsError, match="features.visual.model.*does not exist"):
        extract_features("visual", corpus, tmp_path / "nowhere", tmp_path / "v.h5", tiny_features_cfg(), "h")


# ----------------------------------------------------------------------------------------------- registry

FEATURES_DIR = Path(protocol.__file__).parent


def test_fbank_encoder_extracts_pooled_filterbanks_end_to_end(tmp_path, corpus):
    from mlaflow.features.audio_fbank import utterance_fbank

    cfg = tiny_features_cfg()
    cfg["audio"].update(encoder="fbank", n_mels=16, dim=32)
    model_dir = build_embedded_encoder("audio", tmp_path / "fbank", cfg)
    stats = extract_features("audio", corpus, model_dir, tmp_path / "audio.h5", cfg, params_hash="h")
    assert stats["n"] == len(corpus) and stats["padding_fraction"] == 0.0  # each wave framed on its own
    table = read_store(tmp_path / "audio.h5", modality="audio", expected_dim=2 * 16)
    assert table.features.shape == (len(corpus), 32) and table.ids == corpus["utterance_id"].tolist()
    assert table.attrs["encoder"] == "fbank" and table.attrs["pretrained"] is False
    max_samples = int(cfg["audio"]["max_seconds"] * 16_000)
    for path, vector in zip(corpus["wav_path"], table.features):
        wave = soundfile.read(path, dtype="float32")[0][:max_samples]  # 1.2 s wav: truncated to max_seconds
        np.testing.assert_allclose(vector, utterance_fbank(wave, 16_000, n_mels=16), rtol=1e-5, atol=1e-5)

    wrong_dim = copy.deepcopy(cfg)
    wrong_dim["audio"]["dim"] = 512  # wav2vec 2.0's width: fbank gives 2 * n_mels
    with pytest.raises(ParamsError, match=r"features.audio.dim.*set features.audio.dim: 32"):
        extract_features("audio", corpus, model_dir, tmp_path / "wrong.h5", wrong_dim, params_hash="h")
    wrong_bands = copy.deepcopy(cfg)
    wrong_bands["audio"]["n_mels"] = 20
    with pytest.raises(ParamsError, match=r"features.audio.n_mels.*16 bands"):
        extract_features("audio", corpus, model_dir, tmp_path / "wrong.h5", wrong_bands, params_hash="h")


@pytest.mark.parametrize("modality", MODALITIES)
def test_unknown_or_missing_encoder_name_is_a_params_error_naming_the_key(tmp_path, corpus, models, modality):
    cfg = tiny_features_cfg()
    cfg[modality]["encoder"] = "resnet"
    calls = [
        lambda: build_embedded_encoder(modality, tmp_path / "built", cfg),
        lambda: load_encoder(modality, models[modality], cfg, torch.device("cpu")),
        lambda: extract_features(modality, corpus, models[modality], tmp_path / "out.h5", cfg, "h"),
    ]
    for call in calls:
        with pytest.raises(
            ParamsError, match=f"features.{modality}.encoder.*unknown encoder `resnet`"
        ) as err:
            call()
        assert err.value.key == f"features.{modality}.encoder"
        # the known ones
        assert all(name in str(err.value) for name in ("bert", "wav2vec2", "manet", "fbank"))
    assert not (tmp_path / "built").exists() and not (tmp_path / "out.h5").exists()

    del cfg[modality]["encoder"]  # no silent default
    with pytest.raises(ParamsError, match=f"features.{modality}.encoder.*is not set"):
        load_encoder(modality, models[modality], cfg, torch.device("cpu"))
    with pytest.raises(ParamsError, match=r"features.audio.encoder.*unknown encoder `resnet`"):
        encoder_module("resnet", "audio")
    with pytest.raises(ParamsError, match="unknown encoder `resnet`"):
        encoder_class("resnet")


@pytest.mark.parametrize(
    "modality,name", [("text", "fbank"), ("audio", "bert"), ("visual", "wav2vec2"), ("audio", "manet")]
)
def test_an_encoder_of_another_input_kind_is_a_params_error_naming_the_key(
    tmp_path, corpus, models, modality, name
):
    cfg = tiny_features_cfg()
    cfg[modality]["encoder"] = name
    reads = encoder_class(name).modality
    for call in (
        lambda: build_embedded_encoder(modality, tmp_path / "built", cfg),
        lambda: load_encoder(modality, tmp_path / "not_even_a_directory", cfg, torch.device("cpu")),
        lambda: extract_features(modality, corpus, models[modality], tmp_path / "out.h5", cfg, "h"),
    ):
        with pytest.raises(ParamsError) as err:
            call()
        assert err.value.key == f"features.{modality}.encoder"
        assert f"`{name}` reads {reads} input" in str(err.value) and f"{modality} input" in str(err.value)
    assert not (tmp_path / "built").exists()


def test_registry_names_each_encoder_class_and_its_module():
    for name, target in ENCODERS.items():
        module, class_name = target.split(":")
        assert encoder_module(name) == module and module.startswith("mlaflow.features.")
        encoder = encoder_class(name)
        assert encoder.__name__ == class_name and encoder.__module__ == module
        assert encoder.modality in protocol.INPUT_KINDS.values()
        assert callable(sys.modules[module].build_embedded)  # the protocol's module-level builder
    assert {name: encoder_class(name).modality for name in ENCODERS} == {
        "bert": "text",
        "wav2vec2": "audio",
        "manet": "visual",
        "fbank": "audio",
        "fbank_spectrogram": "audio",  # prepared inputs of end-to-end training (train.encoder resnet18)
        "frames": "visual",
        "vit": "image",  # the image-text corpora's pictures (Table 1's Food-101 and MVSA rows)
        "clip_image": "image",  # CLIP's two towers (Table 4)
        "clip_text": "text",
    }


def test_loaded_encoders_follow_the_protocol(models):
    cfg = tiny_features_cfg()
    for modality in MODALITIES:
        encoder = load_encoder(modality, models[modality], cfg, torch.device("cpu"))
        assert isinstance(encoder, Encoder) and encoder.modality == modality
        assert encoder.output_dim == cfg[modality]["dim"]


def _features_import_graph() -> dict[str, set[str]]:
    """{module: modules of mlaflow.features it imports}, from the source of every module of the package.

    Every import statement counts, at any nesting level (imports inside functions included).
    """
    package = "mlaflow.features"
    modules = {path.stem for path in FEATURES_DIR.glob("*.py")}
    graph = {}
    for module in modules:
        imported = set()
        for node in ast.walk(ast.parse((FEATURES_DIR / f"{module}.py").read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: `from . import x`, `from .x import y`
                    base = f"{package}.{node.module}" if node.module else package
                else:
                    base = node.module or ""
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith(f"{package}."):
                    target = name[len(package) + 1 :].split(".")[0]
                    if target in modules and target != module:
                        imported.add(target)
        graph[module] = imported
    return graph


def test_the_features_package_has_no_import_cycle():
    graph = _features_import_graph()
    assert {"protocol", "extract", "text_bert", "audio_wav2vec", "visual_manet", "audio_fbank"} <= set(graph)
    # the parser sees the imports that exist (so an empty graph cannot pass for an acyclic one)
    assert {"protocol", "audio_io"} <= graph["audio_fbank"] and "store" in graph["extract"]
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle in mlaflow.features: {' -> '.join(err.args[1])}")
    assert order
    encoders = {target.split(":")[0].rsplit(".", 1)[1] for target in ENCODERS.values()}
    assert graph["protocol"] == set()  # the bottom of the package
    assert not graph["extract"] & encoders  # encoders are imported on demand, by name
    assert all("extract" not in graph[encoder] for encoder in encoders)
    assert "audio_wav2vec" not in graph["audio_fbank"]  # fbank must not pull in transformers


@pytest.mark.parametrize(
    "module", ["mlaflow.features.protocol", "mlaflow.features.extract", "mlaflow.features.audio_fbank"]
)
def test_importing_the_registry_or_the_driver_imports_no_encoder(module):
    """transformers takes seconds to import: only the encoders that need it may import it, when used."""
    others = [target.split(":")[0] for target in ENCODERS.values() if target.split(":")[0] != module]
    code = (
        f"import sys, {module}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers' or m in sys.argv[1:]))"
    )
    result = subprocess.run([sys.executable, "-c", code, *others], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", f"importing {module} imported {result.stdout.strip()}"


# ----------------------------------------------------------------------------------------------- sharded extraction


def extract_shards(modality, corpus, models, folder, n, cfg=None):
    """Shards 1..n of an extraction (as the workflow's `extract` jobs with runtime.extraction_shards n)."""
    paths = [folder / f"{k}of{n}.h5" for k in range(1, n + 1)]
    for k, path in enumerate(paths, start=1):
        extract_features(
            modality, corpus, models[modality], path, cfg or tiny_features_cfg(), "test-hash", shard=(k, n)
        )
    return paths


def merge(paths, corpus, out, modality="audio", dim=32, params_hash="test-hash"):
    ids, labels = corpus["utterance_id"].tolist(), corpus["label"].tolist()
    return merge_shards(paths, out, ids, labels, modality=modality, dim=dim, params_hash=params_hash)


def store_content(path) -> dict:
    """Everything a store holds: each dataset's values and dtype, and every attribute."""
    with h5py.File(path, "r") as handle:
        return {
            "datasets": {name: (handle[name].dtype.str, handle[name][()].tolist()) for name in handle},
            "attrs": {name: store_module._python_value(value) for name, value in handle.attrs.items()},
        }


@pytest.mark.parametrize("modality", MODALITIES)
# 7 utterances in batches of 3: 3 batches. With 3 shards, sharing utterances (not batches) would make batches of
# other sizes, whose features differ in the last bits; 4 shards leave one empty
@pytest.mark.parametrize("n", [2, 3, 4])
def test_merged_shards_are_the_unsharded_store_bit_for_bit(tmp_path, corpus, models, modality, n):
    whole = tmp_path / f"{modality}.h5"
    extract(modality, corpus, models, whole)
    paths = extract_shards(modality, corpus, models, tmp_path / "shards", n)
    sizes = []
    for path in paths:
        with h5py.File(path, "r") as handle:  # a store of its rows, in manifest order
            shard_ids = [str(i) for i in handle["ids"].asstr()[()]]
            assert handle.attrs["complete"] and "written" not in handle
        assert shard_ids == [i for i in corpus["utterance_id"] if i in shard_ids]
        sizes.append(len(shard_ids))
        if shard_ids:
            assert read_store(path, modality=modality).ids == shard_ids
    assert sum(sizes) == len(corpus) and (n != 4 or sizes[3] == 0)
    dim = tiny_features_cfg()[modality]["dim"]
    stats = merge(paths, corpus, tmp_path / "merged.h5", modality=modality, dim=dim)
    assert stats["n_copied"] == len(corpus) and not partial_path_for(tmp_path / "merged.h5").exists()
    assert store_content(tmp_path / "merged.h5") == store_content(whole)


def test_a_shard_holds_whole_batches_of_the_global_length_order(corpus, models):
    """Shard k of N encodes batches k, k + N, ... of the order one job uses: the same batches, spread out."""
    from mlaflow.features.extract import _length_sorted_batches, shard_batches

    cfg = tiny_features_cfg()
    encoder = load_encoder("audio", models["audio"], cfg, torch.device("cpu"))
    rows = corpus.to_dict("records")
    whole = _length_sorted_batches(encoder, rows, np.arange(len(rows)), 3, {})
    assert len(whole) == 3 and [len(batch) for batch in whole] == [3, 3, 1]
    assert [shard_batches(encoder, rows, 3, (k, 2)) for k in (1, 2)] == [[whole[0], whole[2]], [whole[1]]]


def test_sharded_extraction_through_the_command_line(tmp_path, corpus, models):
    """`mlaflow extract --shard k --shards N` and `mlaflow merge-features` on the job's config file."""
    from mlaflow.cli import main
    from mlaflow.features.protocol import encoder_settings

    cfg = tiny_features_cfg()
    config = {"modality": "text", "half_precision": True, "model_source": "embedded"}
    config["encoder"] = encoder_settings(cfg["text"])
    (tmp_path / "text.config.json").write_text(json.dumps(config))
    corpus.to_csv(tmp_path / "manifest.csv", index=False)
    common = ["--config", str(tmp_path / "text.config.json"), "--manifest", str(tmp_path / "manifest.csv")]
    extract_args = [*common, "--model", str(models["text"]), "--threads", "1"]
    assert main(["extract", *extract_args, "--out", str(tmp_path / "whole.h5")]) == 0
    shards = [str(tmp_path / f"shards/{k}of2.h5") for k in (1, 2)]
    for k, path in enumerate(shards, start=1):
        assert main(["extract", *extract_args, "--out", path, "--shard", str(k), "--shards", "2"]) == 0
    assert main(["merge-features", *common, "--shards", *shards, "--out", str(tmp_path / "text.h5")]) == 0
    assert store_content(tmp_path / "text.h5") == store_content(tmp_path / "whole.h5")
    assert main(["extract", *extract_args, "--out", shards[0], "--shard", "3", "--shards", "2"]) == 2
    assert main(["merge-features", *common, "--shards", shards[0], "--out", str(tmp_path / "t.h5")]) == 2
    assert not (tmp_path / "t.h5").exists()


@pytest.fixture()
def audio_shards(tmp_path, corpus, models):
    return extract_shards("audio", corpus, models, tmp_path / "shards", 2)


def test_merge_rejects_a_bad_set_of_shards_naming_the_shard(tmp_path, corpus, models, audio_shards):
    first, second = audio_shards
    out = tmp_path / "audio.h5"
    three = extract_shards("audio", corpus, models, tmp_path / "three", 3)
    other_params = tmp_path / "other" / "2of2.h5"
    extract_features("audio", corpus, models["audio"], other_params, tiny_features_cfg(), "h2", shard=(2, 2))
    text = extract_shards("text", corpus, models, tmp_path / "text", 2)
    cases = [
        ([first], str(first.parent), "hold 4 of the manifest's 7"),  # a shard missing
        ([first, second, first], str(first), f"that {first} holds too"),  # one given twice
        (
            [first, *three[1:]],
            str(three[2]),
            "holds too",
        ),  # shards of another count (1of3 = 1of2 less batch 3)
        ([first, other_params], str(other_params), "other params"),
        ([first, text[1]], str(text[1]), "holds `text` features"),
        ([first, tmp_path / "absent.h5"], str(tmp_path / "absent.h5"), "shard store not found"),
    ]
    for paths, named, problem in cases:
        with pytest.raises(InputError) as err:
            merge(paths, corpus, out)
        assert str(err.value).startswith(f"{named}: ") and problem in str(err.value), str(err.value)
    with pytest.raises(InputError, match=f"^{first}: .*not in the manifest"):
        merge(audio_shards, corpus.iloc[1:], out)  # the shards of another manifest
    with pytest.raises(InputError, match=f"^{first}: .*32.*but the extraction's config says 16-d"):
        merge(audio_shards, corpus, out, dim=16)
    partial = tmp_path / "partial.h5"  # an interrupted shard: not a store yet
    with h5py.File(second, "r") as handle, h5py.File(partial, "w") as copy:
        for name in handle:
            handle.copy(name, copy)
        copy.attrs.update({**handle.attrs, "complete": False})
    with pytest.raises(InputError, match=f"^{partial}: incomplete feature store"):
        merge([first, partial], corpus, out)
    assert not out.exists() and not partial_path_for(out).exists()  # nothing written before the checks pass
    merge(audio_shards, corpus, out)  # the right set


def test_a_killed_shard_resumes_its_own_rows_to_the_same_store(tmp_path, corpus, models, monkeypatch):
    whole = tmp_path / "audio.h5"
    extract("audio", corpus, models, whole)
    original_write = FeatureStoreWriter.write

    def write_then_die(self, rows, features):
        original_write(self, rows, features)
        raise SimulatedKill

    def shard(k):
        out = tmp_path / "shards" / f"{k}of2.h5"
        return extract_features(
            "audio", corpus, models["audio"], out, tiny_features_cfg(), "test-hash", shard=(k, 2)
        )

    monkeypatch.setattr(FeatureStoreWriter, "write", write_then_die)
    with pytest.raises(SimulatedKill):  # shard 1: batches 1 and 3 of the length order (3 + 1 utterances)
        shard(1)
    monkeypatch.undo()
    first = tmp_path / "shards" / "1of2.h5"
    assert partial_path_for(first).exists() and not first.exists()
    stats = shard(1)
    assert stats["n_resumed"] == 3 and stats["n_computed"] == 1 and stats["shard"] == "1 of 2"
    assert shard(2)["n_resumed"] == 0
    merge([first, tmp_path / "shards" / "2of2.h5"], corpus, tmp_path / "merged.h5")
    assert store_content(tmp_path / "merged.h5") == store_content(whole)  # the same batches: the same bits


def test_a_killed_merge_resumes(tmp_path, corpus, audio_shards, monkeypatch):
    original_write = FeatureStoreWriter.write
    calls = []

    def write_then_die(self, rows, features):
        if calls:
            raise SimulatedKill
        calls.append(len(rows))
        original_write(self, rows, features)

    monkeypatch.setattr(FeatureStoreWriter, "write", write_then_die)
    out = tmp_path / "audio.h5"
    with pytest.raises(SimulatedKill):
        merge_shards(audio_shards, out, corpus["utterance_id"], corpus["label"], "audio", 32, "test-hash", 2)
    monkeypatch.undo()
    assert partial_path_for(out).exists() and not out.exists()
    stats = merge(audio_shards, corpus, out)
    assert stats["n_resumed"] == 2 and stats["n_copied"] == len(corpus) - 2
    assert read_store(out).ids == corpus["utterance_id"].tolist()


def test_an_unreadable_length_stops_every_shard_before_it_encodes(tmp_path, corpus, models):
    """The shards share the utterances by length: one that cannot be read leaves the partition unknown."""
    wav = corpus["wav_path"].tolist()[2]
    os.remove(wav)
    for k in (1, 2):
        out = tmp_path / f"{k}of2.h5"
        with pytest.raises(
            InputError, match=f"the length of 1 of 7 utterances cannot be read: {wav}: wav file"
        ):
            extract_features("audio", corpus, models["audio"], out, tiny_features_cfg(), "h", shard=(k, 2))
        assert not out.exists() and not partial_path_for(out).exists()
