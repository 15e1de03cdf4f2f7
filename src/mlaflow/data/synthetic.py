"""Deterministic generator of a small "embedded" corpus in the directory layout of the IEMOCAP release.

The real IEMOCAP corpus needs a licence, so mlaflow ships this generator: it writes audio, face frames,
transcripts and label files that `mlaflow.data.iemocap.build_manifest` reads exactly like the real release.
The workflow, tests and benchmarks therefore run end to end on any machine without downloads.

The three modalities carry the label to deliberately *unequal* degrees (the imbalance that MLA addresses),
each controlled by `modality_strength` in [0, 1] (0: no label information at all):

* text: transcripts are filler words mixed with cue words from a per-class lexicon. The share of cue words
  is proportional to the strength, and with probability (1 - strength) a cue word comes from a confusable
  class instead.
* audio: a harmonic voice whose pitch, intonation range, syllable rate, spectral tilt and breathiness depend
  on the class (as arousal does in real speech), shifted by speaker (gender) and drawn with overlap and noise.
  Waveforms are peak normalised to a random gain: loudness carries nothing (the feature extractor normalises
  each waveform anyway), pitch and spectral shape carry the cue.
* visual: a drawn face whose mouth curvature / opening, brow angle and eye opening depend on the class, with
  heavy expression jitter, random pose, brightness and pixel noise.

Class profiles are deltas from neutral and are scaled by the strength. With the default strengths
(text .8, audio .5, visual .25) and seed 7, leave-one-session-out 4-class accuracies of simple classifiers
were (majority class: 30%): text 83-85% (bag of words, logistic regression); audio 54-58% (mean log
spectrum, logistic regression), 53% (random-init wav2vec-like conv stack, mean pooled, + MLP); visual 45%
(16x16 grey pixels, logistic regression), 37% (random-init CNN, global average pooled, + MLP).

Determinism: the corpus plan (labels, speakers, timing) comes from `default_rng(seed)`; every utterance's
content from `default_rng([seed, utterance_number, modality])`, so the same seed gives byte-identical files
and changing e.g. the image size does not change the audio.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw

from mlaflow.io import atomic_path

# --------------------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------------------

# Share of utterances per IEMOCAP code. The 4-class part (neu, hap+exc, sad, ang) is 90% of the corpus with
# IEMOCAP-like proportions (neutral ~30%, hap+exc ~30%, sad ~20%, ang ~20% of it; exc is about twice hap as
# in the release). The remaining 10% are labels outside the 4-class setup, so that dropping them is
# exercised; fru is the largest of them so that the 6-class setup (which keeps fru) has a real sixth class.
LABEL_SHARES = {
    "neu": 0.27,
    "hap": 0.09,
    "exc": 0.18,
    "sad": 0.18,
    "ang": 0.18,
    "fru": 0.06,
    "xxx": 0.02,
    "sur": 0.01,
    "oth": 0.005,
    "fea": 0.0025,
    "dis": 0.0025,
}

# Names the categorical annotators use in EmoEvaluation files (`C-E1:\tNeutral;\t()`).
ANNOTATOR_NAMES = {
    "neu": "Neutral",
    "hap": "Happiness",
    "exc": "Excited",
    "sad": "Sadness",
    "ang": "Anger",
    "fru": "Frustration",
    "sur": "Surprise",
    "fea": "Fear",
    "dis": "Disgust",
    "oth": "Other",
}

# Typical (valence, activation, dominance) on IEMOCAP's 1-5 scale, for the dimensional annotator lines.
VAD_MEANS = {
    "neu": (3.0, 2.5, 2.5),
    "hap": (4.0, 3.0, 3.0),
    "exc": (4.0, 3.8, 3.3),
    "sad": (2.0, 2.2, 2.2),
    "ang": (1.8, 3.8, 3.8),
    "fru": (2.0, 3.2, 3.0),
    "sur": (3.5, 3.8, 2.8),
    "fea": (2.0, 3.5, 2.0),
    "dis": (1.8, 3.0, 3.2),
    "oth": (3.0, 3.0, 3.0),
}

# `xxx` means the annotators disagreed: such an utterance expresses a blend of two of these emotions.
BLEND_CODES = ("neu", "hap", "exc", "sad", "ang", "fru")

# --------------------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------------------

# Per-class cue words (disjoint lists: which class a word points to is never ambiguous by itself; the
# ambiguity comes from confusions, see CONFUSABLE).
CUE_WORDS = {
    "neu": (
        "okay",
        "fine",
        "sure",
        "alright",
        "usual",
        "normal",
        "maybe",
        "probably",
        "suppose",
        "anyway",
        "schedule",
        "meeting",
    ),
    "hap": (
        "glad",
        "nice",
        "pleased",
        "lovely",
        "happy",
        "smile",
        "enjoy",
        "cheerful",
        "sweet",
        "fun",
        "thanks",
        "cute",
    ),
    "exc": (
        "amazing",
        "wow",
        "awesome",
        "fantastic",
        "incredible",
        "thrilled",
        "wonderful",
        "finally",
        "celebrate",
        "brilliant",
        "perfect",
        "married",
    ),
    "sad": (
        "sorry",
        "miss",
        "lost",
        "lonely",
        "tired",
        "cry",
        "hurts",
        "gone",
        "alone",
        "sadly",
        "empty",
        "funeral",
    ),
    "ang": (
        "hate",
        "damn",
        "stupid",
        "shut",
        "ridiculous",
        "liar",
        "furious",
        "stop",
        "idiot",
        "sick",
        "enough",
        "dare",
    ),
    "fru": (
        "again",
        "ugh",
        "seriously",
        "useless",
        "annoying",
        "impossible",
        "hours",
        "forms",
        "line",
        "nobody",
        "waiting",
        "pointless",
    ),
    "sur": ("really", "whoa", "unbelievable", "suddenly", "shocked", "kidding", "surprise", "huh"),
    "fea": ("scared", "afraid", "terrified", "danger", "nervous", "worried", "hide", "panic"),
    "dis": ("gross", "disgusting", "yuck", "nasty", "awful", "sickening", "filthy", "revolting"),
    "oth": ("weird", "strange", "odd", "funny", "curious", "random", "whatever", "somehow"),
}

# Emotion-free words that pad every transcript; they make the cue words a minority, as in real speech.
FILLER_WORDS = (
    "i",
    "you",
    "the",
    "a",
    "to",
    "and",
    "it",
    "that",
    "we",
    "was",
    "is",
    "this",
    "just",
    "know",
    "have",
    "for",
    "do",
    "be",
    "so",
    "my",
    "me",
    "about",
    "think",
    "going",
    "here",
    "there",
    "can",
    "time",
    "mean",
    "like",
    "now",
    "all",
    "right",
    "well",
    "want",
    "get",
    "one",
    "people",
    "they",
    "but",
    "not",
    "with",
    "at",
    "thing",
    "on",
    "said",
    "see",
    "out",
    "if",
    "when",
    "would",
    "could",
    "them",
    "how",
    "day",
    "back",
    "home",
    "work",
    "he",
    "she",
    "her",
    "him",
    "told",
    "going",
    "car",
    "money",
    "job",
    "yesterday",
    "tomorrow",
)

# Which classes a cue word is mistaken for when the text is weak (neighbours in valence/arousal space).
CONFUSABLE = {
    "neu": ("sad", "hap", "oth"),
    "hap": ("exc", "neu"),
    "exc": ("hap", "sur"),
    "sad": ("neu", "fru"),
    "ang": ("fru", "dis"),
    "fru": ("ang", "sad"),
    "sur": ("exc", "fea"),
    "fea": ("sur", "sad"),
    "dis": ("ang", "fru"),
    "oth": ("neu",),
}

TEXT_WORDS_RANGE = (4, 12)  # words per transcript (inclusive)
TEXT_MAX_CUE_SHARE = 0.3  # share of cue words at strength 1 (scaled linearly by the strength)
TEXT_ENDINGS = (".", ".", ".", "?", "!")  # independent of the label: punctuation carries no cue

# --------------------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------------------

# Per-class voice profile at strength 1, as deltas from neutral:
# (pitch shift [semitones], intonation range [semitones], syllable rate [Hz], brightness, breathiness).
# High-arousal classes (ang, exc, hap, sur) are higher, livelier and brighter; sad is low, flat, slow, dark
# and breathy. Neighbouring classes differ in only some dimensions, so they overlap.
AUDIO_PROFILES = {
    "neu": (0.0, 0.0, 0.0, 0.0, 0.0),
    "hap": (2.0, 1.0, 0.5, 0.3, 0.0),
    "exc": (4.0, 2.0, 1.5, 0.5, 0.0),
    "sad": (-3.0, -1.2, -1.2, -0.6, 0.25),
    "ang": (3.0, 0.5, 1.5, 1.0, -0.05),
    "fru": (1.0, 0.3, 0.5, 0.6, 0.05),
    "sur": (5.0, 3.0, 0.5, 0.3, 0.0),
    "fea": (3.0, 1.0, 1.5, -0.2, 0.2),
    "dis": (-1.0, 0.0, -0.5, 0.3, 0.1),
    "oth": (0.5, 0.5, 0.0, 0.0, 0.0),
}
# Neutral voice and the per-utterance spread around the class profile (same order as the profiles). The
# spread does not shrink with the strength: a weak modality is one whose classes overlap more.
AUDIO_NEUTRAL = (0.0, 2.0, 4.0, 0.0, 0.12)
AUDIO_SPREAD = (2.0, 0.6, 0.6, 0.3, 0.05)
AUDIO_GAIN = 1.0  # class profile scale at strength 1
SPEAKER_F0_HZ = {"F": (205.0, 20.0), "M": (115.0, 12.0)}  # mean and between-speaker sd of the base pitch
FORMANTS_HZ = ((600.0, 90.0, 1.0), (1500.0, 150.0, 0.6), (2600.0, 250.0, 0.35))  # (centre, width, gain)
SNR_DB_RANGE = (10.0, 30.0)  # background noise
CONTROL_RATE_HZ = 200.0  # sampling rate of the slow pitch and loudness curves

# --------------------------------------------------------------------------------------------------------
# Visual
# --------------------------------------------------------------------------------------------------------

# Per-class expression at strength 1, as deltas from neutral:
# (mouth curvature [+ smile / - frown], mouth opening, brow angle [+ inner ends down / - raised], eye opening).
FACE_PROFILES = {
    "neu": (0.0, 0.0, 0.0, 0.0),
    "hap": (1.0, 0.3, 0.0, -0.1),
    "exc": (1.0, 0.9, -0.3, 0.5),
    "sad": (-1.0, 0.0, -1.0, -0.5),
    "ang": (-0.4, 0.3, 1.0, 0.3),
    "fru": (-0.5, 0.0, 0.7, -0.2),
    "sur": (0.0, 1.0, -1.0, 1.0),
    "fea": (-0.4, 0.6, -0.8, 0.9),
    "dis": (-0.8, 0.2, 0.6, -0.5),
    "oth": (0.2, 0.2, 0.2, 0.0),
}
FACE_SPREAD = 0.7  # per-utterance expression jitter (units of the profiles above)
FACE_GAIN = 5.5  # class profile scale at strength 1 (strong: pose and noise hide much of it)
FRAME_SPREAD = 0.15  # expression change between frames of one utterance
POSE_SHIFT = 0.07  # sd of the face centre offset, as a share of the image size
POSE_ROTATION_DEG = 10.0
VIDEO_SCALE = 2  # dialog videos show the faces at twice the frames' size: crops are cut, then resized down
PIXEL_NOISE = 14.0  # sd of the additive pixel noise (0-255 scale)

MODALITY_STREAMS = {"text": 0, "audio": 1, "visual": 2}  # third entry of each utterance's seed


@dataclass(frozen=True)
class Speaker:
    """One actor: two per session (F and M), with a voice and a face of their own."""

    speaker_id: str  # e.g. Ses01F
    f0_hz: float  # base pitch
    vocal_tract: float  # formant frequency scale
    skin_rgb: tuple[int, int, int]
    face_width: float  # face ellipse width / height


@dataclass(frozen=True)
class Utterance:
    """One planned utterance: where it goes and what it expresses."""

    number: int  # position in the corpus, seeds its content
    session: int
    dialog: str
    utterance_id: str
    speaker: Speaker
    label: str  # IEMOCAP code
    blend: tuple[str, ...]  # codes whose cues it carries (two for xxx, else the label itself)
    start_s: float
    end_s: float


def generate_corpus(out_root: Path, cfg: dict, threads: int | None = None) -> dict:
    """Write the embedded corpus under `out_root` (e.g. data/corpus/IEMOCAP_full_release).

    `cfg` is `params["corpus"]["embedded"]`. The tree is built in a temporary sibling directory and renamed
    onto `out_root` only once complete, so a killed run never leaves a complete-looking corpus (an existing
    `out_root` is replaced). Audio and frames are written by `threads` threads (default: up to 2, as many
    as this process may use; numpy, Pillow and soundfile release the GIL for the heavy work); the output
    does not depend on it. Returns a summary: utterance counts per label code and per session, the number
    of utterances, and the seconds taken.
    """
    started = time.perf_counter()
    out_root = Path(out_root)
    utterances = plan_corpus(cfg)
    with atomic_path(out_root) as tmp_root:
        tmp_root.mkdir()
        for session in sorted({u.session for u in utterances}):
            _write_session_texts(tmp_root, [u for u in utterances if u.session == session], cfg)
        dialogs = [
            [u for u in utterances if u.dialog == d] for d in dict.fromkeys(u.dialog for u in utterances)
        ]
        with ThreadPoolExecutor(threads or min(2, _usable_cpus())) as pool:
            jobs = [pool.submit(_write_media, tmp_root, dialog, cfg) for dialog in dialogs]
            try:
                for job in jobs:
                    job.result()  # re-raises a worker's error
            except BaseException:
                for job in jobs:
                    job.cancel()  # do not write the rest of a corpus that will be thrown away
                raise
    labels = [u.label for u in utterances]
    return {
        "n_utterances": len(utterances),
        "per_label": {code: labels.count(code) for code in LABEL_SHARES if code in labels},
        "per_session": {
            f"Session{s}": sum(u.session == s for u in utterances)
            for s in sorted({u.session for u in utterances})
        },
        "seconds": round(time.perf_counter() - started, 2),
    }


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _write_media(root: Path, utterances: list[Utterance], cfg: dict) -> None:
    """Write the wav file and the face frames of each utterance, and the dialog's video (one dialog: a unit of
    parallel work)."""
    strength = cfg["modality_strength"]
    drawn = {}
    for utt in utterances:
        session_dir = root / f"Session{utt.session}" / "sentences"
        wav_path = session_dir / "wav" / utt.dialog / f"{utt.utterance_id}.wav"
        wav_path.parent.mkdir(parents=True, exist_ok=True)
        audio = synthesize_voice(utt, strength["audio"], cfg, _rng(cfg, utt, "audio"))
        sf.write(wav_path, audio, cfg["sample_rate"], subtype="PCM_16")
        frames_dir = session_dir / "faces" / utt.dialog / utt.utterance_id
        frames_dir.mkdir(parents=True, exist_ok=True)
        frames = draw_face_frames(utt, strength["visual"], cfg, _rng(cfg, utt, "visual"))
        for index, frame in enumerate(frames):
            Image.fromarray(frame).save(frames_dir / f"{index:03d}.png", compress_level=1)
        drawn[utt.utterance_id] = frames
    write_dialog_video(root, utterances, drawn, cfg)


def _upscale(frame: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(frame).resize((size, size), Image.BILINEAR))


def write_dialog_video(root: Path, utterances: list[Utterance], drawn: dict, cfg: dict) -> None:
    """The dialog's video, as the release ships it: `SessionN/dialog/avi/DivX/<dialog>.avi`, both actors side by
    side, the actor the dialog is named after on the left (mlaflow.data.faces.SESSION_LAYOUT). During an
    utterance the speaker's half shows its drawn frames in turn (the same as its pre-cut frames), the other half
    the listener's neutral face; between utterances both are neutral. MPEG-4 part 2 (DivX's codec), through the
    FFmpeg inside OpenCV's wheel."""
    import cv2

    size, fps = VIDEO_SCALE * cfg["image_size"], cfg["video_fps"]
    half = size + size // 2  # the face in the middle of a wider background: the detector searches the half
    background = np.full((half, half, 3), 60, np.uint8)
    left_gender = utterances[0].dialog[5]
    speakers = {u.speaker.speaker_id[-1]: u.speaker for u in utterances}
    neutral = {}
    for gender, speaker in speakers.items():
        image = _draw_face(2 * size, speaker, np.zeros(4), (60, 60, 60), np.zeros(2), 1.0).reduce(2)
        neutral[gender] = np.asarray(image)
    scaled = {utt: [_upscale(frame, size) for frame in frames] for utt, frames in drawn.items()}

    def pasted(face: np.ndarray | None) -> np.ndarray:
        canvas = background.copy()
        if face is not None:
            offset = (half - size) // 2
            canvas[offset : offset + size, offset : offset + size] = face
        return canvas

    idle = {gender: pasted(neutral.get(gender)) for gender in "FM"}
    n_frames = int(np.ceil((max(u.end_s for u in utterances) + 1.0) * fps))
    path = (
        root / f"Session{utterances[0].session}" / "dialog" / "avi" / "DivX" / f"{utterances[0].dialog}.avi"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"DIVX"), fps, (2 * half, half))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write an MPEG-4 video at {path}")
    starts = np.array([u.start_s for u in utterances])
    try:
        for k in range(n_frames):
            t = (k + 0.5) / fps
            halves = dict(idle)
            turn = int(np.searchsorted(starts, t, side="right")) - 1
            if turn >= 0 and t < utterances[turn].end_s:
                utt = utterances[turn]
                frames = scaled[utt.utterance_id]
                shown = min(len(frames) - 1, int((t - utt.start_s) / (utt.end_s - utt.start_s) * len(frames)))
                halves[utt.speaker.speaker_id[-1]] = pasted(frames[shown])
            right_gender = "M" if left_gender == "F" else "F"
            frame = np.concatenate([halves[left_gender], halves[right_gender]], axis=1)
            writer.write(np.ascontiguousarray(frame[:, :, ::-1]))  # OpenCV takes BGR
    finally:
        writer.release()


