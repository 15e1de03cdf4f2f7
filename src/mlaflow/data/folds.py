"""Folds: leave one session out, validation taken from the training sessions.

Fold k tests on session k (IEMOCAP's sessions, CREMA-D's speaker groups, a feature table's `fold` column).
From the remaining sessions a stratified (by label), seeded `validation_fraction` is held out for model
selection; the test session is never looked at before the final evaluation. Two other cases:
- a manifest with a `split` column (a feature table's, or CREMA-D's split file) is one fold, run as given;
  without validation rows, validation is drawn from its training rows in the same way;
- a manifest without sessions (session 0 everywhere: a feature table with neither split nor fold) is dealt
  into max(folds) stratified, seeded groups first.
Every fold must train on every class of the corpus (a class without training rows would be trained on
nothing and tested all the same); a fold that does not is an error naming the fold, the classes and the
fix: an InputError naming the label table when the rows come from one (corpus kind features: its fold or
split column, or the rows the folds are drawn from), else a ParamsError naming `splits.folds` and the
manifest (a corpus's own sessions, which the user cannot move rows between).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlaflow.errors import InputError, ParamsError

ROLES = ("train", "val", "test")


def make_folds(
    manifest: pd.DataFrame,
    folds: list[int],
    validation_fraction: float,
    seed: int,
    classes: list[str],
    table: str | None = None,
    manifest_path: str = "the manifest",
) -> pd.DataFrame:
    """Return a frame with `utterance_id` and one column `fold<k>` per fold holding train/val/test.
    `classes`: the corpus's classes in label_index order, each of which every fold must train on; `table`: the
    label table the manifest was built from (corpus kind features), None for a corpus with sessions of its
    own; both it and `manifest_path` are only named in errors."""
    out = pd.DataFrame({"utterance_id": manifest["utterance_id"].to_numpy()})
    labels_all = manifest["label_index"].to_numpy()
    if "split" in manifest.columns and manifest["split"].notna().all():
        if list(folds) != [1]:
            raise ParamsError(
                "splits.folds",
                f"is {folds}, but the corpus gives one split (its split column)",
                "set splits.folds: [1]",
            )
        role = manifest["split"].to_numpy().astype(object)
        drawn_fraction = None if (role == "val").any() else validation_fraction
        if drawn_fraction is not None:
            _draw_validation(role, labels_all, validation_fraction, np.random.default_rng([seed, 1]))
        out["fold1"] = role
        origin = "table split" if table is not None else "split file"
        _every_class_trained(out, labels_all, classes, origin, table, manifest_path, drawn_fraction)
        return out
    session = manifest["session"].to_numpy()
    drawn = bool((session == 0).all())
    if drawn:
        session = stratified_groups(labels_all, max(folds), seed)
    sessions = set(np.unique(session))
    for fold in folds:
        if fold not in sessions:
            raise ParamsError(
                "splits.folds",
                f"fold {fold} tests on session {fold}, which the corpus lacks "
                f"(sessions: {sorted(int(x) for x in sessions)})",
                "list only sessions the corpus has",
            )
        rng = np.random.default_rng([seed, fold])
        role = np.where(session == fold, "test", "train").astype(object)
        _draw_validation(role, labels_all, validation_fraction, rng)
        out[f"fold{fold}"] = role
    origin = "session" if table is None else "table drawn" if drawn else "table fold"
    _every_class_trained(out, labels_all, classes, origin, table, manifest_path, validation_fraction)
    return out


# where a fold's rows come from -> (where a class's rows all are when it tests on all of them, the fix)
ORIGINS = {
    "table fold": (
        "in fold {k} of the fold column",
        "move rows of these classes into other folds of the table's fold column, or list other folds in "
        "splits.folds, or remove the classes from corpus.classes",
    ),
    "table drawn": (
        "in drawn fold {k}",
        "add rows of these classes to the table (a class needs two or more rows to train in every drawn "
        "fold), or give the table a fold or split column, or list other folds in splits.folds, or remove the "
        "classes from corpus.classes",
    ),
    "table split": (
        "in the test split",
        "give these classes more train rows in the table's split column, or remove them from corpus.classes",
    ),
    "split file": (
        "in the test split",
        "give these classes train rows in corpus.split_file, or choose a label setup without them "
        "(corpus.label_setup)",
    ),
    "session": (
        "in session {k}",
        "list only folds whose training sessions hold every class in splits.folds, or choose a label setup "
        "whose classes every training session holds (corpus.label_setup)",
    ),
}


def _every_class_trained(
    out: pd.DataFrame,
    labels: np.ndarray,
    classes: list[str],
    origin: str,
    table: str | None,
    manifest_path: str,
    drawn_fraction: float | None,
) -> None:
    """Raise if a fold of `out` trains on no row of some class of the corpus, naming every such fold at once:
    an InputError naming the label table when the rows come from one, else a ParamsError naming splits.folds.
    `drawn_fraction`: splits.validation_fraction where validation was drawn from the training rows, else None."""
    where, fix = ORIGINS[origin]
    rowless = [c for i, c in enumerate(classes) if not (labels == i).any()]
    if rowless:  # no fold can train on these: one statement, not one per fold
        problem = f"class(es) {rowless} of the corpus have no row at all, so no fold trains on them"
        if table is not None:
            raise InputError(
                table, problem, "add rows of them to the table, or remove them from corpus.classes"
            )
        raise ParamsError(
            "splits.folds",
            f"in the folds of {manifest_path}, {problem}",
            "choose a label setup without them (corpus.label_setup), or check the corpus",
        )
    problems, all_validation = [], False
    for column in [c for c in out.columns if c.startswith("fold")]:
        role, k = out[column].to_numpy(), int(column[len("fold") :])
        absent = [i for i in range(len(classes)) if not ((labels == i) & (role == "train")).any()]
        reasons = []
        for i in absent:
            n, n_val = int((labels == i).sum()), int(((labels == i) & (role == "val")).sum())
            if n_val:
                all_validation = True
                reasons.append(f"{classes[i]!r}: its {n_val} row(s) outside the test part are all validation")
            else:
                reasons.append(f"{classes[i]!r}: all {n} row(s) {where.format(k=k)}")
        if absent:
            problems.append(
                f"fold {k} trains on no row of class(es) {[classes[i] for i in absent]} "
                f"({'; '.join(reasons)})"
            )
    if not problems:
        return
    if all_validation and drawn_fraction is not None:
        fix = f"lower splits.validation_fraction (now {drawn_fraction}), or {fix}"
    if table is not None:
        raise InputError(table, "; ".join(problems), fix)
    raise ParamsError("splits.folds", f"in the folds of {manifest_path}, " + "; ".join(problems), fix)


def _draw_validation(role: np.ndarray, labels: np.ndarray, fraction: float, rng: np.random.Generator) -> None:
    """Turn a stratified (by label) `fraction` of the training rows into validation rows, in place."""
    train_idx = np.flatnonzero(role == "train")
    train_labels = labels[train_idx]
    for cls in np.unique(train_labels):  # stratified: the same share of every class goes to validation
        members = train_idx[train_labels == cls]
        n_val = round(fraction * len(members))
        role[rng.choice(members, size=n_val, replace=False)] = "val"


def stratified_groups(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Group 1..k of every row: each class's rows shuffled (seeded) and dealt round-robin, so every group holds
    about 1/k of every class."""
    if k < 2:
        raise ParamsError(
            "splits.folds",
            "drawing folds needs at least two (the largest fold number is the count)",
            "list folds up to 2 or more, e.g. [1, 2, 3, 4, 5]",
        )
    rng = np.random.default_rng([seed, 0])
    group = np.zeros(len(labels), dtype=int)
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        group[members] = np.arange(len(members)) % k + 1
    return group


def write_folds(config: dict, manifest_path, out) -> pd.DataFrame:
    """The folds job (`mlaflow folds`): its config holds params `splits`, the corpus's `classes` and the label
    `table` of corpus kind features (else None)."""
    from mlaflow.io import atomic_path

    manifest = pd.read_csv(manifest_path, dtype={"utterance_id": str})
    cfg = config["splits"]
    table = make_folds(
        manifest,
        cfg["folds"],
        cfg["validation_fraction"],
        cfg["seed"],
        config["classes"],
        config["table"],
        str(manifest_path),
    )
    with atomic_path(out, ".csv") as tmp:
        table.to_csv(tmp, index=False)
    return table


def fold_indices(folds_table: pd.DataFrame, fold: int) -> dict[str, np.ndarray]:
    """Row indices (into the manifest order) of each role of one fold."""
    column = folds_table[f"fold{fold}"].to_numpy()
    return {role: np.flatnonzero(column == role) for role in ROLES}
