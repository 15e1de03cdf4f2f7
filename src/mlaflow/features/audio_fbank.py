"""Audio features without a learned encoder: Kaldi log-mel filterbanks, pooled per utterance.

The MLA paper's audio-visual datasets (CREMA-D, after OGM-GE) feed the audio encoder a time-frequency
representation of the clip instead of wav2vec 2.0 features. mlaflow stores one vector per utterance, so the
filterbank frames are pooled: the mean and the standard deviation of every mel band over the utterance's
frames, concatenated, give a 2 * n_mels vector (256-d for 128 bands).

Filterbank settings are those commonly used with `torchaudio.compliance.kaldi.fbank` for audio
classification (as in AST): 25 ms Hanning windows every 10 ms, no dither (deterministic), HTK-compatible
output, no energy term. Values are raw log energies of the float waveform in [-1, 1] (not normalised); a
silent band gets log(float32 eps) = -15.94, so silence gives finite features.

`fbank_spectrogram` (`FbankSpectrogramEncoder`) keeps the frames instead: the clip's filterbank as a one-channel
"image" [1, T, n_mels] of `features.audio.spectrogram_frames` frames (cut, or zero-padded at the end, as the
released MLA code and AST do; 1024 frames of 128 bands there), stored flat (dim = T * n_mels, `input_shape` in the
store's attributes): the prepared input of the end-to-end ResNet-18 audio encoder (`train.encoder: resnet18`,
mlaflow.methods.resnet), computed once, not a learned feature.

The encoder follows the protocol of `mlaflow.features.protocol` and is chosen with
`features.audio.encoder: fbank`; `features.audio.n_mels` sets the number of bands, so
`features.audio.dim` must be 2 * n_mels. Its "model directory" holds only the filterbank settings
(config.json, written by `build_embedded`): there are no weights to train or load. Wav files are read by
`mlaflow.features.audio_io` (soundfile; torchaudio 2.9 reads files only through torchcodec), so this module
does not depend on the wav2vec 2.0 encoder's module (nor, through it, on transformers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchaudio.compliance import kaldi

from mlaflow.errors import ParamsError
from mlaflow.features.audio_io import read_wave, wav_length
from mlaflow.features.protocol import EncodedBatch, require_model_dir, write_encoder_info
from mlaflow.io import atomic_path

ARCHITECTURE = "fbank"
SPECTROGRAM = "fbank_spectrogram"
SAMPLE_RATE = 16_000  # CREMA-D's AudioWAV rate
N_MELS = 128
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0


def fbank_features(
    wave: np.ndarray,
    sample_rate: int,
    n_mels: int = N_MELS,
    frame_length_ms: float = FRAME_LENGTH_MS,
    frame_shift_ms: float = FRAME_SHIFT_MS,
) -> np.ndarray:
    """Log-mel filterbank frames [T, n_mels] (float32) of a mono float waveform.

    T = 1 + (len(wave) - window) // shift (Kaldi's snip_edges framing). Raises ValueError for a wave
    shorter than one window.
    """
    frames = _fbank(
        torch.as_tensor(np.asarray(wave, dtype=np.float32)),
        sample_rate,
        n_mels,
        frame_length_ms,
        frame_shift_ms,
    )
    return frames.numpy()


def pool_mean_std(frames: np.ndarray) -> np.ndarray:
    """Utterance vector [2 * n_mels]: per-band mean over frames, then per-band (population) std."""
    frames = np.asarray(frames, dtype=np.float32)
    return np.concatenate([frames.mean(axis=0), frames.std(axis=0)])


def utterance_fbank(wave: np.ndarray, sample_rate: int, n_mels: int = N_MELS) -> np.ndarray:
    """The stored feature of one utterance: pool_mean_std(fbank_features(...)), 2 * n_mels floats."""
    return pool_mean_std(fbank_features(wave, sample_rate, n_mels))


def window_samples(sample_rate: int, frame_length_ms: float = FRAME_LENGTH_MS) -> int:
    """Samples in one analysis window: the shortest wave that has a filterbank frame."""
    return int(sample_rate * frame_length_ms / 1000)


def _fbank(
    wave: torch.Tensor, sample_rate: int, n_mels: int, frame_length_ms: float, frame_shift_ms: float
) -> torch.Tensor:
    if wave.ndim != 1:
        raise ValueError(f"expected a mono waveform [samples], got shape {tuple(wave.shape)}")
    if len(wave) < window_samples(sample_rate, frame_length_ms):
        raise ValueError(
            f"{len(wave)} samples is shorter than one {frame_length_ms} ms window at {sample_rate} Hz"
        )
    return kaldi.fbank(
        wave.float().unsqueeze(0),
        sample_frequency=sample_rate,
        num_mel_bins=n_mels,
        frame_length=frame_length_ms,
        frame_shift=frame_shift_ms,
        window_type="hanning",
        htk_compat=True,
        use_energy=False,
        dither=0.0,
    )


# --------------------------------------------------------------------------------------------------------
# Encoder for mlaflow's extraction driver
# --------------------------------------------------------------------------------------------------------


def build_embedded(out_dir: str | Path, cfg: dict, seed: int) -> Path:
    """Write the filterbank settings (n_mels: params `features.audio.n_mels`; cfg = `features.audio`) as a
    "model directory".

    `seed` is recorded only: a filterbank has no weights. The directory appears atomically.
    """
    settings = {
        "architecture": SPECTROGRAM if cfg.get("encoder") == SPECTROGRAM else ARCHITECTURE,
        "sample_rate": SAMPLE_RATE,
        "n_mels": int(cfg["n_mels"]),
        "frame_length_ms": FRAME_LENGTH_MS,
        "frame_shift_ms": FRAME_SHIFT_MS,
    }
    if settings["architecture"] == SPECTROGRAM:
        settings["spectrogram_frames"] = int(cfg["spectrogram_frames"])
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        (tmp / "config.json").write_text(json.dumps(settings, indent=2) + "\n")
        write_encoder_info(tmp, architecture=settings["architecture"], seed=seed, details=settings)
    return out_dir


class FbankAudioEncoder:
    """Encodes wav files into [B, 2 * n_mels] pooled log-mel filterbank vectors."""

    modality = "audio"
    length_unit = "samples"
    architecture = ARCHITECTURE
    pretrained = False
    dim_source = "twice the directory's n_mels (mean and std of every mel band)"

    def __init__(self, settings: dict[str, Any], cfg: dict, device: torch.device):
        self.sample_rate = int(settings["sample_rate"])
        self.n_mels = int(settings["n_mels"])
        self.frame_length_ms = float(settings["frame_length_ms"])
        self.frame_shift_ms = float(settings["frame_shift_ms"])
        self.max_samples = round(cfg["max_seconds"] * self.sample_rate)
        self.min_samples = window_samples(self.sample_rate, self.frame_length_ms)
        self.output_dim = 2 * self.n_mels
        self.device = device

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, cfg: dict, device: torch.device) -> FbankAudioEncoder:
        model_dir = require_model_dir(model_dir, "audio")
        settings = json.loads((model_dir / "config.json").read_text())
        if settings.get("architecture") != cls.architecture:
            raise ParamsError(
                "features.audio.model",
                f"{model_dir} is not a {cls.architecture} directory written by mlaflow",
                "set it to `embedded` to have the filterbank settings written",
            )
        # the directory's settings make the features; a different n_mels in params would be silently ignored
        if int(settings["n_mels"]) != int(cfg["n_mels"]):
            raise ParamsError(
                "features.audio.n_mels",
                f"is {cfg['n_mels']} but the filterbank directory {model_dir} has {settings['n_mels']} bands",
                f"set it to {settings['n_mels']}, or rebuild the directory (model: embedded)",
            )
        return cls(settings, cfg, device)

    # -- reading ---------------------------------------------------------------------------------------

    def item_length(self, row: dict) -> int:
        return wav_length(Path(row["wav_path"]), self.sample_rate, self.max_samples, self.min_samples)

    def load_item(self, row: dict) -> np.ndarray:
        return read_wave(Path(row["wav_path"]), self.sample_rate, self.max_samples, self.min_samples)

    # -- encoding --------------------------------------------------------------------------------------

    def encode(self, waves: list[np.ndarray]) -> EncodedBatch:
        """One pooled filterbank vector per wave; each wave is framed on its own, so nothing is padded."""
        # float32 throughout: fp16 autocast (features.half_precision) would lose the small log energies
        with torch.autocast(self.device.type, enabled=False):
            vectors = []
            for wave in waves:
                frames = _fbank(
                    torch.from_numpy(wave).to(self.device),
                    self.sample_rate,
                    self.n_mels,
                    self.frame_length_ms,
                    self.frame_shift_ms,
                )
                vectors.append(torch.cat([frames.mean(dim=0), frames.std(dim=0, unbiased=False)]))
        n_samples = sum(len(wave) for wave in waves)
        return EncodedBatch(features=torch.stack(vectors), real_units=n_samples, padded_units=n_samples)


class FbankSpectrogramEncoder(FbankAudioEncoder):
    """Encodes wav files into [B, T * n_mels]: each clip's filterbank frames, cut or zero-padded to T frames
    (`spectrogram_frames`), flattened; `input_shape` [1, T, n_mels] says how to read them back."""

    architecture = SPECTROGRAM
    dim_source = "the directory's spectrogram_frames x n_mels (a one-channel filterbank image per clip)"

    def __init__(self, settings: dict[str, Any], cfg: dict, device: torch.device):
        super().__init__(settings, cfg, device)
        self.n_frames = int(settings["spectrogram_frames"])
        self.input_shape = (1, self.n_frames, self.n_mels)
        self.output_dim = self.n_frames * self.n_mels

    @classmethod
    def from_pretrained(
        cls, model_dir: str | Path, cfg: dict, device: torch.device
    ) -> FbankSpectrogramEncoder:
        encoder = super().from_pretrained(model_dir, cfg, device)
        if encoder.n_frames != int(cfg["spectrogram_frames"]):
            raise ParamsError(
                "features.audio.spectrogram_frames",
                f"is {cfg['spectrogram_frames']} but the directory {model_dir} has {encoder.n_frames}",
                f"set it to {encoder.n_frames}, or rebuild the directory (model: embedded)",
            )
        return encoder

    def encode(self, waves: list[np.ndarray]) -> EncodedBatch:
        """Each wave's frames [T, n_mels]: the first T, or all of them and zero rows after (as the reference)."""
        with torch.autocast(self.device.type, enabled=False):
            images = []
            for wave in waves:
                frames = _fbank(
                    torch.from_numpy(wave).to(self.device),
                    self.sample_rate,
                    self.n_mels,
                    self.frame_length_ms,
                    self.frame_shift_ms,
                )[: self.n_frames]
                images.append(torch.nn.functional.pad(frames, (0, 0, 0, self.n_frames - len(frames))))
        n_samples = sum(len(wave) for wave in waves)
        return EncodedBatch(
            features=torch.stack(images).flatten(1), real_units=n_samples, padded_units=n_samples
        )