# --------------------------------------------------------------------------------------------------------
# Corpus plan: speakers, dialogs, labels, timing
# --------------------------------------------------------------------------------------------------------


def plan_corpus(cfg: dict) -> list[Utterance]:
    """Decide every utterance (session, dialog, id, speaker, label, timing) from `default_rng(seed)`."""
    rng = np.random.default_rng(cfg["seed"])
    per_session = cfg["dialogs_per_session"] * cfg["utterances_per_dialog"]
    utterances: list[Utterance] = []
    for session in range(1, cfg["sessions"] + 1):
        speakers = {gender: make_speaker(f"Ses{session:02d}{gender}", gender, rng) for gender in "FM"}
        # exact quotas per session (not i.i.d. draws) keep every leave-one-session-out fold alike
        labels = rng.permutation(_quota_labels(per_session))
        for dialog_index in range(cfg["dialogs_per_session"]):
            dialog = dialog_name(session, dialog_index)
            turns = rng.random(cfg["utterances_per_dialog"]) < 0.5  # True: the female actor speaks
            durations = rng.uniform(
                cfg["min_duration_s"], cfg["max_duration_s"], cfg["utterances_per_dialog"]
            )
            gaps = rng.uniform(0.3, 2.0, cfg["utterances_per_dialog"])
            starts = rng.uniform(1.0, 5.0) + np.concatenate([[0.0], np.cumsum(durations + gaps)[:-1]])
            spoken = {"F": 0, "M": 0}
            for turn in range(cfg["utterances_per_dialog"]):
                gender = "F" if turns[turn] else "M"
                label = str(labels[dialog_index * cfg["utterances_per_dialog"] + turn])
                blend = (
                    tuple(map(str, rng.choice(BLEND_CODES, 2, replace=False))) if label == "xxx" else (label,)
                )
                utterances.append(
                    Utterance(
                        number=len(utterances),
                        session=session,
                        dialog=dialog,
                        utterance_id=f"{dialog}_{gender}{spoken[gender]:03d}",
                        speaker=speakers[gender],
                        label=label,
                        blend=blend,
                        start_s=round(float(starts[turn]), 4),
                        end_s=round(float(starts[turn] + durations[turn]), 4),
                    )
                )
                spoken[gender] += 1
    return utterances


