"""Deterministic generator of a small "embedded" corpus in the MVSA layout that `mlaflow.data.mvsa.build_manifest`
reads (data/<id>.jpg, data/<id>.txt, labelResultAll.txt with one `text,image` pair per annotator).

What it imitates is the layout, the labelling and which modality carries the label: on MVSA the tweet's text
says the sentiment more reliably than its picture (the paper's Table 1: text 72-76%, image 27-55%). Each tweet
has a sentiment; its text conveys it with probability `modality_strength.text` (else a uniformly drawn one), its
picture with probability `modality_strength.image`. The annotators label what each conveys (each annotator
mistakes it with probability `annotator_noise`), so some tweets have a positive text and a negative picture:
the adapter drops them as inconsistent, as it does on the release, and with `annotators: 3` (MVSA-Multiple)
some have no majority.
- Picture (mlaflow.data.synthetic_food101.draw_picture): the dish helper with the sentiment's colour and shape
  (positive warm disc, neutral grey square, negative dark triangle) on a random background.
- Text: 6 to 10 words of a tweet, about a third of them sentiment words of the conveyed sentiment.
Determinism: tweet n's content from `default_rng([seed, n, stream])`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from mlaflow.data import mvsa
from mlaflow.data.synthetic_food101 import check_settings, draw_picture, pick_class, write_text
from mlaflow.io import atomic_path

PARAMS_KEY = "corpus.embedded_mvsa"
DEFAULTS = {
    "seed": 13,
    "tweets": 600,
    "annotators": 1,
    "annotator_noise": 0.05,
    "image_size": 64,
    "modality_strength": {"image": 0.3, "text": 0.8},
}
SENTIMENT_WORDS = {
    "positive": ("love", "great", "happy", "amazing", "beautiful", "wonderful", "best"),
    "neutral": ("today", "news", "meeting", "update", "street", "morning", "photo"),
    "negative": ("hate", "terrible", "sad", "awful", "angry", "worst", "broken"),
}
APPEARANCE = {
    "positive": ((240, 170, 60), "disc"),
    "neutral": ((150, 150, 150), "square"),
    "negative": ((40, 40, 90), "triangle"),
}
FILLER_WORDS = "the a at with my our this that just so is was on in rt via new day night people city".split()


def _annotate(rng: np.random.Generator, conveyed: int, cfg: dict) -> list[str]:
    """Each annotator's label of a modality that conveys sentiment `conveyed`."""
    n = len(mvsa.CLASS_NAMES)
    return [
        mvsa.CLASS_NAMES[pick_class(rng, conveyed, n, 1.0 - cfg["annotator_noise"])]
        for _ in range(cfg["annotators"])
    ]


def generate_corpus(out_root: Path, cfg: dict, threads: int | None = None) -> dict:
    """Write the embedded MVSA-like corpus under `out_root` (atomically). `cfg` is `params["corpus"]["embedded_mvsa"]`."""
    started = time.perf_counter()
    counts = {
        "seed": (0, 2**32 - 1),
        "tweets": (10, 1_000_000),
        "annotators": (1, 3),
        "image_size": (16, 1024),
    }
    check_settings(cfg, PARAMS_KEY, DEFAULTS, counts, {"image", "text"})
    if cfg["annotators"] == 2:
        from mlaflow.errors import ParamsError

        raise ParamsError(f"{PARAMS_KEY}.annotators", "is 2", "use 1 (MVSA-Single) or 3 (MVSA-Multiple)")
    n_classes = len(mvsa.CLASS_NAMES)
    strength = cfg["modality_strength"]
    header = "ID\t" + "\t".join(["text,image"] * cfg["annotators"])
    lines = [header]
    with atomic_path(Path(out_root)) as tmp_root:
        data = tmp_root / mvsa.DATA_DIR
        data.mkdir(parents=True)
        for number in range(1, cfg["tweets"] + 1):
            rng = np.random.default_rng([cfg["seed"], number, 0])
            sentiment = int(rng.integers(n_classes))
            text_sentiment = pick_class(rng, sentiment, n_classes, strength["text"])
            image_sentiment = pick_class(rng, sentiment, n_classes, strength["image"])
            colour, shape = APPEARANCE[mvsa.CLASS_NAMES[image_sentiment]]
            draw_picture(rng, colour, shape, cfg["image_size"]).save(data / f"{number}.jpg", quality=90)
            words = SENTIMENT_WORDS[mvsa.CLASS_NAMES[text_sentiment]]
            (data / f"{number}.txt").write_text(write_text(rng, words, FILLER_WORDS) + "\n", encoding="utf-8")
            pairs = zip(
                _annotate(rng, text_sentiment, cfg), _annotate(rng, image_sentiment, cfg), strict=True
            )
            lines.append(f"{number}\t" + "\t".join(f"{t},{i}" for t, i in pairs))
        (tmp_root / mvsa.LABEL_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"n_tweets": cfg["tweets"], "seconds": round(time.perf_counter() - started, 2)}
