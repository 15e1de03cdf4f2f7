"""The missing-modality sections of the report: the Table 2 analogue (every method of the main grid and of
`missing_suite` at every suite missing rate), the test-time shift table (train at one missing rate, test at
another) and the isolation analysis (Figure 2 analogue: one modality masked in a share of the training data,
the other modalities' unimodal test accuracy).

Every cell is mean +- std over seeds of the mean over folds, as everywhere in the report.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mlaflow.io import atomic_path
from mlaflow.params import ISOLATION_PREFIX, MODALITIES, PAPER_VARIANT, isolation_variants, rate_key

SHIFT_BASELINES = 2  # the test-time shift table shows MLA and this many of the strongest other methods


def _per_seed(frame: pd.DataFrame, keys: list[str], column: str) -> pd.DataFrame:
    """Per keys: mean over folds per seed, then mean, sample std over seeds and the number of runs."""
    per_seed = frame.groupby([*keys, "seed"], sort=False)[column].mean()
    grouped = per_seed.groupby(level=keys, sort=False)
    return pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1).fillna(0.0),
                         "n_runs": frame.groupby(keys, sort=False).size()}).reset_index()


def suite_methods(params: dict) -> list[str]:
    """Table 2's rows: MLA first, then the main grid's other methods, then the suite's."""
    main = [m for m in params["methods"] if m != "mla"]
    return ["mla", *dict.fromkeys([*main, *params["missing_suite"]["methods"]])]


def privilege(method: str, method_params: dict) -> str | None:
    """What a method sees that the others do not, under its current options (flagged in Table 2)."""
    options = method_params.get(method, {})
    if options.get("teacher_data") == "complete":
        return "its teacher is trained on complete training data (masked cells included)"
    if options.get("privileged") is True:
        return "its reconstruction targets and teacher see complete training data (masked cells included)"
    return None


