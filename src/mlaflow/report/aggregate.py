"""The one aggregation of the report: per group, the mean over folds for each seed, then the mean and the
sample standard deviation over seeds (the paper's Table 2: three seeds, each the mean of its folds).

Every table, metrics file and plot of the report goes through `seed_stats`, so "mean ± std" means the same
thing everywhere. A paired difference (the fidelity section's variant minus paper on the same seed and fold) is
a column of differences given to the same function.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


def seed_stats(frame: pd.DataFrame, keys: Sequence[str], columns: str | Sequence[str]) -> pd.DataFrame:
    """One row per group of `keys` (at least one; in order of first appearance), with the keys as columns and, for each
    column c, `c_mean` and `c_std` (mean over seeds of the per-seed fold means; sample std, ddof=1, 0.0 with a
    single seed), `n_seeds` and `n_runs` (rows of the group). Given one column name as a string, the
    statistics are named plainly `mean` and `std`. NaN values (a run without that figure) are skipped."""
    keys = list(keys)
    single = isinstance(columns, str)
    cols = [columns] if single else list(columns)
    if frame.empty:
        names = [
            *keys,
            *(["mean", "std"] if single else [f"{c}_{s}" for c in cols for s in ("mean", "std")]),
            "n_seeds",
            "n_runs",
        ]
        return pd.DataFrame(columns=names)
    # sort=False: groups keep the order of the runs (the experiment table's order), which the tables show
    per_seed = frame.groupby([*keys, "seed"], sort=False)[cols].mean()
    grouped = per_seed.groupby(level=keys, sort=False)
    mean, std = grouped.mean(), grouped.std(ddof=1).fillna(0.0)  # std of one seed is NaN: report 0
    if single:
        out = pd.DataFrame({"mean": mean[columns], "std": std[columns]})
    else:
        out = mean.add_suffix("_mean").join(std.add_suffix("_std"))
        out = out[[f"{c}_{s}" for c in cols for s in ("mean", "std")]]
    out["n_seeds"] = grouped.size()
    out["n_runs"] = frame.groupby(keys, sort=False).size()
    return out.reset_index()
