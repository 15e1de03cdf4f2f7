"""The end-to-end setting (paper Table 1, A.3.1; train.encoder: resnet18): prepared inputs in the feature stores,
ResNet-18 encoders trained by each method's own rule, stacked runs equal to runs alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlaflow.data import cremad
from mlaflow.data.folds import fold_indices, make_folds
from mlaflow.data.synthetic_cremad import DEFAULTS, generate_corpus
from mlaflow.errors import InputError, ParamsError
from mlaflow.features import audio_fbank, extract, visual_frames
from mlaflow.methods import build_method
from mlaflow.methods.base import RunGroup
from mlaflow.methods.resnet import StackedResNetEncoder, random_resized_crop_flip
from mlaflow.train.data import load_corpus
from mlaflow.train.loop import RunSpec, train_runs

TABLE1_METHODS = ["late_fusion", "sum", "concat", "film", "bigated", "ogm_ge", "qmf", "mla"]
SPECTROGRAM = {
    "encoder": "fbank_spectrogram",
    "model": "embedded",
    "dim": 64 * 16,
    "n_mels": 16,
    "spectrogram_frames": 64,
    "max_seconds": 20.0,
    "batch_size": 8,
}
FRAMES = {
    "encoder": "frames",
    "model": "embedded",
    "dim": 2 * 3 * 32 * 32,
    "frames": 2,
    "image_size": 32,
    "batch_size": 8,
}


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict:
    """A small CREMA-D look-alike (48 clips), its manifest and its prepared inputs in two stores."""
    root = tmp_path_factory.mktemp("e2e")
    cfg = {**DEFAULTS, "actors": 4, "sentences": 2, "frames_per_clip": 3, "image_size": 32}
    generate_corpus(root / "CREMA-D", cfg, threads=1)
    manifest, _ = cremad.build_manifest(root / "CREMA-D", speaker_groups=2)
    manifest_path = root / "manifest.csv"
    manifest.to_csv(manifest_path, index=False)
    features = {"half_precision": False, "audio": SPECTROGRAM, "visual": FRAMES}
    stores = {}
    for modality, module in (("audio", audio_fbank), ("visual", visual_frames)):
        model = module.build_embedded(root / f"model_{modality}", features[modality], seed=0)
        stores[modality] = root / f"{modality}.h5"
        extract.extract_features(modality, manifest, model, stores[modality], features, "hash")
    corpus = load_corpus(
        manifest_path,
        stores,
        cremad.CLASS_NAMES["6class"],
        ["audio", "visual"],
        {"audio": SPECTROGRAM["dim"], "visual": FRAMES["dim"]},
    )
    folds = make_folds(manifest, [1], 0.2, 0, cremad.CLASS_NAMES["6class"])
    return {"root": root, "manifest": manifest, "corpus": corpus, "folds": folds, "features": features}


def _settings(method: str, epochs: int = 1) -> dict:
    import yaml

    from mlaflow.pipeline import params as P

    config = yaml.safe_load(Path("params.yaml").read_text())
    config["corpus"]["kind"] = (
        "embedded_cremad"  # the method options that name a modality: CREMA-D's defaults
    )
    config = P.validate(config, check_files=False)
    train = {
        **config["train"],
        "encoder": "resnet18",
        "resnet_width": 4,
        "epochs": epochs,
        "batch_size": 8,
        "standardize": False,
        "optimizer": "sgd",
        "lr": 0.01,
    }
    train.pop("method_optimizers", None)
    return {"train": train, "method_params": {method: config["method_params"][method]}}


def _specs(prepared, seeds=(0, 1)) -> list[RunSpec]:
    n = len(prepared["corpus"].utterance_ids)
    split = fold_indices(prepared["folds"], 1)
    return [RunSpec(seed, np.ones((n, 2), dtype=bool), split) for seed in seeds]


def test_prepared_inputs_land_in_the_stores_with_their_shape(prepared):
    corpus = prepared["corpus"]
    assert corpus.input_shapes == [(1, 64, 16), (2, 3, 32, 32)]
    assert corpus.feature_attrs["visual"]["encoder"] == "frames"
    frames = corpus.features[1].view(-1, 2, 3, 32, 32)
    assert float(frames.min()) >= 0.0 and float(frames.max()) <= 1.0 and float(frames.std()) > 0.01
    row = prepared["manifest"].iloc[0].to_dict()
    encoder = visual_frames.FramesVisualEncoder.from_pretrained(
        prepared["root"] / "model_visual", FRAMES, torch.device("cpu")
    )
    assert visual_frames.frame_indices(3, 2) == [0, 2]
    first = torch.from_numpy(encoder.load_item(row)).permute(0, 3, 1, 2).float() / 255.0
    torch.testing.assert_close(frames[0], first)
    spectrogram = corpus.features[0].view(-1, 64, 16)
    wave = audio_fbank.read_wave(Path(row["wav_path"]), 16000, 20 * 16000, 400)
    # clips of 1.5-3 s have more than 64 frames: the first 64
    torch.testing.assert_close(
        spectrogram[0], torch.from_numpy(audio_fbank.fbank_features(wave, 16000, 16)[:64])
    )


def test_a_short_clip_is_zero_padded(prepared):
    encoder = audio_fbank.FbankSpectrogramEncoder.from_pretrained(
        prepared["root"] / "model_audio", SPECTROGRAM, torch.device("cpu")
    )
    wave = np.random.default_rng(0).standard_normal(16000 * 3 // 10).astype(np.float32)  # 0.3 s: 28 frames
    image = encoder.encode([wave]).features.view(64, 16)
    torch.testing.assert_close(image[:28], torch.from_numpy(audio_fbank.fbank_features(wave, 16000, 16)))
    assert float(image[28:].abs().max()) == 0.0


def test_a_clip_with_too_few_frames_is_named(prepared, tmp_path):
    encoder = visual_frames.FramesVisualEncoder.from_pretrained(
        prepared["root"] / "model_visual", {**FRAMES, "frames": 2}, torch.device("cpu")
    )
    row = {**prepared["manifest"].iloc[0].to_dict(), "n_frames": 1}
    with pytest.raises(InputError, match="fewer than the 2"):
        encoder.load_item(row)
    with pytest.raises(ParamsError, match="features.visual.frames"):
        visual_frames.FramesVisualEncoder.from_pretrained(
            prepared["root"] / "model_visual", {**FRAMES, "frames": 3}, torch.device("cpu")
        )


def test_stacked_resnets_equal_runs_alone_and_skip_rows_not_given():
    shape = (2, 3, 32, 32)
    x = torch.rand(2, 6, int(np.prod(shape)))
    rows = torch.ones(2, 6, dtype=torch.bool)
    rows[1, 4:] = False
    stacked = StackedResNetEncoder(shape, 4, _gens([1, 2])).train()
    alone = [StackedResNetEncoder(shape, 4, _gens([s])).train() for s in (1, 2)]
    out = stacked(x, rows)
    for r in range(2):
        torch.testing.assert_close(out[r : r + 1], alone[r](x[r : r + 1], rows[r : r + 1]), rtol=0, atol=0)
    assert float(out[1, 4:].detach().abs().max()) == 0.0
    # batch-norm statistics: per run, from its own rows only
    torch.testing.assert_close(stacked.bn1__running_mean[1], alone[1].bn1__running_mean[0], rtol=0, atol=0)
    assert stacked.bn1__num_batches_tracked.tolist() == [1, 1]


def test_the_trunk_is_torchvisions_resnet18():
    import torchvision

    from mlaflow.methods.resnet import resnet18_trunk

    ours = resnet18_trunk(3, 64)
    theirs = torchvision.models.resnet18()
    assert {n: p.shape for n, p in ours.named_parameters()} == {
        n: p.shape for n, p in theirs.named_parameters() if not n.startswith("fc.")
    }
    assert resnet18_trunk(1, 64).conv1.in_channels == 1


def test_a_whole_frame_crop_without_flip_is_the_frame_and_a_flip_its_mirror(monkeypatch):
    import mlaflow.methods.resnet as resnet

    images = torch.rand(4, 3, 8, 8)
    monkeypatch.setattr(resnet, "CROP_SCALE", (1.0, 1.0))  # the whole area: width = height = 1 at ratio 1
    monkeypatch.setattr(resnet, "CROP_RATIO", (1.0, 1.0))
    out = random_resized_crop_flip(images, torch.Generator().manual_seed(0))
    for i in range(4):
        assert torch.allclose(out[i], images[i], atol=1e-5) or torch.allclose(
            out[i], images[i].flip(-1), atol=1e-5
        )
    flipped = [not torch.allclose(out[i], images[i], atol=1e-5) for i in range(4)]
    assert any(flipped) or not all(flipped)  # the draws decide, per frame


def test_augmentation_crops_and_flips_from_the_runs_generator():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    a = random_resized_crop_flip(images, torch.Generator().manual_seed(0))
    b = random_resized_crop_flip(images, torch.Generator().manual_seed(0))
    c = random_resized_crop_flip(images, torch.Generator().manual_seed(1))
    assert a.shape == images.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= float(images.min()) and float(a.max()) <= float(images.max())


@pytest.mark.parametrize("method", TABLE1_METHODS)
def test_every_table1_method_trains_end_to_end_and_stacked_equals_alone(prepared, method):
    specs = _specs(prepared)
    settings = _settings(method)
    stacked = train_runs(method, prepared["corpus"], specs, settings)
    for r, spec in enumerate(specs):
        alone = train_runs(method, prepared["corpus"], [spec], settings)[0]
        assert alone["metrics"]["accuracy"] == stacked[r]["metrics"]["accuracy"]
        np.testing.assert_allclose(alone["train_loss_curve"], stacked[r]["train_loss_curve"], rtol=1e-5)
    assert set(stacked[0]["metrics"]["per_modality_accuracy"]) == {"audio", "visual"}


def _group(prepared, seeds=(0,)) -> RunGroup:
    corpus = prepared["corpus"]
    specs = _specs(prepared, seeds)
    return RunGroup(
        features=corpus.features,
        labels=corpus.labels,
        present=torch.from_numpy(np.stack([s.present for s in specs])),
        splits=[{k: torch.from_numpy(v) for k, v in s.split.items()} for s in specs],
        generators=_gens(seeds),
        standardize=False,
    )


def test_mla_steps_only_the_current_modalitys_encoder(prepared):
    from mlaflow.methods.optim import StackedOptimizer

    data = _group(prepared)
    settings = _settings("mla")
    method = build_method(
        "mla", dict(zip(["audio", "visual"], prepared["corpus"].input_shapes)), 6, settings, data.generators
    )
    optimizer = StackedOptimizer(list(method.parameters()), settings["train"], 1)
    method.train()
    seen = []
    for step in method.training_steps(data, 8, 0):
        before = [[p.detach().clone() for p in enc.parameters()] for enc in method.encoders]
        optimizer.zero_grad()
        step.loss.sum().backward()
        method.after_backward(step)
        optimizer.step(step.stepping)
        changed = [
            any(not torch.equal(b, p) for b, p in zip(bs, enc.parameters()))
            for bs, enc in zip(before, method.encoders)
        ]
        m = next(
            i
            for i, enc in enumerate(method.encoders)
            if step.stepping.get(next(enc.parameters())) is not None
        )
        assert changed == [i == m for i in range(2)]
        seen.append(m)
        if len(seen) == 4:
            break
    assert seen == [0, 1, 0, 1]  # eq. 1: the modalities alternate


def test_ogm_ge_modulates_the_encoders_convolution_kernels(prepared):
    data = _group(prepared)
    settings = _settings("ogm_ge")
    settings["method_params"]["ogm_ge"] = {
        **settings["method_params"]["ogm_ge"],
        "modulation": "ogm",
        "alpha": 5.0,
    }
    method = build_method(
        "ogm_ge",
        dict(zip(["audio", "visual"], prepared["corpus"].input_shapes)),
        6,
        settings,
        data.generators,
    )
    method.train()
    step = next(iter(method.training_steps(data, 8, 0)))
    step.loss.sum().backward()
    kernels = [enc.modulated_parameters() for enc in method.encoders]
    assert all(len(k) == 20 and all(p.dim() == 5 for p in k) for k in kernels)  # ResNet-18's 20 conv kernels
    raw = [[p.grad.clone() for p in k] for k in kernels]
    method.after_backward(step)
    k = method.last_coefficients[0]  # [M]
    dominant = int(k.argmin())
    assert float(k[dominant]) < 1.0 and float(k[1 - dominant]) == 1.0
    for m in range(2):
        for g_raw, p in zip(raw[m], kernels[m]):
            torch.testing.assert_close(p.grad, g_raw * k[m])


def test_resnet18_refuses_feature_stores_and_methods_without_shared_encoders(prepared):
    settings = _settings("late_fusion")
    with pytest.raises(ParamsError, match="input_shape"):
        build_method("late_fusion", {"audio": 512, "visual": 1024}, 6, settings, _gens([0]))
    settings = _settings("late_fusion")
    settings["method_params"] = {"cra": {}}
    with pytest.raises(ParamsError, match="frozen features only"):
        build_method(
            "cra", dict(zip(["audio", "visual"], prepared["corpus"].input_shapes)), 6, settings, _gens([0])
        )