def dialog_name(session: int, index: int) -> str:
    """IEMOCAP-style dialog name: pairs of F/M recordings of improvisations and script parts.

    0 -> Ses01F_impro01, 1 -> Ses01M_impro01, 2 -> Ses01F_script01_1, 3 -> Ses01M_script01_1,
    4 -> Ses01F_impro02, ..., 7 -> Ses01M_script01_2.
    """
    gender = "FM"[index % 2]
    pair = index // 2
    if pair % 2 == 0:
        kind = f"impro{pair // 2 + 1:02d}"
    else:
        script = pair // 2
        kind = f"script{script // 2 + 1:02d}_{script % 2 + 1}"
    return f"Ses{session:02d}{gender}_{kind}"


def _quota_labels(n: int) -> np.ndarray:
    """`n` label codes in the proportions of LABEL_SHARES (largest-remainder rounding)."""
    codes = list(LABEL_SHARES)
    shares = np.array([LABEL_SHARES[c] for c in codes]) / sum(LABEL_SHARES.values())
    counts = np.floor(shares * n).astype(int)
    remainders = shares * n - counts
    counts[np.argsort(-remainders, kind="stable")[: n - counts.sum()]] += 1
    return np.repeat(np.array(codes), counts)


def make_speaker(speaker_id: str, gender: str, rng: np.random.Generator) -> Speaker:
    """A speaker of `gender` (F or M) with a voice and a face drawn from `rng` (a fixed number of draws)."""
    f0_mean, f0_sd = SPEAKER_F0_HZ[gender]
    skin = np.array([200, 160, 130]) * rng.uniform(0.6, 1.1) + rng.normal(0, 8, 3)
    return Speaker(
        speaker_id=speaker_id,
        f0_hz=float(rng.normal(f0_mean, f0_sd)),
        vocal_tract=float(rng.normal(1.12 if gender == "F" else 1.0, 0.04)),
        skin_rgb=tuple(int(v) for v in np.clip(skin, 40, 255)),
        face_width=float(rng.uniform(0.68, 0.82)),
    )


