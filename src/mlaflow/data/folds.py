"""Session-based folds: leave one session out, validation taken from the training sessions.

Fold k tests on session k. From the remaining sessions a stratified (by label), seeded `validation_fraction`
is held out for model selection; the test session is never looked at before the final evaluation.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from mlaflow.errors import ParamsError

ROLES = ("train", "val", "test")


def make_folds(manifest: pd.DataFrame, folds: list[int], validation_fraction: float, seed: int) -> pd.DataFrame:
    """Return a frame with `utterance_id` and one column `fold<k>` per fold holding train/val/test."""
    sessions = set(manifest["session"].unique())
    out = pd.DataFrame({"utterance_id": manifest["utterance_id"].to_numpy()})
    for fold in folds:
        if fold not in sessions:
            raise ParamsError("splits.folds", f"fold {fold} tests on session {fold}, which the corpus lacks "
                              f"(sessions: {sorted(sessions)})", "list only sessions the corpus has")
        rng = np.random.default_rng([seed, fold])
        role = np.where(manifest["session"].to_numpy() == fold, "test", "train").astype(object)
        train_idx = np.flatnonzero(role == "train")
        labels = manifest["label_index"].to_numpy()[train_idx]
        for cls in np.unique(labels):  # stratified: the same share of every class goes to validation
            members = train_idx[labels == cls]
            n_val = int(round(validation_fraction * len(members)))
            role[rng.choice(members, size=n_val, replace=False)] = "val"
        out[f"fold{fold}"] = role
    return out


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
