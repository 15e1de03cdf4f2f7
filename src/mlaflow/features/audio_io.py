"""Reading utterance wav files for the audio encoders (wav2vec 2.0 and filterbank).

Kept apart from the encoders so that an encoder needing only these (audio_fbank) does not import another
encoder's module (audio_wav2vec depends on transformers). Files are read with soundfile (torchaudio 2.9 reads
files only through torchcodec). Every problem with a file is an InputError naming it, so extraction skips
the utterance, goes on, and lists all bad files at the end.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import soundfile

from mlaflow.errors import InputError

REEXPORT_FIX = (
    "re-export it as 16 kHz mono PCM wav (e.g. `sox in.wav -r 16000 -c 1 out.wav`) or remove "
    "the utterance from the manifest"
)


def declared_wav_frames(path: Path) -> int | None:
    """The frame count a RIFF/WAVE header declares (its data chunk's size / block align), or None when the file
    is not a plain WAV or declares no size (streamed). libsndfile reports the frames actually present, so a file
    cut short mid-data reads "fine" with fewer samples: comparing the two catches it."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"fmt ":
                fmt = f.read(size)
                block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
                f.seek(size % 2, 1)
            elif name == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            else:
                f.seek(size + size % 2, 1)


def wav_length(path: Path, sample_rate: int, max_samples: int, min_samples: int) -> int:
    """Number of samples of a wav (after truncation to max_samples), from its header only; every problem an
    InputError naming the file (missing, not audio, wrong sample rate, shorter than min_samples)."""
    if not path.is_file():
        raise InputError(path, "wav file not found", "restore it or correct `wav_path` in the manifest")
    try:
        info = soundfile.info(str(path))
    except Exception as err:  # libsndfile: corrupt header, not audio (e.g. a git-lfs pointer file)
        raise InputError(path, f"cannot be read as audio ({err})", REEXPORT_FIX) from err
    if info.samplerate != sample_rate:
        raise InputError(
            path,
            f"sample rate is {info.samplerate} Hz, the encoder expects {sample_rate} Hz",
            f"resample it (e.g. `sox in.wav -r {sample_rate} out.wav`)",
        )
    if info.frames <= 0:
        raise InputError(path, "contains no audio samples", REEXPORT_FIX)
    declared = declared_wav_frames(path) if info.format == "WAV" else None
    if declared is not None and declared > info.frames:
        raise InputError(
            path,
            f"cut short: its header declares {declared} frames, the file holds {info.frames}",
            f"restore the whole file; {REEXPORT_FIX}",
        )
    if info.frames < min_samples:
        raise InputError(
            path,
            f"too short: {info.frames} samples, the encoder needs at least {min_samples}",
            "remove the utterance from the manifest",
        )
    return min(int(info.frames), max_samples)


def read_wave(path: Path, sample_rate: int, max_samples: int, min_samples: int) -> np.ndarray:
    """The utterance's waveform: float32 mono (channels averaged), truncated to max_samples, checked."""
    wav_length(path, sample_rate, max_samples, 1)
    try:
        samples, _ = soundfile.read(str(path), frames=max_samples, dtype="float32", always_2d=True)
    except Exception as err:  # a valid header followed by damaged data
        raise InputError(path, f"cannot be decoded ({err})", REEXPORT_FIX) from err
    wave = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if len(wave) < min_samples:
        raise InputError(
            path,
            f"too short: {len(wave)} samples, the encoder needs at least {min_samples}",
            "remove the utterance from the manifest",
        )
    if not np.isfinite(wave).all():
        raise InputError(path, "contains NaN or inf samples", REEXPORT_FIX)
    return np.ascontiguousarray(wave)