def _rng(cfg: dict, utt: Utterance, modality: str) -> np.random.Generator:
    """Independent, order-free random stream for one modality of one utterance."""
    return np.random.default_rng([cfg["seed"], utt.number, MODALITY_STREAMS[modality]])


def _blend_profile(profiles: dict, blend: tuple[str, ...]) -> np.ndarray:
    return np.mean([profiles[code] for code in blend], axis=0)


# --------------------------------------------------------------------------------------------------------
# Text: transcripts and label files
# --------------------------------------------------------------------------------------------------------


def make_transcript(utt: Utterance, strength: float, rng: np.random.Generator) -> str:
    """Filler words mixed with cue words; cue share and correctness both grow with `strength`."""
    n_words = int(rng.integers(TEXT_WORDS_RANGE[0], TEXT_WORDS_RANGE[1] + 1))
    is_cue = rng.random(n_words) < TEXT_MAX_CUE_SHARE * strength
    words = []
    for cue in is_cue:
        if not cue:
            words.append(_pick(FILLER_WORDS, rng))
            continue
        code = _pick(utt.blend, rng)
        if rng.random() < 1.0 - strength:
            code = _pick(CONFUSABLE[code], rng)
        words.append(_pick(CUE_WORDS[code], rng))
    words = ["I" if w == "i" else w for w in words]
    return words[0][:1].upper() + " ".join(words)[1:] + _pick(TEXT_ENDINGS, rng)


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    """One element of a tuple of strings (rng.choice would first copy the tuple into an array)."""
    return options[int(rng.integers(len(options)))]


