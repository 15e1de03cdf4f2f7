"""Audio encoder: wav2vec 2.0 (transformers `Wav2Vec2Model` + `Wav2Vec2FeatureExtractor`) pooled per utterance.

Two kinds of model directory load through the same `from_pretrained(dir)` path:

* a pretrained wav2vec 2.0 saved with `save_pretrained` (model + preprocessor config), as in the MLA paper;
* the *embedded* encoder built by `build_embedded`: randomly initialised (NOT pretrained), with a convolutional
  feature encoder of channels `features.audio.embedded.conv_dim` (the last one 512, so the conv output is
  512-d as the paper's features) and a small transformer. It uses `feat_extract_norm="layer"` (a LayerNorm
  over channels in every conv layer, per frame) so that zero padding added for batching cannot leak into
  the valid frames, as it would through wav2vec2-base's GroupNorm over time.

The conv stack keeps wav2vec 2.0's total stride of 320 samples (20 ms at 16 kHz): the first layer is
kernel 10 / stride 5 as in wav2vec 2.0, the remaining layers share the other factor 64 = 2^6. With seven
layers it is exactly wav2vec 2.0's geometry.

`features.audio.layer`:
  conv         mean over valid frames of the feature-encoder output after its LayerNorm (what
               `Wav2Vec2Model` returns as `extract_features`); the transformer is not run at all.
  transformer  mean over valid frames of `last_hidden_state` (the model gets the attention mask when its
               preprocessor says so, i.e. for layer-norm models).

"Valid frames" are those the model's `_get_feat_extract_output_lengths` computes from each utterance's own
length, so batched and one-at-a-time extraction agree (for layer-norm models; GroupNorm models such as
wav2vec2-base normalise over the padded length and differ slightly - a warning says so).

Wav files are read by `mlaflow.features.audio_io` (shared with the filterbank encoder). The encoder follows
the protocol of `mlaflow.features.protocol`; it is registered as `features.audio.encoder: wav2vec2`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlaflow.errors import ParamsError
from mlaflow.features.audio_io import read_wave, wav_length
from mlaflow.features.protocol import (
    EncodedBatch,
    read_encoder_info,
    require_model_dir,
    seeded_init,
    to_device,
    write_encoder_info,
)
from mlaflow.io import atomic_path

log = logging.getLogger(__name__)

ARCHITECTURE = "wav2vec2"
SAMPLE_RATE = 16_000
WAV2VEC2_KERNELS = (10, 3, 3, 3, 3, 2, 2)
WAV2VEC2_STRIDES = (5, 2, 2, 2, 2, 2, 2)


def conv_geometry(n_layers: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(kernels, strides) of an n-layer conv feature encoder with wav2vec 2.0's 320-sample total stride."""
    if n_layers == len(WAV2VEC2_STRIDES):
        return WAV2VEC2_KERNELS, WAV2VEC2_STRIDES
    later_strides = [1] * (n_layers - 1)
    for k in range(6 if n_layers > 1 else 0):  # hand the six factors of 2 round-robin to layers 2..n
        later_strides[k % (n_layers - 1)] *= 2
    strides = (5, *later_strides)
    kernels = (10, *(2 * s if s > 1 else 3 for s in later_strides))
    return kernels, strides


def min_samples_for_one_frame(kernels, strides) -> int:
    """Shortest input (samples) from which the conv stack still produces one frame."""
    needed = 1
    for kernel, stride in zip(reversed(kernels), reversed(strides)):
        needed = (needed - 1) * stride + kernel
    return needed


def build_embedded(out_dir: str | Path, cfg: dict, seed: int) -> Path:
    """Build the randomly initialised embedded wav2vec 2.0 for `cfg` (= params `features.audio`), save to out_dir.

    Deterministic: the same cfg and seed give identical weights. The directory appears atomically.
    """
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    embedded = cfg["embedded"]
    hidden_size, num_heads = embedded["hidden_size"], embedded["num_heads"]
    if hidden_size % num_heads:
        raise ParamsError(
            "features.audio.embedded.num_heads",
            f"{num_heads} heads do not divide hidden_size={hidden_size}",
            "choose a number of heads that divides hidden_size",
        )
    kernels, strides = conv_geometry(len(embedded["conv_dim"]))
    # no SpecAugment parameters: this model is never trained
    config = Wav2Vec2Config(
        conv_dim=tuple(embedded["conv_dim"]),
        conv_kernel=kernels,
        conv_stride=strides,
        conv_bias=True,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,  # the "large-lv60" flavour: padding-safe
        hidden_size=hidden_size,
        num_hidden_layers=embedded["num_layers"],
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
        num_conv_pos_embedding_groups=int(np.gcd(16, hidden_size)),
        mask_time_prob=0.0,
        mask_feature_prob=0.0,
    )
    with seeded_init(seed):
        model = Wav2Vec2Model(config)
    feature_extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        feature_extractor.save_pretrained(tmp)
        write_encoder_info(
            tmp,
            architecture=ARCHITECTURE,
            seed=seed,
            details={**embedded, "conv_kernel": list(kernels), "conv_stride": list(strides)},
        )
    return out_dir


