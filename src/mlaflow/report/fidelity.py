"""The fidelity section of the report: the paper's MLA against its released code's choices, one at a time and
all together; the optimism of selecting epochs on the test set; accuracy under both mask protocols.

Every difference is paired with the paper default (the main grid's MLA runs) on the same seed and fold, so
the folds' difficulty cancels: per seed, the mean over folds of (variant - paper), then mean +- std over seeds.
Three differences need no training of their own, because they act after training: per-batch and fixed fusion
(test-time rules, each with its own validation-selected epoch, from the curves every MLA run records) and
test-set selection (the best test epoch of the same runs).
"""
from __future__ import annotations

import pandas as pd

from mlaflow.params import PAPER_VARIANT, rate_key, same_as_paper, variant_params

KEYS = ["missing_rate", "seed", "fold"]
# differences measured on the paper runs' recorded curves: name -> (column of the run table, what it is)
MEASURED_ON_PAPER_RUNS = {
    "per_batch_fusion": ("fusion_per_batch_accuracy", "fusion: entropy per test batch (released) instead of per sample"),
    "fixed_fusion": ("fusion_fixed_accuracy", "fusion: fixed weights (released code without dynamic fusion)"),
    "test_set_selection": ("test_selected_accuracy", "model selection: best test epoch (released; optimistic)"),
}


def _mean_std_over_seeds(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per missing rate: mean over folds per seed, then mean and sample std over seeds."""
    per_seed = frame.groupby(["missing_rate", "seed"])[column].mean()
    grouped = per_seed.groupby(level="missing_rate")
    return pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1).fillna(0.0), "n_runs": frame.groupby("missing_rate").size()})


def _runs_of(runs: pd.DataFrame, params: dict, variant: str, method: str) -> pd.DataFrame:
    """A variant's runs of a method, with the paper runs standing in where they are the same (`same_as_paper`:
    those cells are not trained)."""
    own = runs[(runs["variant"] == variant) & (runs["method"] == method)]
    paper = runs[(runs["variant"] == PAPER_VARIANT) & (runs["method"] == method)]
    stand_in = paper[[same_as_paper(params, variant, r) for r in paper["missing_rate"]]]
    return pd.concat([own, stand_in.assign(variant=variant)], ignore_index=True)


def _describe(params: dict, variant: str) -> str:
    overrides = params["fidelity"]["variants"].get(variant)
    if overrides is None:
        return "masks: " + variant_params(params, variant)["masks"]["protocol"]
    return "; ".join(f"{k}: {v}" for section in overrides.values() for k, v in section.items())


def effects(runs: pd.DataFrame, params: dict) -> pd.DataFrame:
    """One row per (difference, missing rate): the variant's MLA accuracy and its difference to the paper's."""
    rates = params["fidelity"]["missing_rates"]
    paper = runs[(runs["variant"] == PAPER_VARIANT) & (runs["method"] == "mla") & runs["missing_rate"].isin(rates)]
    rows = []

    def add(name: str, what: str, variant_acc: pd.DataFrame, optimistic: bool) -> None:
        paired = paper[KEYS + ["accuracy"]].merge(variant_acc, on=KEYS, suffixes=("_paper", ""))
        paired["delta"] = paired["accuracy"] - paired["accuracy_paper"]
        acc, delta = _mean_std_over_seeds(paired, "accuracy"), _mean_std_over_seeds(paired, "delta")
        base = _mean_std_over_seeds(paired, "accuracy_paper")
        for rate in delta.index:
            rows.append({"difference": name, "what": what, "missing_rate": rate, "optimistic": optimistic,
                         "paper_accuracy_mean": base.loc[rate, "mean"],
                         "accuracy_mean": acc.loc[rate, "mean"], "accuracy_std": acc.loc[rate, "std"],
                         "delta_mean": delta.loc[rate, "mean"], "delta_std": delta.loc[rate, "std"],
                         "n_runs": int(delta.loc[rate, "n_runs"])})

    for variant in params["fidelity"]["variants"]:
        trained = _runs_of(runs, params, variant, "mla")
        optimistic = variant_params(params, variant)["train"]["model_selection"] == "test"
        add(variant, _describe(params, variant), trained[KEYS + ["accuracy"]], optimistic)
    masks_variant = [v for v in runs["variant"].unique() if v.startswith("masks_")]
    for variant in masks_variant:
        trained = _runs_of(runs, params, variant, "mla")
        trained = trained[trained["missing_rate"].isin(rates)]
        add(variant, _describe(params, variant), trained[KEYS + ["accuracy"]], False)
    for name, (column, what) in MEASURED_ON_PAPER_RUNS.items():
        add(name, what, paper[KEYS + [column]].rename(columns={column: "accuracy"}), name == "test_set_selection")
    return pd.DataFrame(rows)


def optimism(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method of the main grid and missing rate: best-test-epoch accuracy minus validation-selected."""
    main = runs[runs["variant"] == PAPER_VARIANT]
    frames = []
    for method, group in main.groupby("method", sort=False):
        table = _mean_std_over_seeds(group, "optimism").reset_index()
        table.insert(0, "method", method)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def by_protocol(runs: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Accuracy (mean +- std over seeds) per method, mask protocol and missing rate."""
    protocols = {PAPER_VARIANT: params["masks"]["protocol"]}
    protocols.update({v: variant_params(params, v)["masks"]["protocol"]
                      for v in runs["variant"].unique() if v.startswith("masks_")})
    frames = []
    for variant, protocol in protocols.items():
        for method in params["fidelity"]["protocol_methods"]:
            group = _runs_of(runs, params, variant, method)
            table = _mean_std_over_seeds(group, "accuracy").reset_index()
            table.insert(0, "protocol", protocol)
            table.insert(0, "method", method)
            frames.append(table)
    return pd.concat(frames, ignore_index=True)


def metrics(effect_table: pd.DataFrame, optimism_table: pd.DataFrame, protocol_table: pd.DataFrame) -> dict:
    """The fidelity figures as nested DVC metrics (no dots in keys)."""
    out: dict = {"fidelity": {}, "optimism": {}, "by_protocol": {}}
    for row in effect_table.itertuples():
        out["fidelity"].setdefault(row.difference, {})[rate_key(row.missing_rate)] = {
            "accuracy_mean": round(row.accuracy_mean, 6), "delta_mean": round(row.delta_mean, 6),
            "delta_std": round(row.delta_std, 6)}
    for row in optimism_table.itertuples():
        out["optimism"].setdefault(row.method, {})[rate_key(row.missing_rate)] = {
            "mean": round(row.mean, 6), "std": round(row.std, 6)}
    for row in protocol_table.itertuples():
        out["by_protocol"].setdefault(row.protocol, {}).setdefault(row.method, {})[rate_key(row.missing_rate)] = {
            "accuracy_mean": round(row.mean, 6), "accuracy_std": round(row.std, 6)}
    return out