def _write_session_texts(root: Path, utterances: list[Utterance], cfg: dict) -> None:
    """Write the transcription and EmoEvaluation file of every dialog of one session."""
    session_dir = root / f"Session{utterances[0].session}" / "dialog"
    (session_dir / "transcriptions").mkdir(parents=True)
    (session_dir / "EmoEvaluation").mkdir(parents=True)
    for dialog in dict.fromkeys(u.dialog for u in utterances):
        in_dialog = [u for u in utterances if u.dialog == dialog]
        transcript_lines, label_blocks = [], ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n"]
        for utt in in_dialog:
            rng = _rng(cfg, utt, "text")
            text = make_transcript(utt, cfg["modality_strength"]["text"], rng)
            transcript_lines.append(f"{utt.utterance_id} [{utt.start_s:08.4f}-{utt.end_s:08.4f}]: {text}")
            label_blocks.append(_label_block(utt, rng))
            # the release also has lines that are not utterances; the adapter must skip them
            if rng.random() < 0.04:
                other = "M" if utt.speaker.speaker_id.endswith("F") else "F"
                gap_start = utt.end_s + 0.1
                transcript_lines.append(
                    f"{dialog}_{other}XX0 [{gap_start:08.4f}-{gap_start + 0.2:08.4f}]: [BREATHING]"
                )
            elif rng.random() < 0.03:
                transcript_lines.append(f"{utt.speaker.speaker_id[-1]}: [LAUGHTER]")
        (session_dir / "transcriptions" / f"{dialog}.txt").write_text("\n".join(transcript_lines) + "\n")
        (session_dir / "EmoEvaluation" / f"{dialog}.txt").write_text("".join(label_blocks))


