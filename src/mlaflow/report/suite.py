"""The missing-modality sections of the report: the Table 2 analogue (every method of the main grid and of
`missing_suite` at every suite missing rate) with the paper's claim checked on it, the test-time shift table
(train at one missing rate, test at another) and the isolation analysis (Figure 2 analogue: one modality masked
in a share of the training data, the other modalities' unimodal test accuracy).

Every cell is mean ± std over seeds of the mean over folds (`mlaflow.report.aggregate.seed_stats`).
"""

from __future__ import annotations

import pandas as pd

from mlaflow.io import write_json
from mlaflow.keys import config_hash, rate_key
from mlaflow.methods import method_class, method_options
from mlaflow.pipeline.experiments import Experiment, not_applicable
from mlaflow.report import catalog, plots
from mlaflow.report import markdown as md
from mlaflow.report.aggregate import seed_stats
from mlaflow.report.context import ReportContext

SHIFT_BASELINES = 2  # the test-time shift table shows MLA and this many of the strongest other methods


def _ordered(table: pd.DataFrame, methods: list[str], by: list[str]) -> pd.DataFrame:
    order = {m: i for i, m in enumerate(methods)}
    return table.sort_values(by, key=lambda c: c.map(order) if c.name == "method" else c, ignore_index=True)


# ------------------------------------------------------------------------------------------- Table 2


def suite_methods(main_methods: list[str], suite: list[str]) -> list[str]:
    """Table 2's rows: MLA first, then the main grid's other methods, then the suite's."""
    rows = list(dict.fromkeys([*main_methods, *suite]))
    return (["mla"] if "mla" in rows else []) + [m for m in rows if m != "mla"]


def privilege(method: str, method_params: dict) -> str | None:
    """What a method sees that the others do not, under its current options (flagged in Table 2), as its class
    says (`privilege`)."""
    return method_class(method).privilege(method_options(method_params, method))


def table2(runs: pd.DataFrame, methods: list[str], rates: list[float]) -> pd.DataFrame:
    """Accuracy per (method, missing rate) over the suite's rates: columns method, missing_rate, mean, std,
    n_seeds, n_runs; methods in the given order."""
    chosen = runs[runs["method"].isin(methods) & runs["missing_rate"].isin(rates)]
    return _ordered(
        seed_stats(chosen, ["method", "missing_rate"], "accuracy"), methods, ["method", "missing_rate"]
    )


COLLAPSE_MARGIN = 0.02  # within 2 points of always predicting the prior class: a collapsed method


def collapse_statement(runs: pd.DataFrame, methods: list[str], rates: list[float]) -> str:
    """A sentence naming the methods whose mean accuracy is within COLLAPSE_MARGIN of the prior-class
    predictor's (the training majority class, on the same test rows) at every rate: they learnt nothing the
    class balance does not give, and their rows do not measure the method."""
    chosen = runs[runs["method"].isin(methods) & runs["missing_rate"].isin(rates)]
    if chosen.empty or chosen["prior_accuracy"].isna().all():
        return ""
    by_cell = chosen.groupby(["method", "missing_rate"])[["accuracy", "prior_accuracy"]].mean()
    above = (by_cell["accuracy"] - by_cell["prior_accuracy"]).groupby(level="method").max()
    collapsed = [m for m in methods if m in above.index and above[m] <= COLLAPSE_MARGIN]
    level = 100 * chosen["prior_accuracy"].mean()
    if not collapsed:
        return (
            f"No method sits at the prior-class level (always predicting the training majority class: "
            f"{level:.2f}% on these test sets) at every rate: every row measures something learnt."
        )
    return (
        f"**At the prior-class level** (within {100 * COLLAPSE_MARGIN:.0f} points of always predicting the "
        f"training majority class, {level:.2f}%, at every rate): {', '.join(f'`{m}`' for m in collapsed)}. "
        "Their rows show a collapsed baseline, not what the method can do here."
    )


