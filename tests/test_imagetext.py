"""The image-text corpora (UPMC Food-101, MVSA: adapters on tiny trees in the releases' layouts and on their
look-alikes) and the image and CLIP encoders (the Table 1 image-text rows and the Table 4 analogue)."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from mlaflow.data import corpora, food101, mvsa, synthetic_food101, synthetic_mvsa
from mlaflow.data.manifest import MANIFEST_COLUMNS
from mlaflow.errors import InputError, ParamsError
from mlaflow.features import clip, image_vit
from mlaflow.features.extract import build_embedded_encoder, extraction_job

CPU = torch.device("cpu")
VIT = {
    "encoder": "vit",
    "model": "embedded",
    "dim": 32,
    "image_size": 16,
    "batch_size": 4,
    "embedded": {"patch_size": 8, "num_layers": 1, "num_heads": 2, "intermediate_size": 32},
}
CLIP_EMBEDDED = {"width": 32, "num_layers": 1, "num_heads": 2, "patch_size": 8, "image_size": 16}
CLIP_IMAGE = {"encoder": "clip_image", "model": "embedded", "dim": 24, "image_size": 16, "batch_size": 4,
              "embedded": CLIP_EMBEDDED}  # fmt: skip
CLIP_TEXT = {"encoder": "clip_text", "model": "embedded", "dim": 24, "max_length": 16, "batch_size": 4,
             "embedded": CLIP_EMBEDDED}  # fmt: skip


def _picture(path: Path, colour=(200, 100, 50)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), colour).save(path)


# ------------------------------------------------------------------------------------------------ Food-101


@pytest.fixture
def food_tree(tmp_path: Path) -> Path:
    """A tiny UPMC Food-101 tree: two classes, 3 train and 1 test pictures each, texts in the titles CSVs."""
    root = tmp_path / "UPMC_Food101"
    for split, n in (("train", 3), ("test", 1)):
        rows = []
        for name in ("pizza", "ramen"):
            for k in range(n):
                _picture(root / "images" / split / name / f"{name}_{k}.jpg")
                rows.append((f"{name}_{k}.jpg", f"Best {name}, homemade recipe {k}", name))
        (root / "texts").mkdir(exist_ok=True)
        with (root / "texts" / f"{split}_titles.csv").open("w", newline="") as handle:
            csv.writer(handle).writerows(rows)
    return root


def test_food101_pairs_pictures_and_texts_with_the_release_split(food_tree: Path):
    assert food101.configured_classes({"corpus": {"root": str(food_tree), "classes": None}}) == [
        "pizza",
        "ramen",
    ]
    manifest, counts = food101.build_manifest(food_tree, ["pizza", "ramen"])
    assert list(manifest.columns) == [*MANIFEST_COLUMNS, "split"]
    assert counts["split"] == {"train": 6, "test": 2} and counts["kept_per_class"] == {"pizza": 4, "ramen": 4}
    row = manifest.set_index("utterance_id").loc["test/ramen_0"]
    assert (row["label"], row["label_index"], row["session"]) == ("ramen", 1, 2)
    assert row["transcript"] == "Best ramen, homemade recipe 0"  # the quoted comma is kept
    assert row["image_path"].endswith("images/test/ramen/ramen_0.jpg")
    # a subset of the classes (corpus.classes): the other rows are counted as left out
    manifest, counts = food101.build_manifest(food_tree, ["ramen"])
    assert len(manifest) == 4 and counts["dropped_per_label"] == {"pizza": 4}


@pytest.mark.parametrize(
    "damage, named, problem",
    [
        (lambda r: (r / "images/train/pizza/pizza_1.jpg").unlink(), "pizza_1.jpg", "picture is missing"),
        (lambda r: _picture(r / "images/train/pizza/pizza_9.jpg"), "pizza_9.jpg", "pictures without a text"),
        (
            lambda r: (r / "images/train/ramen/ramen_2.jpg").write_bytes(b"not a jpeg"),
            "ramen_2.jpg",
            "unreadable",
        ),
        (
            lambda r: (r / "texts/test_titles.csv").write_text(
                'pizza_0.jpg,"  ",pizza\nramen_0.jpg,ok,ramen\n'
            ),
            "pizza_0.jpg",
            "empty texts",
        ),
        (
            lambda r: (r / "texts/test_titles.csv").write_text("pizza_0.jpg,a,ramen\nramen_0.jpg,ok,ramen\n"),
            "pizza_0.jpg",
            "another class",
        ),
    ],
)
def test_food101_names_each_bad_file(food_tree: Path, damage, named, problem):
    damage(food_tree)
    with pytest.raises(InputError, match=problem) as err:
        food101.build_manifest(food_tree, ["pizza", "ramen"])
    assert named in str(err.value)


def test_food101_lookalike_is_deterministic_and_its_text_names_the_dish_more_often(tmp_path: Path):
    cfg = {
        **synthetic_food101.DEFAULTS,
        "classes": 3,
        "train_per_class": 10,
        "test_per_class": 4,
        "image_size": 16,
    }
    synthetic_food101.generate_corpus(tmp_path / "a", cfg, threads=1)
    synthetic_food101.generate_corpus(tmp_path / "b", cfg, threads=2)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    classes = synthetic_food101.class_names(cfg)
    manifest, counts = food101.build_manifest(tmp_path / "a", classes)
    assert counts["split"] == {"train": 30, "test": 12}
    names_own_dish = [
        any(word in synthetic_food101.DISH_WORDS[label] for word in text.split())
        for label, text in zip(manifest["label"], manifest["transcript"], strict=True)
    ]
    assert np.mean(names_own_dish) > 0.75  # strength .85 plus chance
    with pytest.raises(ParamsError, match="corpus.embedded_food101.classes"):
        synthetic_food101.generate_corpus(tmp_path / "c", {**cfg, "classes": 99})


# ------------------------------------------------------------------------------------------------ MVSA


def _mvsa_tree(root: Path, lines: list[str], header: str = "ID\ttext,image") -> Path:
    for tweet in range(1, 7):
        _picture(root / "data" / f"{tweet}.jpg")
        (root / "data" / f"{tweet}.txt").write_text(f"tweet number {tweet} so happy\n")
    (root / "labelResultAll.txt").write_text("\n".join([header, *lines]) + "\n")
    return root


def test_mvsa_combines_text_and_image_labels_as_the_field_does():
    assert mvsa.combined_label("positive", "positive") == "positive"
    assert mvsa.combined_label("neutral", "negative") == "negative"
    assert mvsa.combined_label("positive", "neutral") == "positive"
    assert mvsa.combined_label("positive", "negative") is None  # inconsistent: dropped
    assert mvsa.majority(["positive", "negative", "positive"]) == "positive"
    assert mvsa.majority(["positive", "negative", "neutral"]) is None


def test_mvsa_single_keeps_consistent_tweets(tmp_path: Path):
    lines = ["1\tpositive,positive", "2\tneutral,negative", "3\tpositive,negative", "4\tneutral,neutral",
             "5\tnegative,neutral", "6\tpositive,neutral"]  # fmt: skip
    manifest, counts = mvsa.build_manifest(_mvsa_tree(tmp_path / "MVSA_Single", lines))
    assert counts["variant"] == "MVSA-Single" and counts["dropped_per_reason"] == {"inconsistent": 1}
    labels = dict(zip(manifest["utterance_id"], manifest["label"], strict=True))
    assert labels == {"1": "positive", "2": "negative", "4": "neutral", "5": "negative", "6": "positive"}
    assert set(manifest["split"]) <= {"train", "test"} and manifest["image_path"].str.endswith(".jpg").all()


def test_mvsa_multiple_takes_each_modalitys_majority(tmp_path: Path):
    header = "ID\ttext,image\ttext,image\ttext,image"
    lines = [
        "1\tpositive,neutral\tpositive,positive\tneutral,positive",  # text positive, image positive
        "2\tpositive,negative\tnegative,neutral\tneutral,positive",  # text without a majority: dropped
        "3\tnegative,negative\tnegative,negative\tpositive,negative",
        "4\tpositive,negative\tpositive,negative\tpositive,positive",  # positive against negative: dropped
        "5\tneutral,neutral\tneutral,neutral\tneutral,neutral",
        "6\tneutral,positive\tneutral,positive\tnegative,negative",
    ]
    manifest, counts = mvsa.build_manifest(_mvsa_tree(tmp_path / "MVSA", lines, header))
    assert counts["dropped_per_reason"] == {"inconsistent": 1, "no_majority": 1}
    assert dict(zip(manifest["utterance_id"], manifest["label"], strict=True)) == {
        "1": "positive", "3": "negative", "5": "neutral", "6": "positive"
    }  # fmt: skip


@pytest.mark.parametrize(
    "damage, named, problem",
    [
        (lambda r: (r / "data/3.jpg").unlink(), "3", "without their picture or text"),
        (lambda r: (r / "data/2.txt").unlink(), "2", "without their picture or text"),
        (lambda r: (r / "data/4.txt").write_text("  \n"), "4.txt", "empty texts"),
        (lambda r: (r / "data/5.jpg").write_bytes(b"\x00garbage"), "5.jpg", "unreadable"),
        (
            lambda r: (r / "labelResultAll.txt").write_text("ID\ttext,image\n1\thappy,positive\n"),
            "labelResultAll",
            "unknown label",
        ),
        (
            lambda r: (r / "labelResultAll.txt").write_text("ID\ttext,image\n1\tpositive\n"),
            "labelResultAll",
            "lines that are not",
        ),
    ],
)
def test_mvsa_names_each_bad_file(tmp_path: Path, damage, named, problem):
    lines = [f"{k}\tpositive,positive" for k in range(1, 7)]
    root = _mvsa_tree(tmp_path / "MVSA_Single", lines)
    damage(root)
    with pytest.raises(InputError, match=problem) as err:
        mvsa.build_manifest(root)
    assert named in str(err.value)


def test_mvsa_lookalike_drops_inconsistent_tweets_and_splits_the_same_way(tmp_path: Path):
    cfg = {**synthetic_mvsa.DEFAULTS, "tweets": 120, "image_size": 16}
    synthetic_mvsa.generate_corpus(tmp_path / "a", cfg)
    first, counts = mvsa.build_manifest(tmp_path / "a")
    assert counts["n_labelled"] == 120 and counts["dropped_per_reason"]["inconsistent"] > 0
    again, _ = mvsa.build_manifest(tmp_path / "a")
    assert first["split"].tolist() == again["split"].tolist() and 0 < (first["split"] == "test").sum() < 20
    synthetic_mvsa.generate_corpus(tmp_path / "b", {**cfg, "annotators": 3})
    header = (tmp_path / "b" / "labelResultAll.txt").read_text().splitlines()[0]
    assert header.count("text,image") == 3 and mvsa.build_manifest(tmp_path / "b")[1]["variant"].startswith(
        "MVSA-Multiple"
    )


def test_the_registry_reads_both_kinds_as_image_and_text():
    for kind in ("food101", "embedded_food101", "mvsa", "embedded_mvsa"):
        assert (
            corpora.CORPORA[kind].modalities == ("image", "text")
            and corpora.CORPORA[kind].strongest == "text"
        )
    assert corpora.classes({"corpus": {"kind": "mvsa", "label_setup": "3class"}}) == mvsa.CLASS_NAMES


# ------------------------------------------------------------------------------------------------ encoders


@pytest.fixture
def samples(tmp_path: Path):
    """A manifest of 5 picture-text samples (the manifest job's columns) written as CSV."""
    import pandas as pd

    rows = []
    for k in range(5):
        path = tmp_path / "pics" / f"{k}.png"
        _picture(path, (40 * k, 100, 200 - 30 * k))
        rows.append({"utterance_id": f"s{k}", "label": "a", "transcript": f"grilled salmon number {k}",
                     "image_path": str(path), "wav_path": "", "frames_dir": "", "n_frames": 0})  # fmt: skip
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def _extract(modality: str, cfg: dict, manifest: Path, tmp_path: Path) -> Path:
    model = build_embedded_encoder(
        modality, tmp_path / f"model_{modality}", {"embedded_seed": 0, modality: cfg}
    )
    out = tmp_path / f"{modality}.h5"
    config = {"modality": modality, "half_precision": False, "encoder": cfg}
    extraction_job(config, manifest, model, out, threads=1, device="cpu")
    return out


def test_vit_features_land_in_the_store(samples: Path, tmp_path: Path):
    store = _extract("image", VIT, samples, tmp_path)
    with h5py.File(store, "r") as f:
        features = f["features"][:]
        assert features.shape == (5, 32) and np.isfinite(features).all()
        assert f.attrs["pretrained"] == False  # noqa: E712 -- an h5py numpy bool
    assert not np.allclose(features[0], features[1])  # different pictures, different features
    with pytest.raises(ParamsError, match="features.image.image_size"):
        image_vit.ViTImageEncoder.from_pretrained(tmp_path / "model_image", {**VIT, "image_size": 32}, CPU)


def test_clip_towers_land_in_the_stores_in_one_embedding_space(samples: Path, tmp_path: Path):
    image_store = _extract("image", CLIP_IMAGE, samples, tmp_path)
    text_store = _extract("text", CLIP_TEXT, samples, tmp_path)
    for store in (image_store, text_store):
        with h5py.File(store, "r") as f:
            assert f["features"].shape == (5, 24)  # the projection width, for both towers
    # both modalities' embedded directories hold the same CLIP
    same = [(tmp_path / f"model_{m}" / "model.safetensors").read_bytes() for m in ("image", "text")]
    assert same[0] == same[1]
    # the text tower's feature is what CLIPModel.get_text_features gives
    encoder = clip.ClipTextEncoder.from_pretrained(tmp_path / "model_text", CLIP_TEXT, CPU)
    batch = encoder.tokenizer(["grilled salmon number 0"], return_tensors="pt")
    with torch.inference_mode():
        reference = encoder.model.get_text_features(**batch).pooler_output
    with h5py.File(text_store, "r") as f:
        assert np.allclose(f["features"][0], reference[0].numpy(), atol=1e-5)


def test_a_clip_directory_without_its_tokenizer_is_named(tmp_path: Path):
    model = clip.build_embedded(tmp_path / "clip", CLIP_TEXT, 0)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model / name).unlink(missing_ok=True)
    with pytest.raises(ParamsError, match="features.text.model.*no tokenizer"):
        clip.ClipTextEncoder.from_pretrained(model, CLIP_TEXT, CPU)
    with pytest.raises(ParamsError, match="features.text.max_length"):
        clip.ClipTextEncoder.from_pretrained(
            clip.build_embedded(tmp_path / "clip2", CLIP_TEXT, 0), {**CLIP_TEXT, "max_length": 100}, CPU
        )
    with pytest.raises(ParamsError, match="not a CLIP"):
        clip.ClipImageEncoder.from_pretrained(
            image_vit.build_embedded(tmp_path / "vit", VIT, 0), CLIP_IMAGE, CPU
        )


def test_a_missing_or_unreadable_picture_is_named_and_the_rest_kept(samples: Path, tmp_path: Path):
    import pandas as pd

    manifest = pd.read_csv(samples)
    Path(manifest.loc[1, "image_path"]).unlink()
    Path(manifest.loc[3, "image_path"]).write_bytes(b"broken")
    with pytest.raises(InputError) as err:
        _extract("image", VIT, samples, tmp_path)
    message = str(err.value)
    assert "2 of 5" in message and "1.png" in message and "3.png" in message
    assert "image not found" in message and "cannot be decoded" in message
    assert "the 3 rows already computed are kept in" in message.replace("\n", " ")