class Wav2Vec2AudioEncoder:
    """Encodes 16 kHz wav files with a wav2vec 2.0 directory (embedded or pretrained) into [B, D] vectors."""

    modality = "audio"
    length_unit = "samples"

    def __init__(self, model, feature_extractor, cfg: dict, device: torch.device, info: dict[str, Any]):
        self.model = model.eval().to(device)
        self.feature_extractor = feature_extractor
        self.device = device
        self.layer = cfg["layer"]
        self.sample_rate = int(feature_extractor.sampling_rate)
        self.max_samples = round(cfg["max_seconds"] * self.sample_rate)
        config = model.config
        self.min_samples = min_samples_for_one_frame(config.conv_kernel, config.conv_stride)
        self.pass_attention_mask = bool(feature_extractor.return_attention_mask)
        self.pretrained = bool(info["pretrained"])
        self.architecture = str(config.model_type)
        if self.layer == "conv":
            self.output_dim = int(config.conv_dim[-1])
            self.dim_source = "the last conv_dim of the model (features.audio.layer: conv)"
        else:
            self.output_dim = int(config.hidden_size)
            self.dim_source = "the model's hidden_size (features.audio.layer: transformer)"
        if config.feat_extract_norm == "group" and cfg["batch_size"] > 1:
            log.warning(
                "%s normalises its first conv layer over time (GroupNorm): batch padding slightly changes "
                "its features; set features.audio.batch_size: 1 for padding-free features",
                config.name_or_path,
            )

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, cfg: dict, device: torch.device) -> Wav2Vec2AudioEncoder:
        from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

        model_dir = require_model_dir(model_dir, "audio")
        model = Wav2Vec2Model.from_pretrained(model_dir, local_files_only=True)
        if (model_dir / "preprocessor_config.json").exists():
            feature_extractor = Wav2Vec2FeatureExtractor.from_pretrained(model_dir, local_files_only=True)
        else:
            log.warning("%s has no preprocessor_config.json; using wav2vec 2.0's defaults", model_dir)
            feature_extractor = Wav2Vec2FeatureExtractor(
                sampling_rate=SAMPLE_RATE,
                do_normalize=True,
                return_attention_mask=model.config.feat_extract_norm == "layer",
            )
        return cls(model, feature_extractor, cfg, device, read_encoder_info(model_dir))

    # -- reading ---------------------------------------------------------------------------------------

    def item_length(self, row: dict) -> int:
        return wav_length(Path(row["wav_path"]), self.sample_rate, self.max_samples, min_samples=1)

    def load_item(self, row: dict) -> np.ndarray:
        return read_wave(Path(row["wav_path"]), self.sample_rate, self.max_samples, self.min_samples)

    # -- encoding --------------------------------------------------------------------------------------

    def encode(self, waves: list[np.ndarray]) -> EncodedBatch:
        lengths = torch.tensor([len(wave) for wave in waves])
        # normalises each wave over its own samples
        batch = self.feature_extractor(
            waves,
            sampling_rate=self.sample_rate,
            padding=True,
            return_tensors="pt",
            return_attention_mask=True,
        )
        values = to_device(batch["input_values"], self.device)
        if self.layer == "conv":
            frames = self.model.feature_extractor(values).transpose(1, 2)  # [B, T, C]
            frames = self.model.feature_projection.layer_norm(frames)  # = Wav2Vec2Model's `extract_features`
        else:
            mask = to_device(batch["attention_mask"], self.device) if self.pass_attention_mask else None
            frames = self.model(values, attention_mask=mask).last_hidden_state
        frames = frames.float()
        n_valid = self.model._get_feat_extract_output_lengths(lengths).to(self.device)
        valid = torch.arange(frames.shape[1], device=self.device)[None, :] < n_valid[:, None]  # [B, T]
        weights = valid.unsqueeze(-1).to(frames.dtype)
        pooled = (frames * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return EncodedBatch(
            features=pooled, real_units=int(lengths.sum()), padded_units=int(lengths.max()) * len(waves)
        )
