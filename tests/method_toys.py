"""Toy data shared by the method tests (test_baselines, test_correlation, test_imputation, test_cpm_tate): a
separable three-modality problem, RunGroups of stacked runs over it, masks with every pattern of missing
modalities, and the optimiser settings the tests train with."""
from __future__ import annotations

import torch

from mlaflow.methods.base import RunGroup

DIMS = (3, 4, 5)  # audio, visual, text
N_CLASSES = 3
SGD = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}
ADAM = {"optimizer": "adam", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0}


def toy(n=60, seed=0):
    """Separable toy data: each modality carries the label (text most, visual least) plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, N_CLASSES, (n,), generator=g)
    strength = (1.5, 0.5, 3.0)
    features = [torch.randn(N_CLASSES, d, generator=g)[labels] * s + torch.randn(n, d, generator=g)
                for d, s in zip(DIMS, strength)]
    return features, labels


def group(features, labels, present, train_rows, seeds, standardize=False):
    """A RunGroup of len(seeds) runs; present [R, N, M]; train_rows: one row list per run (no val/test rows)."""
    splits = [{"train": rows, "val": rows[:0], "test": rows[:0]} for rows in train_rows]
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return RunGroup(features, labels, present, splits, generators, standardize=standardize), generators


def mask(n, rate, seed):
    """A random mask with some audio-only samples and some with nothing."""
    present = torch.rand(n, 3, generator=torch.Generator().manual_seed(seed)) > rate
    present[torch.arange(n) % 7 == 0] = torch.tensor([True, False, False])
    present[torch.arange(n) % 11 == 0] = False
    return present


def all_patterns(n):
    """Every one of the 8 presence patterns, cyclically (nothing, one, two, all three present)."""
    codes = torch.arange(n) % 8
    return torch.stack([(codes >> m) & 1 == 1 for m in range(3)], dim=1)
