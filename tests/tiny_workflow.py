"""The tiny workflow (.test/tiny.yaml), shared by the integration tests (tests/test_workflow.py,
tests/test_dvc_workflow.py) and the real-SLURM test (tests/slurm): which repository items a copy of the
workflow needs, and the tiny config as a complete params.yaml."""

from __future__ import annotations

from pathlib import Path

import yaml

from mlaflow.pipeline import copy_workflow  # noqa: F401  (the tests import it from here)
from mlaflow.pipeline import params as P

TINY_CONFIG = Path(".test") / "tiny.yaml"


def tiny_params(repo: Path, seeds=None) -> dict:
    """.test/tiny.yaml with the schema's defaults filled in: a complete params.yaml (3 sessions x 2 dialogs x 12
    utterances, tiny encoders, 2 folds, missing rates 0.0 and 0.5, 2 epochs)."""
    params = yaml.safe_load((repo / TINY_CONFIG).read_text())
    if seeds is not None:
        params["train"]["seeds"] = list(seeds)
    return P.validate(params)


FEATURE_MODALITIES = {"speech": 12, "face": 8, "words": 16}  # .test/features.yaml: names and widths
FEATURE_CLASSES = [f"c{i}" for i in range(10)]


def write_feature_corpus(dest: Path, n: int = 300, seed: int = 0, folder: str = "own") -> None:
    """The user's own features of .test/features.yaml under dest/<folder> (own): one HDF5 store per modality (the
    README's schema, modality names of their own) and labels.csv (id, label, split), ten classes; each modality
    carries the label through a class mean, words most, face least."""
    import numpy as np
    import pandas as pd

    from mlaflow.features.store import FeatureStoreWriter

    own = Path(dest) / folder
    own.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(FEATURE_CLASSES), n)
    ids = [f"clip{i:04d}" for i in range(n)]
    split = np.array(["train"] * n, dtype=object)
    split[: n // 5], split[n // 5 : n // 5 + n // 10] = "test", "validation"
    names = [FEATURE_CLASSES[i] for i in labels]
    pd.DataFrame({"id": ids, "label": names, "split": split}).to_csv(own / "labels.csv", index=False)
    for strength, (modality, dim) in zip((1.0, 0.5, 2.0), FEATURE_MODALITIES.items()):
        centres = rng.standard_normal((len(FEATURE_CLASSES), dim))
        features = (strength * centres[labels] + rng.standard_normal((n, dim))).astype(np.float32)
        with FeatureStoreWriter(
            own / f"{modality}.h5",
            ids,
            names,
            dim,
            {
                "modality": modality,
                "encoder": "user",
                "model_source": "user features",
                "pretrained": True,
                "params_hash": "user",
            },
        ) as writer:
            writer.write(np.arange(n), features)
            writer.finish()