def table2(runs: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Accuracy per (method, missing rate) over the suite's rates: columns method, missing_rate, mean, std, n_runs."""
    rates = params["missing_suite"]["missing_rates"]
    methods = suite_methods(params)
    chosen = runs[runs["method"].isin(methods) & runs["missing_rate"].isin(rates)]
    table = _per_seed(chosen, ["method", "missing_rate"], "accuracy")
    order = {m: i for i, m in enumerate(methods)}
    return table.sort_values(["method", "missing_rate"], key=lambda c: c.map(order) if c.name == "method" else c,
                             ignore_index=True)


def strongest(table: pd.DataFrame, n: int = SHIFT_BASELINES) -> list[str]:
    """MLA and the n other methods with the highest mean accuracy over the suite's missing rates."""
    mean = table.groupby("method")["mean"].mean().drop("mla", errors="ignore").sort_values(ascending=False)
    return ["mla", *mean.index[:n]]


def shift_table(runs: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Fused test accuracy per (method, train rate, test rate) from every run's test-time shift record."""
    columns = [c for c in runs.columns if c.startswith("shift_")]
    chosen = runs[runs["method"].isin(methods)]
    long = chosen.melt(id_vars=["method", "missing_rate", "seed", "fold"], value_vars=columns,
                       var_name="test_rate", value_name="shift_accuracy").dropna(subset=["shift_accuracy"])
    long["test_rate"] = long["test_rate"].str[len("shift_"):].astype(float)
    table = _per_seed(long.rename(columns={"missing_rate": "train_rate"}), ["method", "train_rate", "test_rate"],
                      "shift_accuracy")
    order = {m: i for i, m in enumerate(methods)}
    return table.sort_values(["method", "train_rate", "test_rate"],
                             key=lambda c: c.map(order) if c.name == "method" else c, ignore_index=True)


def isolation(all_runs: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Figure 2 analogue: per (method, masked modality, training missing share, other modality) the other
    modality's unimodal test accuracy. Share 0 is the main grid's complete-data run (the same runs)."""
    rows = []
    paper = all_runs[(all_runs["variant"] == PAPER_VARIANT) & (all_runs["missing_rate"] == 0.0)]
    for variant in isolation_variants(params):
        masked = variant[len(ISOLATION_PREFIX):]
        for method in params["isolation"]["methods"]:
            own = all_runs[(all_runs["variant"] == variant) & (all_runs["method"] == method)]
            frame = pd.concat([paper[paper["method"] == method], own], ignore_index=True)
            for other in (m for m in MODALITIES if m != masked):
                cell = _per_seed(frame, ["missing_rate"], f"{other}_accuracy")
                rows += [{"method": method, "masked_modality": masked, "modality": other, **r}
                         for r in cell.to_dict("records")]
    return pd.DataFrame(rows, columns=["method", "masked_modality", "modality", "missing_rate", "mean", "std", "n_runs"])


def metrics(table: pd.DataFrame) -> dict:
    """DVC metrics: accuracy mean and std per method and missing rate."""
    out: dict = {}
    for r in table.itertuples():
        out.setdefault(r.method, {})[rate_key(r.missing_rate)] = {
            "accuracy_mean": round(float(r.mean), 6), "accuracy_std": round(float(r.std), 6), "n_runs": int(r.n_runs)}
    return out


# -------------------------------------------------------------------------------------------- files


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path, ".csv") as tmp:
        frame.to_csv(tmp, index=False)


def write_files(table: pd.DataFrame, shift: pd.DataFrame, iso: pd.DataFrame | None, paper: dict, out_dir: Path) -> None:
    """DVC plots data (wide CSVs, percent) and figures of the three analyses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(table["method"]))
    wide = (100 * table.pivot(index="missing_rate", columns="method", values="mean")[methods]).round(4)
    for method in methods:
        if method in paper:
            wide[f"paper_{method}"] = [paper[method].get(r, float("nan")) for r in wide.index]
    _csv(wide.reset_index(), out_dir / "plots" / "missing_suite_accuracy.csv")
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    for i, method in enumerate(methods):
        group = table[table["method"] == method]
        ax.errorbar(group["missing_rate"], 100 * group["mean"], yerr=100 * group["std"], marker="o", capsize=2,
                    color=f"C{i % 10}", ls="-" if i < 10 else "--", lw=2.2 if method == "mla" else 1.2, label=method)
    ax.set_xlabel("missing rate (train = validation = test)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Missing-modality suite (Table 2 analogue; mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    _save(fig, out_dir / "figures" / "missing_suite_accuracy.png")

    shift_csv = shift.assign(accuracy=(100 * shift["mean"]).round(4))[["method", "train_rate", "test_rate", "accuracy"]]
    _csv(shift_csv, out_dir / "plots" / "test_time_shift.csv")

    if iso is None:
        return
    iso = iso.assign(series=iso["method"] + "_" + iso["modality"] + "_without_" + iso["masked_modality"])
    wide = (100 * iso.pivot(index="missing_rate", columns="series", values="mean")).round(4)
    _csv(wide.reset_index().rename(columns={"missing_rate": "training_missing_rate"}),
         out_dir / "plots" / "isolation.csv")
    panels = list(dict.fromkeys(iso["masked_modality"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.0), squeeze=False)
    for ax, masked in zip(axes[0], panels):
        part = iso[iso["masked_modality"] == masked]
        for i, method in enumerate(dict.fromkeys(part["method"])):
            for other, style in zip(dict.fromkeys(part["modality"]), ("-", "--")):
                g = part[(part["method"] == method) & (part["modality"] == other)]
                ax.errorbar(g["missing_rate"], 100 * g["mean"], yerr=100 * g["std"], marker="o", capsize=2, ls=style,
                            color=f"C{i}", label=f"{method}: {other}")
        ax.set_xlabel(f"share of training samples without {masked}")
        ax.set_ylabel("unimodal test accuracy (%)")
        ax.set_title(f"{masked} masked in training")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, out_dir / "figures" / "isolation.png")


# ------------------------------------------------------------------------------------------- markdown


def _pm(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def render(table: pd.DataFrame, shift: pd.DataFrame, iso: pd.DataFrame | None, paper: dict, params: dict) -> list[str]:
    rates = sorted(table["missing_rate"].unique())
    cell = table.set_index(["method", "missing_rate"])
    best = table.loc[table.groupby("missing_rate")["mean"].idxmax()].set_index("missing_rate")["method"]
    out = ["## Missing-modality suite (Table 2 analogue)", "",
           "Every method on the same masks, folds, seeds, features and training budget (`train` in params.yaml: "
           "epochs, batch size), at each missing rate of `missing_suite` (each modality of each sample missing with "
           "that probability, the same rate on train, validation and test). Bold: best at that rate. Below each row, "
           "the paper's IEMOCAP figure (Table 2). " + _optimisers(params), ""]
    rows, notes = [], []
    for method in dict.fromkeys(table["method"]):
        flag = privilege(method, params["method_params"])
        name = f"{method} †" if flag else method
        if flag:
            notes.append(f"† `{method}`: {flag}; the option in `method_params.{method}` removes the privilege.")
        rows.append([name] + [(lambda s: f"**{s}**" if best.get(r) == method else s)(
            _pm(cell.loc[(method, r), "mean"], cell.loc[(method, r), "std"])) if (method, r) in cell.index else "—"
            for r in rates])
        if method in paper:
            rows.append([f"{method} (paper)"] + [f"{paper[method][r]:.2f}" if r in paper[method] else "—" for r in rates])
    out += _table(["method"] + [f"{r:.1f}" for r in rates], rows)
    out += ["", *notes, "" if notes else "", claim_statement(table), "",
            "![missing-modality suite](figures/missing_suite_accuracy.png)", ""]

    methods = list(dict.fromkeys(shift["method"]))
    test_rates = sorted(shift["test_rate"].unique())
    out += ["### Test-time shift: train at one missing rate, test at another", "",
            f"MLA and the {len(methods) - 1} strongest other methods of the table above (mean over its rates). "
            "Rows: missing rate of training and validation; columns: missing rate of the test masks (same seed). "
            "The diagonal is the ordinary test accuracy.", ""]
    shift_cell = shift.set_index(["method", "train_rate", "test_rate"])
    for method in methods:
        train_rates = sorted(shift[shift["method"] == method]["train_rate"].unique())
        out += [f"**{method}**", ""]
        out += _table(["train \\ test"] + [f"{r:.1f}" for r in test_rates],
                      [[f"{t:.1f}"] + [f"{100 * shift_cell.loc[(method, t, r), 'mean']:.1f}"
                                       if (method, t, r) in shift_cell.index else "—" for r in test_rates]
                       for t in train_rates])
        out += [""]

    if iso is not None:
        out += ["## Isolation of modalities (Figure 2 analogue)", "",
                "One modality masked in a growing share of the **training** samples only (validation and test "
                "complete); each other modality's unimodal test accuracy. If training isolates the modalities, "
                "the curves stay flat. Share 0.0 is the main grid's complete-data runs.", ""]
        shares = sorted(iso["missing_rate"].unique())
        icell = iso.set_index(["method", "masked_modality", "modality", "missing_rate"])
        rows = []
        for (method, masked, other) in dict.fromkeys(zip(iso["method"], iso["masked_modality"], iso["modality"])):
            values = [icell.loc[(method, masked, other, s)] for s in shares]
            change = 100 * (values[-1]["mean"] - values[0]["mean"])
            rows.append([method, masked, other, *[_pm(v["mean"], v["std"]) for v in values], f"{change:+.1f}"])
        out += _table(["method", "masked in training", "tested modality", *[f"{s:.1f}" for s in shares],
                       f"change {shares[0]:.1f}→{shares[-1]:.1f} (points)"], rows)
        out += ["", isolation_statement(iso), "", "![isolation](figures/isolation.png)", ""]
    return out


def _optimisers(params: dict) -> str:
    """Which methods train with their reference's optimiser rather than `train`'s (train.method_optimizers)."""
    own = params["train"]["method_optimizers"]
    default = f"{params['train']['optimizer']} at lr {params['train']['lr']:g}"
    if not own:
        return f"Optimiser: {default} for every method."
    groups: dict[str, list[str]] = {}
    for method, cfg in own.items():
        recipe = f"{cfg.get('optimizer', params['train']['optimizer'])} at lr {cfg.get('lr', params['train']['lr']):g}"
        groups.setdefault(recipe, []).append(f"`{method}`")
    return (f"Optimiser: {default}, except (their reference's recipe, `train.method_optimizers`) "
            + "; ".join(f"{recipe} for {', '.join(names)}" for recipe, names in groups.items()) + ".")


def isolation_statement(iso: pd.DataFrame) -> str:
    """Computed: per method, the mean absolute change of the other modalities' accuracy between the smallest and
    the largest share, against the seed-to-seed spread (mean std) of those accuracies."""
    lo, hi = iso["missing_rate"].min(), iso["missing_rate"].max()
    parts, moved = [], []
    for method, part in iso.groupby("method", sort=False):
        ends = part[part["missing_rate"].isin([lo, hi])]
        a = ends[ends["missing_rate"] == lo].set_index(["masked_modality", "modality"])
        b = ends[ends["missing_rate"] == hi].set_index(["masked_modality", "modality"])
        change = 100 * float((b["mean"] - a["mean"]).abs().mean())
        spread = 100 * float(ends["std"].mean())
        parts.append(f"`{method}` {change:.1f} points (seed spread {spread:.1f})")
        if change > 2 * spread:
            moved.append(method)
    verdict = ("The other modalities' accuracy moves by more than twice the seed spread under "
               + ", ".join(f"**{m}**" for m in moved) + ": masking one modality in training affects the others there."
               if moved else "No method's curves move by more than twice the seed spread: on this corpus, masking one "
                             "modality in training leaves the others' accuracy unchanged under every method shown.")
    return (f"Mean absolute change of the other modalities' unimodal accuracy from share {lo:.1f} to {hi:.1f}: "
            + ", ".join(parts) + ". " + verdict)


def claim_statement(table: pd.DataFrame) -> str:
    """Computed: at how many missing rates MLA's mean accuracy is the best of the table (the paper's Table 2
    claim), and where it is not, by how much it trails the best method against their seed spreads."""
    rates = sorted(table["missing_rate"].unique())
    cell = table.set_index(["method", "missing_rate"])
    wins, behind = 0, []
    for r in rates:
        others = table[(table["missing_rate"] == r) & (table["method"] != "mla")]
        best = others.loc[others["mean"].idxmax()]
        mla = cell.loc[("mla", r)]
        if mla["mean"] >= best["mean"]:
            wins += 1
            continue
        gap = 100 * (best["mean"] - mla["mean"])
        within = gap <= 100 * (best["std"] + mla["std"])
        behind.append(f"{r:.1f} (`{best['method']}` +{gap:.2f} points, "
                      + ("within" if within else "beyond") + " the two seed spreads)")
    out = f"Paper's claim (MLA best at every missing rate) on this corpus: MLA is best at {wins} of {len(rates)} rates"
    return out + (f"; behind at {', '.join(behind)}." if behind else ".")
