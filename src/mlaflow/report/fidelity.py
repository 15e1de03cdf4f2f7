"""The fidelity section of the report: the paper's MLA against its released code's choices, one at a time and
all together; the optimism of selecting epochs on the test set; accuracy under both mask protocols.

The experiments are the fidelity stage's (`kind == "fidelity"` in the stage index): the configured variants
(`fidelity.variants`, each MLA with overrides) and the protocol comparison (`fidelity.protocol_methods` under
the other mask protocol: the fidelity experiments that are not a configured variant). Every difference is
paired with the paper default (the main grid's MLA runs) on the same seed and fold, so the folds' difficulty
cancels: per seed, the mean over folds of (variant - paper), then mean ± std over seeds. Three differences need
no training of their own, because they act after training: per-batch and fixed fusion (test-time rules, each
with its own validation-selected epoch, from the curves every MLA run records) and test-set selection (the best
test epoch of the same runs).
"""

from __future__ import annotations

import pandas as pd

from mlaflow.io import write_json
from mlaflow.keys import config_hash, rate_key
from mlaflow.pipeline.experiments import Experiment, effective_train
from mlaflow.report import catalog, plots
from mlaflow.report import markdown as md
from mlaflow.report.aggregate import seed_stats
from mlaflow.report.context import ReportContext

KEYS = ["missing_rate", "seed", "fold"]
# differences measured on the paper runs' recorded curves: name -> (column of the run table, what it is)
MEASURED_ON_PAPER_RUNS = {
    "per_batch_fusion": (
        "fusion_per_batch_accuracy",
        "fusion: entropy per test batch (released) instead of per sample",
    ),
    "fixed_fusion": ("fusion_fixed_accuracy", "fusion: fixed weights (released code without dynamic fusion)"),
    "test_set_selection": (
        "test_selected_accuracy",
        "model selection: best test epoch (released; optimistic)",
    ),
}


def protocol_experiments(ctx: ReportContext) -> list[Experiment]:
    """The protocol comparison: the fidelity experiments that are not a configured variant (a variant may change
    the mask protocol too, along with other settings, so the protocol alone does not tell them apart)."""
    variants = ctx.config["fidelity"]["variants"]
    return [e for e in ctx.of_kind("fidelity") if e.name not in variants]


