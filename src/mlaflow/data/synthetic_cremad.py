"""Deterministic generator of a small "embedded" corpus in the directory layout of the CREMA-D release.

Two modalities, audio and video, as the MLA paper's CREMA-D experiments use; the tree is what
`mlaflow.data.cremad.build_manifest` reads (the release's `AudioWAV/` plus extracted frames):

* `AudioWAV/<ActorID>_<Sentence>_<Emotion>_<Level>.wav`: 16-bit mono PCM, e.g. `1001_IEO_NEU_XX.wav`;
* `frames/<stem>/000.png, 001.png, ...`: `frames_per_clip` RGB frames of `image_size` x `image_size` pixels.

As on CREMA-D, every actor says every sentence with each of the 6 emotions (NEU HAP SAD FEA DIS ANG, the
adapter's classes `neu hap sad fea dis ang`), so there are `actors x sentences x 6` clips and the classes are
exactly balanced. Actor IDs are 1001, 1002, ..., alternately female and male (1001 F, 1002 M, 1003 F, ...).
The sentences are the first `sentences` codes of SENTENCES, the order of the CREMA-D README. Every file
name carries the same intensity code `level` (LO, MD, HI or XX); it changes nothing else.

The voice and the face are those of `mlaflow.data.synthetic` (`synthesize_voice`, `draw_face_frames`, with
its per-class profiles for the six codes), each scaled by `modality_strength` in [0, 1] (0: no label
information). The defaults make audio the dominant modality, as it is on CREMA-D. A clip's duration depends
on its sentence, its actor's tempo and a small jitter, never on the emotion, and always lies in
[min_duration_s, max_duration_s].

DEFAULTS (not filled in for missing keys: `cfg` must be complete) are seed 7, 10 actors, 4 sentences, level
XX, 16 kHz, 1.5-3.0 s, 3 frames of 64 x 64, strengths audio .8, visual .5: 240 clips (28 MB), written in
about 5 s on one (shared) core. With them, leave-one-speaker-group-out 6-class accuracies of simple
classifiers (5 speaker groups of 2 actors, as cremad.assign_speaker_groups deals them; chance 1/6 = 17%;
multinomial logistic regression, L2 1e-3, L-BFGS, on standardised features) were: audio 48% (mean and sd
over 32 ms frames of the log power spectrum in 64 bands; 45% with the mean alone), visual 35% (16x16 grey
pixels, averaged over the frames); with seed 8: audio 50%, visual 36%; on 20 actors x 12 sentences (1440
clips, more training data): audio 59%, visual 46%.

Determinism: actors (voice, face, tempo) and sentence lengths come from `default_rng(seed)`; every clip's
content from `default_rng([seed, clip_number, stream])` with streams 0 (timing jitter), 1 (audio) and
2 (video). The clip number is fixed by (actor rank, sentence position, emotion position) alone, so the same
seed gives byte-identical files (whatever the number of threads), adding actors or sentences leaves the
other clips' files unchanged, and changing the image size or the number of frames leaves the audio unchanged.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from mlaflow.data import cremad
from mlaflow.data.synthetic import (
    Speaker,
    Utterance,
    _rng,
    _usable_cpus,
    draw_face_frames,
    make_speaker,
    synthesize_voice,
)
from mlaflow.errors import ParamsError
from mlaflow.io import atomic_path

PARAMS_KEY = "corpus.embedded_cremad"

# The 12 sentence codes in the order of the CREMA-D README ("It's eleven o'clock", "That is exactly what
# happened", ...); `sentences: n` takes the first n.
SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
# Emotion codes in the adapter's class order (label_index 0..5).
EMOTIONS = tuple(cremad.LABEL_SETUPS["6class"])
FIRST_ACTOR = 1001

DEFAULTS = {
    "seed": 7,
    "actors": 10,
    "sentences": 4,
    "level": "XX",
    "sample_rate": 16000,
    "min_duration_s": 1.5,
    "max_duration_s": 3.0,
    "frames_per_clip": 3,
    "image_size": 64,
    "modality_strength": {"audio": 0.8, "visual": 0.5},
}

# Duration = min + (max - min) * position, the position in [0, 1] being the sentence's (uniform in
# SENTENCE_POSITION), plus the actor's tempo offset and the clip's jitter (normal, these sds), clipped to [0, 1].
SENTENCE_POSITION = (0.2, 0.8)
ACTOR_TEMPO_SD = 0.1
CLIP_JITTER_SD = 0.08
STREAMS = {"timing": 0}  # stream 1 (audio) and 2 (visual) are synthetic.MODALITY_STREAMS


def generate_corpus(out_root: Path, cfg: dict, threads: int | None = None) -> dict:
    """Write the embedded CREMA-D-like corpus under `out_root` (e.g. data/corpus/CREMA-D).

    `cfg` is `params["corpus"]["embedded_cremad"]` (keys as in DEFAULTS, all required). The tree is built in a
    temporary sibling directory and renamed onto `out_root` only once complete (an existing `out_root` is
    replaced; on error it is left as it was and no temporary remains). Clips are written by `threads` threads
    (default: up to 2, as many as this process may use), one actor at a time per thread; the output does not
    depend on it. Returns a summary: the number of clips, clips per class and per actor, and the seconds
    taken. Raises ParamsError for a value out of range.
    """
    started = time.perf_counter()
    _check(cfg)
    out_root = Path(out_root)
    clips = plan_corpus(cfg)
    actors = list(dict.fromkeys(clip.speaker.speaker_id for clip in clips))
    with atomic_path(out_root) as tmp_root:
        (tmp_root / cremad.AUDIO_DIR).mkdir(parents=True)
        (tmp_root / cremad.FRAMES_DIR).mkdir()
        with ThreadPoolExecutor(threads or min(2, _usable_cpus())) as pool:
            jobs = [
                pool.submit(_write_media, tmp_root, [c for c in clips if c.speaker.speaker_id == actor], cfg)
                for actor in actors
            ]
            try:
                for job in jobs:
                    job.result()  # re-raises a worker's error
            except BaseException:
                for job in jobs:
                    job.cancel()  # do not write the rest of a corpus that will be thrown away
                raise
    labels = [clip.label for clip in clips]
    return {
        "n_clips": len(clips),
        "per_label": {name: labels.count(name) for name in cremad.CLASS_NAMES["6class"]},
        "per_actor": {actor: sum(c.speaker.speaker_id == actor for c in clips) for actor in actors},
        "seconds": round(time.perf_counter() - started, 2),
    }


def plan_corpus(cfg: dict) -> list[Utterance]:
    """Every clip (as a synthetic.Utterance: number, actor, label, duration), by actor, sentence, emotion.

    `utterance_id` is the file stem, `dialog` the sentence code, `session` the actor's rank (1-based; the
    adapter's speaker groups are assigned when reading), `label` the lower-case emotion code.
    """
    rng = np.random.default_rng(cfg["seed"])
    sentence_position = rng.uniform(*SENTENCE_POSITION, len(SENTENCES))  # all 12: independent of `sentences`
    lo, hi = cfg["min_duration_s"], cfg["max_duration_s"]
    clips: list[Utterance] = []
    for rank in range(cfg["actors"]):
        actor = make_actor(rank, rng)
        tempo = rng.normal(0.0, ACTOR_TEMPO_SD)
        for s_index, sentence in enumerate(SENTENCES[: cfg["sentences"]]):
            for e_index, emotion in enumerate(EMOTIONS):
                number = (rank * len(SENTENCES) + s_index) * len(EMOTIONS) + e_index
                jitter = np.random.default_rng([cfg["seed"], number, STREAMS["timing"]]).normal(
                    0.0, CLIP_JITTER_SD
                )
                position = float(np.clip(sentence_position[s_index] + tempo + jitter, 0.0, 1.0))
                label = cremad.LABEL_SETUPS["6class"][emotion]
                clips.append(
                    Utterance(
                        number=number,
                        session=rank + 1,
                        dialog=sentence,
                        utterance_id=clip_stem(actor.speaker_id, sentence, emotion, cfg["level"]),
                        speaker=actor,
                        label=label,
                        blend=(label,),
                        start_s=0.0,
                        end_s=round(lo + (hi - lo) * position, 4),
                    )
                )
    return clips


def make_actor(rank: int, rng: np.random.Generator) -> Speaker:
    """Actor FIRST_ACTOR + rank: female for even ranks (1001, 1003, ...), male for odd ones."""
    return make_speaker(str(FIRST_ACTOR + rank), "FM"[rank % 2], rng)


def clip_stem(actor: str, sentence: str, emotion: str, level: str) -> str:
    """CREMA-D file stem, e.g. 1001_IEO_NEU_XX."""
    return f"{actor}_{sentence}_{emotion}_{level}"


def _write_media(root: Path, clips: list[Utterance], cfg: dict) -> None:
    """Write the wav file and the frames of each clip (one actor: a unit of parallel work)."""
    strength = cfg["modality_strength"]
    face_cfg = {"image_size": cfg["image_size"], "frames_per_utterance": cfg["frames_per_clip"]}
    for clip in clips:
        audio = synthesize_voice(clip, strength["audio"], cfg, _rng(cfg, clip, "audio"))
        sf.write(
            root / cremad.AUDIO_DIR / f"{clip.utterance_id}.wav", audio, cfg["sample_rate"], subtype="PCM_16"
        )
        frames_dir = root / cremad.FRAMES_DIR / clip.utterance_id
        frames_dir.mkdir()
        frames = draw_face_frames(clip, strength["visual"], face_cfg, _rng(cfg, clip, "visual"))
        for index, frame in enumerate(frames):
            Image.fromarray(frame).save(frames_dir / f"{index:03d}{cremad.FRAME_SUFFIX}", compress_level=1)


def _check(cfg: dict) -> None:
    """ParamsError for a missing key or a value the generator or the adapter cannot work with."""
    missing = [key for key in DEFAULTS if key not in cfg]
    if missing:
        raise ParamsError(
            f"{PARAMS_KEY}.{missing[0]}", "is missing", f"set it (default: {DEFAULTS[missing[0]]!r})"
        )

    def fail(key: str, problem: str) -> None:
        raise ParamsError(f"{PARAMS_KEY}.{key}", f"is {cfg[key]!r}; {problem}")

    if not _is_int(cfg["seed"]) or cfg["seed"] < 0:
        fail("seed", "must be a non-negative integer")
    if not _is_int(cfg["actors"]) or not 2 <= cfg["actors"] <= 9999 - FIRST_ACTOR + 1:
        fail("actors", f"must be an integer from 2 to {9999 - FIRST_ACTOR + 1} (4-digit actor IDs)")
    if not _is_int(cfg["sentences"]) or not 1 <= cfg["sentences"] <= len(SENTENCES):
        fail("sentences", f"must be an integer from 1 to {len(SENTENCES)}")
    if cfg["level"] not in cremad.LEVEL_CODES:
        fail("level", f"must be one of {', '.join(sorted(cremad.LEVEL_CODES))}")
    if not _is_int(cfg["sample_rate"]) or cfg["sample_rate"] < 8000:
        fail("sample_rate", "must be an integer of at least 8000 (Hz)")
    if not 0 < cfg["min_duration_s"] <= cfg["max_duration_s"]:
        fail("min_duration_s", f"must be positive and at most max_duration_s ({cfg['max_duration_s']!r})")
    if not _is_int(cfg["frames_per_clip"]) or cfg["frames_per_clip"] < 1:
        fail("frames_per_clip", "must be an integer of at least 1")
    if not _is_int(cfg["image_size"]) or cfg["image_size"] < 32:
        fail("image_size", "must be an integer of at least 32 (pixels)")
    strength = cfg["modality_strength"]
    if (
        not isinstance(strength, dict)
        or set(strength) != {"audio", "visual"}
        or not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in strength.values())
    ):
        fail("modality_strength", "must be {audio: number, visual: number}, each in [0, 1]")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