def strongest(table: pd.DataFrame, n: int = SHIFT_BASELINES) -> list[str]:
    """MLA (if in the table) and the n other methods with the highest mean accuracy over the suite's rates."""
    mean = table.groupby("method")["mean"].mean()
    others = mean.drop("mla", errors="ignore").sort_values(ascending=False)
    return (["mla"] if "mla" in mean.index else []) + list(others.index[:n])


def claim_statement(table: pd.DataFrame) -> str:
    """Computed: at how many missing rates MLA's mean accuracy is the best of the table (the paper's Table 2
    claim), and where it is not, by how much it trails the best method against their seed spreads."""
    cell = table.set_index(["method", "missing_rate"])
    rates = sorted(table[table["method"] == "mla"]["missing_rate"].unique())
    if not rates:
        return (
            "Paper's claim (MLA best at every missing rate): not tested here, MLA has no run in this table."
        )
    wins, behind = 0, []
    for r in rates:
        others = table[(table["missing_rate"] == r) & (table["method"] != "mla")]
        mla = cell.loc[("mla", r)]
        if others.empty or mla["mean"] >= others["mean"].max():
            wins += 1
            continue
        best = others.loc[others["mean"].idxmax()]
        gap = 100 * (best["mean"] - mla["mean"])
        within = gap <= 100 * (best["std"] + mla["std"])
        behind.append(
            f"{r:.1f} (`{best['method']}` +{gap:.2f} points, "
            + ("within" if within else "beyond")
            + " the two seed spreads)"
        )
    out = f"Paper's claim (MLA best at every missing rate) on this corpus: MLA is best at {wins} of {len(rates)} rates"
    return out + (f"; behind at {', '.join(behind)}." if behind else ".")


def metrics(table: pd.DataFrame) -> dict:
    """DVC metrics: accuracy mean and std per method and missing rate."""
    out: dict = {}
    for r in table.itertuples():
        out.setdefault(r.method, {})[rate_key(r.missing_rate)] = {
            "accuracy_mean": round(float(r.mean), 6),
            "accuracy_std": round(float(r.std), 6),
            "n_runs": int(r.n_runs),
        }
    return out


def optimisers(config: dict) -> str:
    """Which methods train with their reference's optimiser rather than `train`'s (train.method_optimizers)."""
    train = config["train"]
    own = train["method_optimizers"]
    default = f"{train['optimizer']} at lr {train['lr']:g}"
    if not own:
        return f"Optimiser: {default} for every method."
    groups: dict[str, list[str]] = {}
    for method, cfg in own.items():
        recipe = f"{cfg.get('optimizer', train['optimizer'])} at lr {cfg.get('lr', train['lr']):g}"
        groups.setdefault(recipe, []).append(f"`{method}`")
    return (
        f"Optimiser: {default}, except (their reference's recipe, `train.method_optimizers`) "
        + "; ".join(f"{recipe} for {', '.join(names)}" for recipe, names in groups.items())
        + "."
    )


# ------------------------------------------------------------------------------------------- test-time shift


