"""Deterministic generator of a small "embedded" corpus in the Kinetics-Sounds layout that
`mlaflow.data.kinetics.build_manifest` reads (class.txt, audio/{train,test}/<class>/<clip>.wav,
visual/{train_img,val_img}/Image-01-FPS/<class>/<clip>/000.png ...).

What it imitates is the layout, the split, the class count and which modality carries the label: on
Kinetics-Sounds the sound is the stronger modality (the paper's Table 1: audio-only models beat visual-only ones),
so the defaults give audio strength .8 and video .4. Its media are those of the IEMOCAP look-alike
(`mlaflow.data.synthetic`: a synthetic voice, a drawn face), one class profile per class (class k takes the k-th
profile of PROFILE_CODES, so at most len(PROFILE_CODES) classes): no activity is depicted or heard, the classes
only differ in the way the look-alikes' classes do. The class names are those of Kinetics-Sounds classes, and
mean nothing here.

Every clip has its own voice and face (drawn from its seed), a duration in [min_duration_s, max_duration_s]
independent of the class, and `frames_per_clip` frames. Clips: `train_clips_per_class` and `test_clips_per_class`
per class, named `<class>_<split>_<number>`. Determinism: every clip's content from
`default_rng([seed, clip_number, stream])` (streams 0 timing and voice/face identity, 1 audio, 2 video), its
number fixed by (class, split, position): the same seed gives byte-identical files, whatever the thread count.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from mlaflow.data import kinetics
from mlaflow.data.synthetic import (
    Utterance,
    _rng,
    _usable_cpus,
    draw_face_frames,
    make_speaker,
    synthesize_voice,
)
from mlaflow.errors import ParamsError
from mlaflow.io import atomic_path

PARAMS_KEY = "corpus.embedded_ks"
# Kinetics-Sounds class names (the embedded corpus takes the first `classes`), each drawn with the look-alike
# profile of the same position
CLASS_NAMES = kinetics.EMBEDDED_CLASSES
PROFILE_CODES = ("neu", "hap", "exc", "sad", "ang", "fru", "sur", "fea")
DEFAULTS = {
    "seed": 7,
    "classes": 6,
    "train_clips_per_class": 30,
    "test_clips_per_class": 10,
    "sample_rate": 16000,
    "min_duration_s": 1.5,
    "max_duration_s": 3.0,
    "frames_per_clip": 3,
    "image_size": 64,
    "modality_strength": {"audio": 0.8, "visual": 0.4},
}


def class_names(cfg: dict) -> list[str]:
    return kinetics.embedded_classes({"corpus": {"embedded_ks": cfg}})


def generate_corpus(out_root: Path, cfg: dict, threads: int | None = None) -> dict:
    """Write the embedded Kinetics-Sounds-like corpus under `out_root` (built in a temporary sibling, renamed onto
    it once complete). `cfg` is `params["corpus"]["embedded_ks"]` (keys as DEFAULTS, all required). Returns a
    summary (clips, per class and split, seconds)."""
    started = time.perf_counter()
    _check(cfg)
    clips = plan_corpus(cfg)
    names = class_names(cfg)
    with atomic_path(Path(out_root)) as tmp_root:
        tmp_root.mkdir()
        (tmp_root / kinetics.CLASS_FILE).write_text(",".join(names) + "\n")
        for audio_dir, visual_dir in kinetics.SPLITS.values():
            for name in names:
                (tmp_root / audio_dir / name).mkdir(parents=True)
                (tmp_root / visual_dir / name).mkdir(parents=True)
        with ThreadPoolExecutor(threads or min(2, _usable_cpus())) as pool:
            for job in [pool.submit(_write_clip, tmp_root, clip, cfg) for clip in clips]:
                job.result()
    return {
        "n_clips": len(clips),
        "per_class": {name: sum(c.label == name for c in clips) for name in names},
        "per_split": {split: sum(c.dialog == split for c in clips) for split in kinetics.SPLITS},
        "seconds": round(time.perf_counter() - started, 2),
    }


def plan_corpus(cfg: dict) -> list[Utterance]:
    """Every clip: `dialog` is its split, `label` its class name, `blend` its class's profile code."""
    lo, hi = cfg["min_duration_s"], cfg["max_duration_s"]
    per_split = {"train": cfg["train_clips_per_class"], "test": cfg["test_clips_per_class"]}
    stride = max(per_split.values())
    clips = []
    for k, name in enumerate(class_names(cfg)):
        for s, (split, count) in enumerate(per_split.items()):
            for position in range(count):
                number = (k * 2 + s) * stride + position
                rng = np.random.default_rng([cfg["seed"], number, 0])
                clips.append(
                    Utterance(
                        number=number,
                        session=s + 1,
                        dialog=split,
                        utterance_id=f"{name}_{split}_{position:04d}",
                        speaker=make_speaker(f"clip{number}", "FM"[int(rng.integers(2))], rng),
                        label=name,
                        blend=(PROFILE_CODES[k],),
                        start_s=0.0,
                        end_s=round(float(rng.uniform(lo, hi)), 4),
                    )
                )
    return clips


def _write_clip(root: Path, clip: Utterance, cfg: dict) -> None:
    audio_dir, visual_dir = kinetics.SPLITS[clip.dialog]
    strength = cfg["modality_strength"]
    audio = synthesize_voice(clip, strength["audio"], cfg, _rng(cfg, clip, "audio"))
    sf.write(
        root / audio_dir / clip.label / f"{clip.utterance_id}.wav",
        audio,
        cfg["sample_rate"],
        subtype="PCM_16",
    )
    frames_dir = root / visual_dir / clip.label / clip.utterance_id
    frames_dir.mkdir()
    face_cfg = {"image_size": cfg["image_size"], "frames_per_utterance": cfg["frames_per_clip"]}
    for index, frame in enumerate(
        draw_face_frames(clip, strength["visual"], face_cfg, _rng(cfg, clip, "visual"))
    ):
        Image.fromarray(frame).save(frames_dir / f"{index:03d}{kinetics.FRAME_SUFFIX}", compress_level=1)


def _check(cfg: dict) -> None:
    """ParamsError for a missing key or a value the generator or the adapter cannot work with."""
    missing = [key for key in DEFAULTS if key not in cfg]
    if missing:
        raise ParamsError(
            f"{PARAMS_KEY}.{missing[0]}", "is missing", f"set it (default: {DEFAULTS[missing[0]]!r})"
        )

    def fail(key: str, problem: str) -> None:
        raise ParamsError(f"{PARAMS_KEY}.{key}", f"is {cfg[key]!r}; {problem}")

    def count(key: str, low: int, high: int) -> None:
        value = cfg[key]
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not low <= value <= high:
            fail(key, f"must be an integer from {low} to {high}")

    count("seed", 0, 2**32 - 1)
    count("classes", 2, len(CLASS_NAMES))
    count("train_clips_per_class", 2, 100_000)
    count("test_clips_per_class", 1, 100_000)
    count("sample_rate", 8000, 192_000)
    count("frames_per_clip", 1, 64)
    count("image_size", 32, 1024)
    if not 0 < cfg["min_duration_s"] <= cfg["max_duration_s"]:
        fail("min_duration_s", f"must be positive and at most max_duration_s ({cfg['max_duration_s']!r})")
    strength = cfg["modality_strength"]
    if (
        not isinstance(strength, dict)
        or set(strength) != {"audio", "visual"}
        or not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in strength.values())
    ):
        fail("modality_strength", "must be {audio: number, visual: number}, each in [0, 1]")