def _label_block(utt: Utterance, rng: np.random.Generator) -> str:
    """One EmoEvaluation entry: the consensus line, three categorical and three dimensional annotators."""
    if utt.label == "xxx":  # no majority: every annotator says something else
        votes = [*utt.blend, _pick(tuple(c for c in BLEND_CODES if c not in utt.blend), rng)]
    else:  # majority for the label, the third annotator may dissent
        dissent = _pick(CONFUSABLE[utt.label], rng) if rng.random() < 0.4 else utt.label
        votes = [utt.label, utt.label, dissent]
    vad_mean = _blend_profile(VAD_MEANS, utt.blend)
    vad = np.clip(np.rint(vad_mean + rng.normal(0, 0.6, (3, 3))), 1, 5).astype(int)
    v, a, d = vad.mean(axis=0)
    lines = [
        f"[{utt.start_s:.4f} - {utt.end_s:.4f}]\t{utt.utterance_id}\t{utt.label}\t[{v:.4f}, {a:.4f}, {d:.4f}]"
    ]
    lines += [f"C-E{i + 1}:\t{ANNOTATOR_NAMES[code]};\t()" for i, code in enumerate(votes)]
    lines += [f"A-E{i + 1}:\tval {row[0]}; act {row[1]}; dom  {row[2]};\t()" for i, row in enumerate(vad)]
    return "\n" + "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------------------


