"""The input files of a training or tuning job, read and checked once: the corpus (manifest and feature
stores), the folds and the masks, each against the others, before any training starts.

Both `mlaflow train` (mlaflow.train.job) and `mlaflow tune` (mlaflow.tune.study) read their inputs here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlaflow.data.masks import all_missing_forbidden_by, mask_missing_rate, read_mask
from mlaflow.errors import InputError
from mlaflow.keys import format_rate
from mlaflow.train.data import Corpus, load_corpus


@dataclass(frozen=True)
class JobFiles:
    """The files a job reads (its rule's inputs). `masks`: a training job's one mask file (its missing rate), a
    tuning job's one per tuning rate; `shift_masks`: the test-time shift's; `code`: the source files the job runs
    (the rule's code inputs), part of the key under which a job keeps its finished runs."""

    manifest: str
    features: list[str]
    folds: str
    masks: list[str]
    shift_masks: list[str] = field(default_factory=list)
    tuned: str | None = None
    code: list[str] = field(default_factory=list)

    def all(self) -> list[str]:
        tuned = [self.tuned] if self.tuned else []
        return [self.manifest, *self.features, self.folds, *self.masks, *self.shift_masks, *tuned, *self.code]


@dataclass
class JobInputs:
    """What a job computes from besides its config: the corpus, the folds table, and per mask file (keyed by its
    missing rate's label, "0.30") the mask of every seed the job trains [N, M]."""

    corpus: Corpus
    folds: pd.DataFrame
    masks: dict[str, dict[int, np.ndarray]]
    shift_masks: dict[str, dict[int, np.ndarray]]


def load_job_inputs(config: dict, files: JobFiles, seeds: list[int]) -> JobInputs:
    """Read the job's files (see JobFiles) for `seeds`; every disagreement between them is an InputError naming
    the file, before any training."""
    modalities = config["modalities"]
    if len(files.features) != len(modalities):
        raise InputError(
            None,
            f"expected one feature store per modality {modalities}, got {len(files.features)}",
            "pass --features once per modality, in the corpus's order",
        )
    corpus = load_corpus(
        files.manifest,
        dict(zip(modalities, files.features)),
        config["classes"],
        modalities,
        config["feature_dims"],
    )
    folds = pd.read_csv(files.folds, dtype={"utterance_id": str})
    if folds["utterance_id"].tolist() != corpus.utterance_ids:
        raise InputError(
            files.folds,
            "utterance ids differ from the manifest's",
            "regenerate folds after the manifest changed (snakemake --forcerun folds)",
        )
    spec = config["experiment"]["masks"]
    forbid = all_missing_forbidden_by(spec, config["masks"]["all_missing"])

    def read(paths: list[str]) -> dict[str, dict[int, np.ndarray]]:
        return {
            format_rate(mask_missing_rate(path)): {
                seed: read_mask(path, seed, corpus.utterance_ids, spec, forbid, modalities) for seed in seeds
            }
            for path in paths
        }

    return JobInputs(corpus, folds, read(files.masks), read(files.shift_masks))


def fingerprint(config: dict, files: JobFiles) -> str:
    """A key of everything a job computes from: its config, and the content of every file it reads and runs."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for path in files.all():
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def check_rates(found: dict, expected: list[str], what: str, where: str) -> None:
    """The mask files a job was given cover exactly the rates its config names."""
    if sorted(found) != sorted(expected):
        raise InputError(
            where,
            f"{what} masks of rates {sorted(found)} do not match the config's {sorted(expected)}",
            "fix the rule",
        )
