"""Folds: leave one session out, validation taken from the training sessions.

Fold k tests on session k (IEMOCAP's sessions, CREMA-D's speaker groups, a feature table's `fold` column).
From the remaining sessions a stratified (by label), seeded `validation_fraction` is held out for model
selection; the test session is never looked at before the final evaluation. Two other cases:
- a manifest with a `split` column (a feature table's, or CREMA-D's split file) is one fold, run as given;
  without validation rows, validation is drawn from its training rows in the same way;
- a manifest without sessions (session 0 everywhere: a feature table with neither split nor fold) is dealt
  into max(folds) stratified, seeded groups first.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from mlaflow.errors import ParamsError

ROLES = ("train", "val", "test")


def make_folds(manifest: pd.DataFrame, folds: list[int], validation_fraction: float, seed: int) -> pd.DataFrame:
    """Return a frame with `utterance_id` and one column `fold<k>` per fold holding train/val/test."""
    out = pd.DataFrame({"utterance_id": manifest["utterance_id"].to_numpy()})
    labels_all = manifest["label_index"].to_numpy()
    if "split" in manifest.columns and manifest["split"].notna().all():
        if list(folds) != [1]:
            raise ParamsError("splits.folds", f"is {folds}, but the corpus gives one split (its split column)",
                              "set splits.folds: [1]")
        role = manifest["split"].to_numpy().astype(object)
        if not (role == "val").any():
            _draw_validation(role, labels_all, validation_fraction, np.random.default_rng([seed, 1]))
        out["fold1"] = role
        return out
    session = manifest["session"].to_numpy()
    if (session == 0).all():
        session = stratified_groups(labels_all, max(folds), seed)
    sessions = set(np.unique(session))
    for fold in folds:
        if fold not in sessions:
            raise ParamsError("splits.folds", f"fold {fold} tests on session {fold}, which the corpus lacks "
                              f"(sessions: {sorted(int(x) for x in sessions)})", "list only sessions the corpus has")
        rng = np.random.default_rng([seed, fold])
        role = np.where(session == fold, "test", "train").astype(object)
        _draw_validation(role, labels_all, validation_fraction, rng)
        out[f"fold{fold}"] = role
    return out


def _draw_validation(role: np.ndarray, labels: np.ndarray, fraction: float, rng: np.random.Generator) -> None:
    """Turn a stratified (by label) `fraction` of the training rows into validation rows, in place."""
    train_idx = np.flatnonzero(role == "train")
    train_labels = labels[train_idx]
    for cls in np.unique(train_labels):  # stratified: the same share of every class goes to validation
        members = train_idx[train_labels == cls]
        n_val = int(round(fraction * len(members)))
        role[rng.choice(members, size=n_val, replace=False)] = "val"


def stratified_groups(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Group 1..k of every row: each class's rows shuffled (seeded) and dealt round-robin, so every group holds
    about 1/k of every class."""
    if k < 2:
        raise ParamsError("splits.folds", "drawing folds needs at least two (the largest fold number is the count)",
                          "list folds up to 2 or more, e.g. [1, 2, 3, 4, 5]")
    rng = np.random.default_rng([seed, 0])
    group = np.zeros(len(labels), dtype=int)
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        group[members] = np.arange(len(members)) % k + 1
    return group


def write_folds(config: dict, manifest_path, out) -> pd.DataFrame:
    """The folds job (`mlaflow folds`): its config holds params `splits`."""
    from mlaflow.io import atomic_path

    manifest = pd.read_csv(manifest_path, dtype={"utterance_id": str})
    cfg = config["splits"]
    table = make_folds(manifest, cfg["folds"], cfg["validation_fraction"], cfg["seed"])
    with atomic_path(out, ".csv") as tmp:
        table.to_csv(tmp, index=False)
    return table


def fold_indices(folds_table: pd.DataFrame, fold: int) -> dict[str, np.ndarray]:
    """Row indices (into the manifest order) of each role of one fold."""
    column = folds_table[f"fold{fold}"].to_numpy()
    return {role: np.flatnonzero(column == role) for role in ROLES}