def synthesize_voice(utt: Utterance, strength: float, cfg: dict, rng: np.random.Generator) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal whose prosody depends on the class (float32, mono).

    Source: band-limited pulse train (all harmonics below 0.45 * sample rate, equal amplitude) on a smooth,
    declining pitch contour; syllables: a raised-sine amplitude envelope; breath: envelope-shaped noise;
    vocal tract: spectral tilt and three formants applied in the frequency domain; then background noise.
    """
    sr = cfg["sample_rate"]
    n = int(round((utt.end_s - utt.start_s) * sr))  # noqa: RUF046 (numpy floats: keep the int)
    t = np.arange(n) / sr
    profile = _blend_profile(AUDIO_PROFILES, utt.blend)
    pitch_st, intonation_st, syllable_hz, brightness, breathiness = (
        np.array(AUDIO_NEUTRAL) + AUDIO_GAIN * strength * profile + rng.normal(0, AUDIO_SPREAD)
    )

    # Slow curves (pitch contour, syllable envelope) are computed at CONTROL_RATE_HZ and interpolated.
    t_control = np.arange(int(np.ceil(t[-1] * CONTROL_RATE_HZ)) + 2) / CONTROL_RATE_HZ
    # pitch contour: declination plus a smooth random melody (sum of slow sinusoids, unit variance)
    melody_hz = rng.uniform(0.5, 2.5, 3)
    melody = np.sin(2 * np.pi * melody_hz[:, None] * t_control + rng.uniform(0, 2 * np.pi, (3, 1))).sum(0)
    semitones = (
        pitch_st - 2.0 * t_control / max(t[-1], 1e-3) + max(intonation_st, 0.2) * melody / np.sqrt(1.5)
    )
    f0 = np.interp(t, t_control, np.clip(utt.speaker.f0_hz * 2.0 ** (semitones / 12.0), 60.0, 500.0))
    # phase wrapped to [0, 2 pi) in float64, then float32: the kernel below only changes sign per 2 pi turn
    # (numerator and denominator alike), and float32 sines are several times faster
    cycles = np.cumsum(f0 / sr) + rng.uniform(0, 1)
    phase = (2 * np.pi * (cycles - np.floor(cycles))).astype(np.float32)
    n_harmonics = max(1, int(0.45 * sr / f0.max()))
    half = np.sin(phase / 2)
    # Dirichlet kernel: sum_{k=1..K} cos(k * phase), evaluated in closed form
    safe = np.abs(half) > 1e-6
    source = (
        np.where(
            safe, np.sin((n_harmonics + 0.5) * phase) / (2 * np.where(safe, half, 1.0)) - 0.5, n_harmonics
        )
        / n_harmonics
    )

    # syllables: raised half-sines at the syllable rate, faded in and out at the utterance edges
    syllables = np.clip(
        np.sin(2 * np.pi * max(syllable_hz, 1.5) * t_control + rng.uniform(0, 2 * np.pi)), 0, None
    )
    fade = np.clip(np.minimum(t_control, t[-1] - t_control) / 0.02, 0.0, 1.0)
    envelope = np.interp(t, t_control, np.sqrt(syllables) * fade)
    breath = rng.standard_normal(n) * envelope * np.clip(breathiness, 0.01, 0.8)
    signal = source * envelope + breath

    # vocal tract: spectral tilt (brighter = flatter) and formants scaled by the speaker's tract length
    n_fft = _fast_fft_length(n)  # zero padding to a 5-smooth length: pocketfft is slow on large primes
    spectrum = np.fft.rfft(signal, n_fft)
    freqs = np.linspace(0.0, sr / 2, 257)  # the smooth response is computed coarsely and interpolated
    tilt = np.clip(1.6 - brightness, 0.3, 3.0)
    formants = 0.15 + sum(
        gain
        * np.exp(-0.5 * ((freqs - centre * utt.speaker.vocal_tract * rng.normal(1.0, 0.06)) / width) ** 2)
        for centre, width, gain in FORMANTS_HZ
    )
    response = np.interp(np.fft.rfftfreq(n_fft, 1 / sr), freqs, (1.0 + freqs / 300.0) ** -tilt * formants)
    voice = np.fft.irfft(spectrum * response, n_fft)[:n]

    snr_db = rng.uniform(*SNR_DB_RANGE)
    voice += rng.standard_normal(n) * voice.std() * 10 ** (-snr_db / 20)
    return (voice / np.abs(voice).max() * rng.uniform(0.3, 0.9)).astype(np.float32)


def _fast_fft_length(n: int) -> int:
    """Smallest length >= n whose only prime factors are 2, 3 and 5."""
    best = 1 << (n - 1).bit_length()
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            length = power35
            while length < n:
                length *= 2
            best = min(best, length)
            power35 *= 3
        power5 *= 5
    return best


# --------------------------------------------------------------------------------------------------------
# Visual
# --------------------------------------------------------------------------------------------------------


def draw_face_frames(
    utt: Utterance, strength: float, cfg: dict, rng: np.random.Generator
) -> list[np.ndarray]:
    """`frames_per_utterance` RGB uint8 images of a face whose expression weakly depends on the class.

    Drawn at twice the size and box-downsampled (anti-aliasing), then rotated; pose, brightness and noise
    vary per utterance, and slightly per frame.
    """
    size = cfg["image_size"]
    expression = FACE_GAIN * strength * _blend_profile(FACE_PROFILES, utt.blend) + rng.normal(
        0, FACE_SPREAD, 4
    )
    background = tuple(
        int(v) for v in rng.integers(20, 120, 3)
    )  # mostly darker than skin: a face outline a detector sees
    centre = rng.normal(0, POSE_SHIFT, 2)
    scale = float(np.exp(rng.normal(0, 0.08)))
    rotation = float(rng.normal(0, POSE_ROTATION_DEG))
    brightness = rng.uniform(0.65, 1.3)
    frames = []
    for _ in range(cfg["frames_per_utterance"]):
        frame_expression = expression + rng.normal(0, FRAME_SPREAD, 4)
        if rng.random() < 0.1:  # a blink
            frame_expression[3] = -3.0
        image = _draw_face(
            2 * size, utt.speaker, frame_expression, background, centre + rng.normal(0, 0.01, 2), scale
        )
        image = image.reduce(2).rotate(
            rotation + float(rng.normal(0, 1.5)), resample=Image.BILINEAR, fillcolor=background
        )
        pixels = np.asarray(image, dtype=np.float32) * brightness + rng.normal(
            0, PIXEL_NOISE, (size, size, 3)
        )
        frames.append(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    return frames


def _draw_face(
    size: int, speaker: Speaker, expression: np.ndarray, background: tuple, centre: np.ndarray, scale: float
) -> Image.Image:
    """Face ellipse, eyes, brows and mouth; `expression` = (mouth curve, mouth open, brow angle, eye open)."""
    mouth_curve, mouth_open, brow_angle, eye_open = (float(v) for v in expression)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    height = 0.78 * size * scale
    width = height * speaker.face_width
    cx, cy = size * (0.5 + centre[0]), size * (0.5 + centre[1])
    draw.ellipse([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2], fill=speaker.skin_rgb)
    dark = (30, 25, 25)

    eye_y, eye_dx, eye_r = cy - 0.1 * height, 0.2 * width, 0.08 * width
    eye_h = eye_r * float(np.clip(0.55 + 0.25 * eye_open, 0.08, 1.2))
    # shading a face detector keys on (class-free): eye sockets darker than the cheeks and the nose bridge
    shadow = tuple(int(0.6 * c) for c in speaker.skin_rgb)
    for side in (-1, 1):
        ex = cx + side * eye_dx
        draw.ellipse(
            [ex - 2.0 * eye_r, eye_y - 1.3 * eye_r, ex + 2.0 * eye_r, eye_y + 1.3 * eye_r], fill=shadow
        )
    nose_w = 0.05 * width
    draw.polygon(
        [
            (cx - nose_w, eye_y + eye_r),
            (cx - 1.8 * nose_w, cy + 0.1 * height),
            (cx + 1.8 * nose_w, cy + 0.1 * height),
        ],
        fill=shadow,
    )
    for side in (-1, 1):
        ex = cx + side * eye_dx
        draw.ellipse([ex - eye_r, eye_y - eye_h, ex + eye_r, eye_y + eye_h], fill=(245, 245, 245))
        pupil = min(eye_h, 0.5 * eye_r)
        draw.ellipse([ex - pupil, eye_y - pupil, ex + pupil, eye_y + pupil], fill=dark)
        # brow: inner end lowered by a positive angle (anger), raised by a negative one (sadness, surprise)
        brow_y = eye_y - 0.13 * height
        inner, outer = ex - side * 1.3 * eye_r, ex + side * 1.4 * eye_r
        draw.line(
            [inner, brow_y + 0.05 * height * brow_angle, outer, brow_y - 0.01 * height * brow_angle],
            fill=dark,
            width=max(1, int(0.025 * size)),
        )

    # mouth: upper lip curve and a lower lip curve below it by the opening; corners up for a smile
    mouth_y, half_w = cy + 0.22 * height, 0.2 * width
    xs = np.linspace(-1.0, 1.0, 9)
    upper = mouth_y + 0.07 * height * mouth_curve * (1 - xs**2)
    lower = upper + 0.012 * height + 0.08 * height * max(mouth_open, 0.0) * (1 - xs**2)
    outline = [(cx + half_w * x, y) for x, y in zip(xs, upper)] + [
        (cx + half_w * x, y) for x, y in zip(xs[::-1], lower[::-1])
    ]
    draw.polygon(outline, fill=(120, 30, 40), outline=dark)
    return image