def _by_rate(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """seed_stats per missing rate, indexed by rate (ascending)."""
    return seed_stats(frame, ["missing_rate"], column).set_index("missing_rate").sort_index()


def effects(ctx: ReportContext) -> pd.DataFrame:
    """One row per (difference, missing rate): the variant's MLA accuracy and its difference to the paper's."""
    rates = ctx.config["fidelity"]["missing_rates"]
    main = ctx.runs_of_kind("main")
    paper = main[(main["method"] == "mla") & main["missing_rate"].isin(rates)]
    rows = []

    def add(name: str, what: str, variant_acc: pd.DataFrame, optimistic: bool) -> None:
        paired = paper[KEYS + ["accuracy"]].merge(variant_acc, on=KEYS, suffixes=("_paper", ""))
        paired["delta"] = paired["accuracy"] - paired["accuracy_paper"]
        acc, delta, base = (_by_rate(paired, c) for c in ("accuracy", "delta", "accuracy_paper"))
        for rate in delta.index:
            rows.append(
                {
                    "difference": name,
                    "what": what,
                    "missing_rate": rate,
                    "optimistic": optimistic,
                    "paper_accuracy_mean": base.loc[rate, "mean"],
                    "accuracy_mean": acc.loc[rate, "mean"],
                    "accuracy_std": acc.loc[rate, "std"],
                    "delta_mean": delta.loc[rate, "mean"],
                    "delta_std": delta.loc[rate, "std"],
                    "n_runs": int(delta.loc[rate, "n_runs"]),
                }
            )

    for experiment in ctx.of_kind("fidelity"):  # the variants, then the protocol comparison
        runs = ctx.runs_of(experiment)
        runs = runs[(runs["method"] == "mla") & runs["missing_rate"].isin(rates)]
        selection = effective_train(ctx.config, "mla", experiment.overrides)["model_selection"]
        add(experiment.name, experiment.description, runs[KEYS + ["accuracy"]], selection == "test")
    for name, (column, what) in MEASURED_ON_PAPER_RUNS.items():
        if column in paper:
            add(
                name,
                what,
                paper[KEYS + [column]].rename(columns={column: "accuracy"}),
                name == "test_set_selection",
            )
    return pd.DataFrame(
        rows,
        columns=[
            "difference",
            "what",
            "missing_rate",
            "optimistic",
            "paper_accuracy_mean",
            "accuracy_mean",
            "accuracy_std",
            "delta_mean",
            "delta_std",
            "n_runs",
        ],
    )


def optimism(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method and missing rate: best-test-epoch accuracy minus validation-selected (same runs)."""
    if "optimism" not in runs:
        return pd.DataFrame(columns=["method", "missing_rate", "mean", "std", "n_seeds", "n_runs"])
    frames = [
        _by_rate(group, "optimism").reset_index().assign(method=method)
        for method, group in runs.groupby("method", sort=False)
    ]
    columns = ["method", "missing_rate", "mean", "std", "n_seeds", "n_runs"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def by_protocol(ctx: ReportContext, protocol_experiments: list[Experiment]) -> pd.DataFrame:
    """Accuracy (mean ± std over seeds) per method, mask protocol and missing rate: the main grid under its
    protocol, each protocol experiment under its own."""
    methods = ctx.config["fidelity"]["protocol_methods"]
    main = ctx.runs_of_kind("main")
    sources = [(ctx.of_kind("main")[0].masks.protocol, main)] if ctx.of_kind("main") else []
    sources += [(e.masks.protocol, ctx.runs_of(e)) for e in protocol_experiments]
    frames = []
    for protocol, runs in sources:
        for method in methods:
            table = _by_rate(runs[runs["method"] == method], "accuracy").reset_index()
            frames.append(table.assign(method=method, protocol=protocol))
    columns = ["method", "protocol", "missing_rate", "mean", "std", "n_seeds", "n_runs"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def metrics(effect_table: pd.DataFrame, optimism_table: pd.DataFrame, protocol_table: pd.DataFrame) -> dict:
    """The fidelity figures as nested DVC metrics (no dots in keys)."""
    out: dict = {"fidelity": {}, "optimism": {}, "by_protocol": {}}
    for row in effect_table.itertuples():
        out["fidelity"].setdefault(row.difference, {})[rate_key(row.missing_rate)] = {
            "accuracy_mean": round(row.accuracy_mean, 6),
            "delta_mean": round(row.delta_mean, 6),
            "delta_std": round(row.delta_std, 6),
        }
    for row in optimism_table.itertuples():
        out["optimism"].setdefault(row.method, {})[rate_key(row.missing_rate)] = {
            "mean": round(row.mean, 6),
            "std": round(row.std, 6),
        }
    for row in protocol_table.itertuples():
        out["by_protocol"].setdefault(row.protocol, {}).setdefault(row.method, {})[
            rate_key(row.missing_rate)
        ] = {"accuracy_mean": round(row.mean, 6), "accuracy_std": round(row.std, 6)}
    return out


def write_files(
    effect_table: pd.DataFrame, optimism_table: pd.DataFrame, protocol_table: pd.DataFrame, ctx: ReportContext
) -> None:
    """reports/fidelity.json, plots/fidelity_effects.csv, plots/accuracy_vs_missing_rate_by_protocol.csv and
    the by-protocol figure."""
    write_json(
        catalog.FIDELITY_JSON.at(ctx.out_dir),
        {"config_hash": config_hash(ctx.job_config), **metrics(effect_table, optimism_table, protocol_table)},
    )
    wide = effect_table.pivot(index="missing_rate", columns="difference", values="delta_mean")
    wide = (100 * wide[list(dict.fromkeys(effect_table["difference"]))]).round(4).reset_index()
    plots.write_series(wide, catalog.EFFECTS_CSV, ctx.out_dir)
    table = protocol_table.assign(series=protocol_table["method"] + "_" + protocol_table["protocol"])
    wide = (100 * table.pivot(index="missing_rate", columns="series", values="mean")).round(4).reset_index()
    plots.write_series(wide, catalog.PROTOCOL_CSV, ctx.out_dir)

    fig, (ax,) = plots.new_figure()
    for i, method in enumerate(dict.fromkeys(protocol_table["method"])):
        for protocol, style in zip(dict.fromkeys(protocol_table["protocol"]), ("-", "--")):
            group = protocol_table[
                (protocol_table["method"] == method) & (protocol_table["protocol"] == protocol)
            ]
            plots.errorbar_lines(
                ax,
                group,
                "missing_rate",
                "mean",
                "std",
                ls=style,
                capsize=3,
                color=f"C{i}",
                label=f"{method}, {protocol} masks",
            )
    plots.finish(
        ax, "missing rate", "test accuracy (%)", "Accuracy under both mask protocols (mean ± std over seeds)"
    )
    plots.save_png(fig, catalog.PROTOCOL_PNG.at(ctx.out_dir))


def write_placeholders(ctx: ReportContext) -> None:
    """The section's files when it has no data: they are DVC outputs whatever ran."""
    write_json(catalog.FIDELITY_JSON.at(ctx.out_dir), {"config_hash": config_hash(ctx.job_config)})
    for output in (catalog.EFFECTS_CSV, catalog.PROTOCOL_CSV):
        plots.write_series(pd.DataFrame(columns=[output.x]), output, ctx.out_dir)
    plots.placeholder_png(catalog.PROTOCOL_PNG.at(ctx.out_dir), "fidelity experiment: not run")


def section(ctx: ReportContext) -> list[str]:
    """Effects of each difference, the optimism of test-set selection, accuracy under both mask protocols."""
    tables, missing = _section_data(ctx)
    if missing:
        write_placeholders(ctx)
        return [f"Fidelity experiment: {missing}.", ""]
    effect_table, optimism_table, protocol_table = tables
    write_files(effect_table, optimism_table, protocol_table, ctx)
    return [*effects_part(effect_table), *optimism_part(optimism_table), *protocol_part(protocol_table)]


def _section_data(
    ctx: ReportContext,
) -> tuple[tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None, str | None]:
    """((effects, optimism, by protocol), None), or (None, why the section has no data)."""
    if not ctx.of_kind("fidelity"):
        return None, "not run (fidelity.enabled: false)"
    if ctx.runs_of_kind("fidelity").empty:
        return None, "not run (the fidelity stage's index lists no runs)"
    effect_table, optimism_table = effects(ctx), optimism(ctx.paper_runs)
    protocol_table = by_protocol(ctx, protocol_experiments(ctx))
    if effect_table.empty:
        return None, "no MLA run of the main grid at its missing rates to pair the variants with"
    return (effect_table, optimism_table, protocol_table), None


def effects_part(effect_table: pd.DataFrame) -> list[str]:
    """The section's title and the table of effects: per difference and missing rate, the variant's accuracy
    and its difference to the paper's MLA, below the paper's own row."""
    rates = sorted(effect_table["missing_rate"].unique())
    cell = effect_table.set_index(["difference", "missing_rate"])
    out = [
        "## Fidelity: the paper's MLA against its released code",
        "",
        "Each row changes the paper's MLA (eq. 1-8, the first table's `mla`) in one way the released code "
        'differs, or in all of them (`released_code`); `docs/science.md`, section "Paper against released code", '
        "explains each. Cell: the variant's accuracy, and in brackets its difference to the paper's MLA in "
        "percentage points, paired on seed and fold (per seed the mean over folds, then mean ± std over seeds). "
        "**Optimistic** rows pick the epoch on the test set: their figures are not comparable to "
        "validation-selected ones. Per-batch and fixed fusion and test-set selection act after training; they "
        "are measured on the paper runs themselves. At missing rate 0.0 nothing is masked, so variants that only "
        "change the masks or how masked inputs are fed equal the paper runs there and are not retrained.",
        "",
    ]
    paper = effect_table.groupby("missing_rate")["paper_accuracy_mean"].first()
    rows = [["**paper** (eq. 1-8)"] + [f"{100 * paper[r]:.2f}" for r in rates]]
    for difference in dict.fromkeys(effect_table["difference"]):
        first = cell.loc[difference].iloc[0]
        label = f"{difference}" + (" **(optimistic)**" if first["optimistic"] else "")
        rows.append(
            [f"{label}<br><sub>{first['what']}</sub>"]
            + [
                f"{100 * cell.loc[(difference, r), 'accuracy_mean']:.2f} "
                f"({md.pp(cell.loc[(difference, r), 'delta_mean'], cell.loc[(difference, r), 'delta_std'])})"
                if (difference, r) in cell.index
                else "—"
                for r in rates
            ]
        )
    out += [*md.table(["difference"] + [f"missing rate {md.rate(r)}" for r in rates], rows), ""]
    return out + [
        "The training budget (optimiser, learning rate, epochs) is this workflow's for every row; the released "
        "code's own (lr 1e-3, 100 epochs) is not part of this comparison.",
        "",
    ]


def optimism_part(optimism_table: pd.DataFrame) -> list[str]:
    """Per method and missing rate, what picking the epoch on the test set adds."""
    opt_rates = sorted(optimism_table["missing_rate"].unique())
    opt = optimism_table.set_index(["method", "missing_rate"])
    return [
        "### Optimism of test-set model selection",
        "",
        "Best-test-epoch accuracy minus the test accuracy at the validation-selected epoch, same runs "
        "(percentage points, mean ± std over seeds). This is what picking epochs on the test set adds.",
        "",
        *md.table(
            ["method"] + [md.rate(r) for r in opt_rates],
            [
                [m]
                + [
                    md.pp(opt.loc[(m, r), "mean"], opt.loc[(m, r), "std"]) if (m, r) in opt.index else "—"
                    for r in opt_rates
                ]
                for m in dict.fromkeys(optimism_table["method"])
            ],
        ),
        "",
    ]


def protocol_part(protocol_table: pd.DataFrame) -> list[str]:
    """Accuracy per method, mask protocol and missing rate, and the figure."""
    prot_rates = sorted(protocol_table["missing_rate"].unique())
    prot = protocol_table.set_index(["method", "protocol", "missing_rate"])
    keys = list(dict.fromkeys(zip(protocol_table["method"], protocol_table["protocol"])))
    return [
        "### Accuracy under both mask protocols",
        "",
        "`bernoulli`: each modality of each sample missing independently with probability = missing rate (the "
        "paper's words). `cpm`: CPM-Net's protocol, every sample keeps at least one modality (what the public "
        "code used). Accuracy %, mean ± std over seeds.",
        "",
        *md.table(
            ["method", "masks"] + [md.rate(r) for r in prot_rates],
            [
                [m, p]
                + [
                    md.pm(prot.loc[(m, p, r), "mean"], prot.loc[(m, p, r), "std"])
                    if (m, p, r) in prot.index
                    else "—"
                    for r in prot_rates
                ]
                for m, p in keys
            ],
        ),
        "",
        f"![accuracy under both mask protocols]({catalog.PROTOCOL_PNG.name})",
        "",
    ]