def shift_table(runs: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Fused test accuracy per (method, train rate, test rate) from every run's test-time shift record."""
    columns = [c for c in runs.columns if c.startswith("shift_")]
    chosen = runs[runs["method"].isin(methods)]
    long = chosen.melt(
        id_vars=["method", "missing_rate", "seed", "fold"],
        value_vars=columns,
        var_name="test_rate",
        value_name="shift_accuracy",
    ).dropna(subset=["shift_accuracy"])
    long["test_rate"] = long["test_rate"].str[len("shift_") :].astype(float)
    table = seed_stats(
        long.rename(columns={"missing_rate": "train_rate"}),
        ["method", "train_rate", "test_rate"],
        "shift_accuracy",
    )
    return _ordered(table, methods, ["method", "train_rate", "test_rate"])


# ------------------------------------------------------------------------------------------- the section


def write_suite_files(table: pd.DataFrame, shift: pd.DataFrame, ctx: ReportContext) -> None:
    """reports/missing_suite.json (DVC metrics), the plots data (percent) and the figure."""
    write_json(
        catalog.SUITE_JSON.at(ctx.out_dir), {"config_hash": config_hash(ctx.job_config), **metrics(table)}
    )
    methods = list(dict.fromkeys(table["method"]))
    wide = (
        (100 * table.pivot(index="missing_rate", columns="method", values="mean")[methods]).round(4)
        if methods
        else pd.DataFrame(index=pd.Index([], name="missing_rate"))
    )
    for method in methods:
        if method in ctx.paper.table2:
            wide[f"paper_{method}"] = [ctx.paper.table2[method].get(r, float("nan")) for r in wide.index]
    plots.write_series(wide.reset_index(), catalog.SUITE_CSV, ctx.out_dir)
    shift_csv = shift.assign(accuracy=(100 * shift["mean"].astype(float)).round(4))
    plots.write_csv(
        shift_csv[["method", "train_rate", "test_rate", "accuracy"]], catalog.SHIFT_CSV.at(ctx.out_dir)
    )
    if not methods:
        plots.placeholder_png(catalog.SUITE_PNG.at(ctx.out_dir), "missing-modality suite: no runs")
        return
    fig, (ax,) = plots.new_figure(7.2, 4.6)
    for i, method in enumerate(methods):
        plots.errorbar_lines(
            ax,
            table[table["method"] == method],
            "missing_rate",
            "mean",
            "std",
            capsize=2,
            color=f"C{i % 10}",
            ls="-" if i < 10 else "--",
            lw=2.2 if method == "mla" else 1.2,
            label=method,
        )
    plots.finish(
        ax,
        "missing rate (train = validation = test)",
        "test accuracy (%)",
        "Missing-modality suite (Table 2 analogue; mean ± std over seeds)",
        legend_size=7,
        ncol=2,
    )
    plots.save_png(fig, catalog.SUITE_PNG.at(ctx.out_dir))


def _suite_data(ctx: ReportContext) -> tuple[pd.DataFrame, str | None]:
    """(Table 2, None) or (an empty table, why there is none)."""
    config = ctx.config
    suite = ctx.of_kind("suite")
    empty = table2(ctx.paper_runs.iloc[0:0], [], [])
    if not suite:
        return empty, "not run (no index of the missing_suite stage)"
    if any(e.cells for e in suite) and ctx.runs_of_kind("suite").empty:
        return empty, "not run (the missing_suite stage's index lists no runs)"
    methods = suite_methods(ctx.main_methods, list(config["missing_suite"]["methods"]))
    table = table2(ctx.paper_runs, methods, list(config["missing_suite"]["missing_rates"]))
    return (table, None) if not table.empty else (table, "no run at the suite's missing rates")


def suite_section(ctx: ReportContext) -> list[str]:
    """Table 2 analogue, the paper's claim on it, the test-time shift tables."""
    table, missing = _suite_data(ctx)
    title = "## Missing-modality suite (Table 2 analogue)"
    if missing:
        write_suite_files(table, shift_table(ctx.paper_runs, []), ctx)
        return [title, "", f"Missing-modality suite (Table 2 analogue): {missing}.", ""]
    config = ctx.config
    shift = shift_table(ctx.paper_runs, strongest(table))
    write_suite_files(table, shift, ctx)

    rates = sorted(table["missing_rate"].unique())
    cell = table.set_index(["method", "missing_rate"])
    best = table.loc[table.groupby("missing_rate")["mean"].idxmax()].set_index("missing_rate")["method"]
    paper_note = (
        f" Below each row, the paper's {ctx.paper.dataset} figure (Table 2)." if ctx.paper.table2 else ""
    )
    out = [
        title,
        "",
        "Every method on the same masks, folds, seeds, features and training budget (`train` in params.yaml: "
        "epochs, batch size), at each missing rate of `missing_suite` (each modality of each sample missing with "
        "that probability, the same rate on train, validation and test). Bold: best at that rate."
        + paper_note
        + " "
        + optimisers(config)
        + " "
        + ctx.settings_note,
        "",
    ]
    rows, notes = [], []
    for method in dict.fromkeys(table["method"]):
        flag = privilege(method, config["method_params"])
        if flag:
            notes.append(
                f"† `{method}`: {flag}; the option in `method_params.{method}` removes the privilege."
            )
        cells = []
        for r in rates:
            present = (method, r) in cell.index
            text = md.pm(cell.loc[(method, r), "mean"], cell.loc[(method, r), "std"]) if present else "—"
            cells.append(f"**{text}**" if best.get(r) == method else text)
        rows.append([f"{method} †" if flag else method, *cells])
        ref = ctx.paper.table2.get(method)
        if ref:
            rows.append([f"{method} (paper)"] + [f"{ref[r]:.2f}" if r in ref else "—" for r in rates])
    out += md.table(["method"] + [md.rate(r) for r in rates], rows)
    collapse = collapse_statement(ctx.paper_runs, list(dict.fromkeys(table["method"])), rates)
    skipped = not_applicable(config)
    notes += [f"Not run on this corpus: `{method}` ({why})." for method, why in skipped.items()]
    out += ["", *notes, "", claim_statement(table), "", *([collapse, ""] if collapse else [])]
    out += md.later_work(
        ctx.paper.later,
        "table2",
        "Published elsewhere, accuracy % by missing rate, under their own protocols (a separate reference, not a "
        "row of the table above: their masks, features and epoch selection differ from the paper's Table 2):",
    )
    out += [f"![missing-modality suite]({catalog.SUITE_PNG.name})", ""]

    methods = list(dict.fromkeys(shift["method"]))
    out += ["### Test-time shift: train at one missing rate, test at another", ""]
    if not methods:
        return out + ["No run recorded a test-time shift.", ""]
    chosen = (
        f"MLA and the {len(methods) - 1} strongest other methods"
        if "mla" in methods
        else f"The {len(methods)} strongest methods"
    )
    out += [
        f"{chosen} of the table above (mean over its rates). Rows: missing rate of training and validation; "
        "columns: missing rate of the test masks (same seed). The diagonal is the ordinary test accuracy.",
        "",
    ]
    test_rates = sorted(shift["test_rate"].unique())
    shift_cell = shift.set_index(["method", "train_rate", "test_rate"])
    for method in methods:
        train_rates = sorted(shift[shift["method"] == method]["train_rate"].unique())
        out += [f"**{method}**", ""]
        out += md.table(
            ["train \\ test"] + [md.rate(r) for r in test_rates],
            [
                [md.rate(t)]
                + [
                    f"{100 * shift_cell.loc[(method, t, r), 'mean']:.1f}"
                    if (method, t, r) in shift_cell.index
                    else "—"
                    for r in test_rates
                ]
                for t in train_rates
            ],
        )
        out += [""]
    return out


# ------------------------------------------------------------------------------------------- isolation


def isolation(experiments: list[tuple[Experiment, pd.DataFrame]], modalities: list[str]) -> pd.DataFrame:
    """Figure 2 analogue: per (method, masked modality, training missing share, other modality) the other
    modality's unimodal test accuracy. `experiments`: each isolation experiment with its runs (`runs_of`: share
    0 is the main grid's complete-data runs, which the experiment reuses)."""
    rows = []
    for experiment, runs in experiments:
        masked = experiment.masks.modality
        for method in experiment.methods:
            frame = runs[runs["method"] == method]
            for other in (m for m in modalities if m != masked):
                cell = seed_stats(frame, ["missing_rate"], f"{other}_accuracy")
                rows += [
                    {"method": method, "masked_modality": masked, "modality": other, **r}
                    for r in cell.to_dict("records")
                ]
    return pd.DataFrame(
        rows,
        columns=["method", "masked_modality", "modality", "missing_rate", "mean", "std", "n_seeds", "n_runs"],
    )


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
    verdict = (
        "The other modalities' accuracy moves by more than twice the seed spread under "
        + ", ".join(f"**{m}**" for m in moved)
        + ": masking one modality in training affects the others there."
        if moved
        else "No method's curves move by more than twice the seed spread: on this corpus, masking one "
        "modality in training leaves the others' accuracy unchanged under every method shown."
    )
    return (
        f"Mean absolute change of the other modalities' unimodal accuracy from share {lo:.1f} to {hi:.1f}: "
        + ", ".join(parts)
        + ". "
        + verdict
    )


def write_isolation_files(iso: pd.DataFrame, ctx: ReportContext) -> None:
    iso = iso.assign(series=iso["method"] + "_" + iso["modality"] + "_without_" + iso["masked_modality"])
    wide = (100 * iso.pivot(index="missing_rate", columns="series", values="mean")).round(4)
    plots.write_series(
        wide.reset_index().rename(columns={"missing_rate": "training_missing_rate"}),
        catalog.ISOLATION_CSV,
        ctx.out_dir,
    )
    panels = list(dict.fromkeys(iso["masked_modality"]))
    fig, axes = plots.new_figure(4.6, 4.0, panels=len(panels))
    for ax, masked in zip(axes, panels):
        part = iso[iso["masked_modality"] == masked]
        for i, method in enumerate(dict.fromkeys(part["method"])):
            for other, style in zip(dict.fromkeys(part["modality"]), ("-", "--")):
                g = part[(part["method"] == method) & (part["modality"] == other)]
                plots.errorbar_lines(
                    ax,
                    g,
                    "missing_rate",
                    "mean",
                    "std",
                    capsize=2,
                    ls=style,
                    color=f"C{i}",
                    label=f"{method}: {other}",
                )
        plots.finish(
            ax,
            f"share of training samples without {masked}",
            "unimodal test accuracy (%)",
            f"{masked} masked in training",
            legend_size=7,
        )
    plots.save_png(fig, catalog.ISOLATION_PNG.at(ctx.out_dir))


def isolation_section(ctx: ReportContext) -> list[str]:
    """The isolation analysis, when the isolation stage ran."""
    experiments = ctx.of_kind("isolation")
    missing = (
        "isolation.enabled: false"
        if not experiments
        else "the isolation stage's index lists no runs"
        if ctx.runs_of_kind("isolation").empty
        else None
    )
    if missing:
        # the files are DVC outputs whatever ran: a header-only CSV and an empty figure
        plots.write_series(
            pd.DataFrame(columns=["training_missing_rate"]), catalog.ISOLATION_CSV, ctx.out_dir
        )
        plots.placeholder_png(catalog.ISOLATION_PNG.at(ctx.out_dir), "isolation analysis: not run")
        return [f"Isolation analysis: not run ({missing}).", ""]
    iso = isolation([(e, ctx.runs_of(e)) for e in experiments], ctx.modalities)
    write_isolation_files(iso, ctx)
    out = [
        "## Isolation of modalities (Figure 2 analogue)",
        "",
        "One modality masked in a growing share of the **training** samples only (validation and test "
        "complete); each other modality's unimodal test accuracy. If training isolates the modalities, "
        "the curves stay flat. Share 0.0 is the main grid's complete-data runs.",
        "",
    ]
    shares = sorted(iso["missing_rate"].unique())
    icell = iso.set_index(["method", "masked_modality", "modality", "missing_rate"])
    rows = []
    for method, masked, other in dict.fromkeys(zip(iso["method"], iso["masked_modality"], iso["modality"])):
        values = [
            icell.loc[(method, masked, other, s)] if (method, masked, other, s) in icell.index else None
            for s in shares
        ]
        present = [v for v in values if v is not None]
        change = 100 * (present[-1]["mean"] - present[0]["mean"])
        rows.append(
            [
                method,
                masked,
                other,
                *[md.pm(v["mean"], v["std"]) if v is not None else "—" for v in values],
                f"{change:+.1f}",
            ]
        )
    out += md.table(
        [
            "method",
            "masked in training",
            "tested modality",
            *[md.rate(s) for s in shares],
            f"change {shares[0]:.1f}→{shares[-1]:.1f} (points)",
        ],
        rows,
    )
    return out + ["", isolation_statement(iso), "", f"![isolation]({catalog.ISOLATION_PNG.name})", ""]
