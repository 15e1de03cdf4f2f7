"""The Kinetics-Sounds adapter (a tiny tree in the OGM-GE/PMR layout) and its look-alike (embedded_ks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from PIL import Image

from mlaflow.data import corpora, kinetics, synthetic_ks
from mlaflow.data.folds import make_folds
from mlaflow.data.manifest import MANIFEST_COLUMNS
from mlaflow.errors import InputError, ParamsError
from mlaflow.pipeline import params as P


def _clip(
    root: Path, split: str, name: str, clip: str, n_frames: int = 3, wav: bool = True, frames: bool = True
):
    audio_dir, visual_dir = kinetics.SPLITS[split]
    if wav:
        path = root / audio_dir / name / f"{clip}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, 0.1 * np.random.default_rng(0).standard_normal(1600).astype(np.float32), 16000)
    if frames:
        folder = root / visual_dir / name / clip
        folder.mkdir(parents=True)
        for k in range(n_frames):
            Image.new("RGB", (8, 8), (k * 40, 0, 0)).save(folder / f"{k:03d}.png")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "ks"
    root.mkdir()
    (root / "class.txt").write_text(
        "playing drums, dog barking,laughing\n"
    )  # spaces as their code reads them
    for split, per_class in (("train", 3), ("test", 1)):
        for name in ("playing_drums", "dog_barking", "laughing"):
            for i in range(per_class):
                _clip(root, split, name, f"{name}-{split}-{i}")
    return root


def test_class_file_names_and_order(tree: Path):
    assert kinetics.read_class_file(tree / "class.txt") == ["playing_drums", "dog_barking", "laughing"]


def test_manifest_pairs_wavs_and_frames_with_the_trees_split(tree: Path):
    classes = kinetics.read_class_file(tree / "class.txt")
    manifest, counts = kinetics.build_manifest(tree, classes)
    assert list(manifest.columns) == [*MANIFEST_COLUMNS, "split"]
    assert len(manifest) == 12 and counts["split"] == {"train": 9, "test": 3} and counts["n_classes"] == 3
    row = manifest.set_index("utterance_id").loc["dog_barking-test-0"]
    assert (row["label"], row["label_index"], row["split"], row["n_frames"]) == ("dog_barking", 1, "test", 3)
    assert (
        Path(row["wav_path"]).parent.name == "dog_barking"
        and Path(row["frames_dir"]).name == "dog_barking-test-0"
    )
    folds = make_folds(manifest, [1], 0.2, 0, classes)
    assert set(folds.loc[manifest["split"] == "test", "fold1"]) == {"test"}


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda root: _clip(root, "train", "laughing", "only-audio", frames=False), "no frames folder"),
        (lambda root: _clip(root, "test", "laughing", "only-frames", wav=False), "no wav file"),
        (lambda root: _clip(root, "train", "whistling", "x"), "not in the class list"),
        (lambda root: _clip(root, "test", "laughing", "laughing-train-0"), "used twice"),
        (
            lambda root: (root / "visual/val_img/Image-01-FPS/laughing/laughing-test-0/000.png").rename(
                root / "visual/val_img/Image-01-FPS/laughing/laughing-test-0/001x.png"
            ),
            "not numbered",
        ),
        (lambda root: (root / "visual/train_img/Image-01-FPS/whistling").mkdir(), "Image-01-FPS/whistling"),
    ],
)
def test_bad_trees_are_named(tree: Path, damage, match):
    damage(tree)
    with pytest.raises(InputError, match=match):
        kinetics.build_manifest(tree, kinetics.read_class_file(tree / "class.txt"))


def test_bad_class_files(tmp_path: Path):
    with pytest.raises(InputError, match="class file not found"):
        kinetics.read_class_file(tmp_path / "class.txt")
    (tmp_path / "class.txt").write_text("a,b,a\n")
    with pytest.raises(InputError, match="distinct"):
        kinetics.read_class_file(tmp_path / "class.txt")


def _config(**corpus) -> dict:
    config = yaml.safe_load(Path("params.yaml").read_text())
    config["corpus"].update(corpus)
    config["features"]["audio"].update(encoder="fbank", dim=256)
    config["splits"]["folds"] = [1]
    return config


def test_kinetics_classes_come_from_the_trees_class_file_or_the_config(tree: Path):
    config = P.validate(_config(kind="kinetics", root=str(tree)), check_files=False)
    assert corpora.classes(config) == ["playing_drums", "dog_barking", "laughing"]
    assert corpora.modalities(config) == ["audio", "visual"]
    config = P.validate(_config(kind="kinetics", root=str(tree), classes=["a", "b"]), check_files=False)
    assert corpora.classes(config) == ["a", "b"]


def test_the_look_alike_in_the_kinetics_layout(tmp_path: Path):
    cfg = {
        **synthetic_ks.DEFAULTS,
        "classes": 3,
        "train_clips_per_class": 3,
        "test_clips_per_class": 2,
        "frames_per_clip": 2,
        "image_size": 32,
    }
    summary = synthetic_ks.generate_corpus(tmp_path / "a", cfg, threads=1)
    synthetic_ks.generate_corpus(tmp_path / "b", cfg, threads=2)
    assert summary["n_clips"] == 15 and summary["per_split"] == {"train": 9, "test": 6}
    classes = kinetics.read_class_file(tmp_path / "a" / "class.txt")
    assert classes == list(kinetics.EMBEDDED_CLASSES[:3])
    manifest, _ = kinetics.build_manifest(tmp_path / "a", classes)
    assert len(manifest) == 15 and set(manifest["n_frames"]) == {2}
    for row in manifest.itertuples():  # the same seed gives the same files, whatever the threads
        other = Path(str(row.wav_path).replace(f"{tmp_path}/a", f"{tmp_path}/b"))
        assert other.read_bytes() == Path(row.wav_path).read_bytes()
    config = P.validate(
        _config(kind="embedded_ks", root="data/corpus/KS", embedded_ks={"classes": 3}), check_files=False
    )
    assert corpora.classes(config) == classes


def test_the_look_alikes_settings_are_checked(tmp_path: Path):
    with pytest.raises(ParamsError, match="corpus.embedded_ks.classes"):
        synthetic_ks.generate_corpus(tmp_path / "x", {**synthetic_ks.DEFAULTS, "classes": 9})
