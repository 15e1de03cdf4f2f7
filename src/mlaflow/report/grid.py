"""The main grid (`methods` at every missing rate, plus the complete-modality baselines at rate 0): the DVC
metrics and plots of the summary job, and the report's first sections (the read-first note, accuracy against
missing rate beside the paper's Table 2, every metric of every method under the paper's settings).
"""

from __future__ import annotations

import pandas as pd

from mlaflow.data import corpora
from mlaflow.io import write_json
from mlaflow.keys import config_hash, rate_key
from mlaflow.report import catalog, claims, plots
from mlaflow.report import markdown as md
from mlaflow.report.aggregate import seed_stats
from mlaflow.report.complete import unimodal_cell
from mlaflow.report.context import MAIN_KINDS, METRICS, ReportContext


def summary_table(runs: pd.DataFrame, modalities: list[str]) -> pd.DataFrame:
    """Per (method, missing rate): the metrics, per-modality accuracies and all-missing share over seeds."""
    columns = [*METRICS, *(f"{m}_accuracy" for m in modalities), "share_all_missing"]
    return seed_stats(runs, ["method", "missing_rate"], columns)


def plot_accuracy(summary: pd.DataFrame, ctx: ReportContext, methods: list[str]) -> None:
    fig, (ax,) = plots.new_figure()
    for i, method in enumerate(methods):
        group = summary[summary["method"] == method]
        color = f"C{i}"
        plots.errorbar_lines(
            ax,
            group,
            "missing_rate",
            "accuracy_mean",
            "accuracy_std",
            capsize=3,
            color=color,
            label=f"{method} (this run)",
        )
        ref = ctx.paper.table2.get(method)
        if ref:
            ax.plot(
                list(ref),
                list(ref.values()),
                ls="--",
                marker="x",
                color=color,
                alpha=0.6,
                label=f"{method} (paper, {ctx.paper.dataset})",
            )
    plots.finish(
        ax,
        "missing rate (each modality of each sample, train = val = test)",
        "test accuracy (%)",
        "Accuracy against missing rate (mean ± std over seeds)",
    )
    plots.save_png(fig, catalog.ACCURACY_PNG.at(ctx.out_dir))


def write_summary(ctx: ReportContext) -> None:
    """reports/metrics.json (DVC metrics: every method of the main grid and the complete-modality baselines at
    the rates it ran), plots/accuracy_vs_missing_rate.csv (a series per main method, and per paper curve when
    there is a paper dataset) and its figure."""
    methods = list(ctx.job_config["methods"])
    runs = ctx.runs_of_kind(*MAIN_KINDS)
    summary = summary_table(runs, ctx.modalities)
    cell = summary.set_index(["method", "missing_rate"])

    # DVC metrics: nested, no dots in keys
    metrics: dict = {"config_hash": config_hash(ctx.job_config)}
    for (method, rate), row in cell.iterrows():
        entry = {
            f"{k}_{stat}": round(float(row[f"{k}_{stat}"]), 6)
            for k in (*METRICS, *(f"{m}_accuracy" for m in ctx.modalities))
            for stat in ("mean", "std")
        }
        entry["n_runs"] = int(row["n_runs"])
        metrics.setdefault(method, {})[rate_key(rate)] = entry
    # the paper's complete-modality claims judged on these runs (a Table 1 workflow's reach the main report)
    metrics[claims.CLAIMS_KEY] = claims.summary_claims(runs, ctx.modalities)
    write_json(catalog.METRICS.at(ctx.out_dir), metrics)

    # DVC plots data: one series per method (this run) and, with a paper dataset, per paper curve
    with_paper = ctx.paper.dataset is not None
    header = ["missing_rate", *[c for m in methods for c in ([m, f"paper_{m}"] if with_paper else [m])]]
    plot_rows = []
    for rate in sorted(runs[runs["method"].isin(methods)]["missing_rate"].unique()):
        row = {"missing_rate": rate}
        for method in methods:
            row[method] = (
                round(100 * float(cell.loc[(method, rate), "accuracy_mean"]), 4)
                if (method, rate) in cell.index
                else ""
            )
            if with_paper:
                row[f"paper_{method}"] = ctx.paper.table2.get(method, {}).get(rate, "")
        plot_rows.append(row)
    plots.write_series(pd.DataFrame(plot_rows, columns=header), catalog.ACCURACY_CSV, ctx.out_dir)
    plot_accuracy(summary, ctx, methods)


# ------------------------------------------------------------------------------------------- sections


def header(ctx: ReportContext) -> list[str]:
    """Title, the read-first note (synthetic corpus or random encoders) and how every cell is computed."""
    config = ctx.config
    corpus, kind = config["corpus"], corpora.corpus_kind(config)
    any_pretrained = any(bool(f.get("pretrained")) for f in ctx.features)
    n_seeds, n_folds = len(config["train"]["seeds"]), len(config["splits"]["folds"])
    out = ["# mlaflow report: learning with missing modalities (MLA, CVPR 2024, Table 2 protocol)", ""]
    generated = kind.generator_module is not None
    if not kind.extracted:
        source = f"These numbers come from your own features (labels `{corpora.label_table(config)}`). "
    elif generated:
        source = (
            f"These numbers come from the *embedded synthetic corpus* (generated, {kind.layout} layout), "
        )
    else:
        source = f"These numbers come from the corpus at `{corpus['root']}`, "
    if generated or (not any_pretrained and kind.extracted):
        paper = (
            f"the paper's {ctx.paper.dataset} figures, which are shown beside them for reference only"
            if ctx.paper.dataset
            else "the paper's figures"
        )
        out += [
            "> **Read this first.** "
            + source
            + ("with **randomly initialised, not pretrained** encoders. " if not any_pretrained else "")
            + "They test that the workflow runs and how the methods behave relative to each other; they are "
            f"**not comparable** to {paper}.",
            "",
        ]
    elif not kind.extracted:
        out += [f"> {source}The paper's figures are not shown: this corpus is not one of its datasets.", ""]
    out += [
        f"Accuracy is overall test accuracy (WA). Each cell: for each seed the mean over {n_folds} "
        f"folds (leave one session, speaker group or table fold out; or the corpus's own split), then mean ± std "
        f"over {n_seeds} seeds. Model selection on validation only (validation drawn from the training part). Masks: `{config['masks']['protocol']}`, same rate "
        f"on train, validation and test; samples with no modality left: `{config['masks']['all_missing']}`.",
        "",
        encoders_line(config, ctx.features),
        "",
    ]
    return out


def encoders_line(config: dict, features: list[dict]) -> str:
    """What the methods' encoders are (train.encoder): MLPs on frozen features, or ResNet-18s trained end to end
    from the prepared inputs whose shapes the stores record."""
    train = config["train"]
    if train.get("encoder", "mlp") == "mlp":
        width = f" of width {train['hidden_dim']}" if "hidden_dim" in train else ""
        return (
            f"Encoders: three fully connected layers{width} on frozen features (A.3.2: the "
            "paper's Table 2 setting)."
        )
    width = train["resnet_width"]
    size = "torchvision's resnet18" if width == 64 else f"first-stage width {width}, torchvision's is 64"
    shapes = "; ".join(
        f"{f['modality']}: {' x '.join(map(str, f['input_shape']))}" for f in features if f.get("input_shape")
    )
    return (
        f"Encoders: **ResNet-18 trained end to end** ({size}; {8 * width}-d embeddings) by each method's own rule, "
        f"from the prepared inputs of each clip ({shapes}): the paper's Table 1 setting for audio and video "
        "(A.3.1)."
    )


def accuracy_table(ctx: ReportContext) -> list[str]:
    """Accuracy of the main grid's methods against missing rate, each with the paper's row below it."""
    methods = ctx.main_methods
    runs = ctx.runs_of_kind("main")
    out = ["## Accuracy (%) against missing rate", ""]
    if runs.empty:
        return out + ["No runs of the main grid.", ""]
    cell = seed_stats(runs, ["method", "missing_rate"], "accuracy").set_index(["method", "missing_rate"])
    rates = sorted(runs["missing_rate"].unique())
    rows = []
    for method in methods:
        rows.append(
            [f"**{method}**"]
            + [
                md.pm(cell.loc[(method, r), "mean"], cell.loc[(method, r), "std"])
                if (method, r) in cell.index
                else "—"
                for r in rates
            ]
        )
        ref = ctx.paper.table2.get(method)
        if ref:
            rows.append([f"{method} (paper)"] + [f"{ref[r]:.2f}" if r in ref else "—" for r in rates])
    out += [*md.table(["method"] + [md.rate(r) for r in rates], rows), "", ctx.settings_note, ""]
    if ctx.paper.table2:
        paper_rates = sorted({r for ref in ctx.paper.table2.values() for r in ref})
        no_zero = "" if 0.0 in paper_rates else "; the paper has no 0.0 column in this protocol"
        out += [
            f"Paper rows: Table 2 ({ctx.paper.dataset}, missing rates {paper_rates[0]:g}-{paper_rates[-1]:g}"
            f"{no_zero}).",
            "",
        ]
    return out + [f"![accuracy against missing rate]({catalog.ACCURACY_PNG.name})", ""]


def all_metrics(ctx: ReportContext) -> list[str]:
    """Every metric of every run under the paper's settings (main grid, complete modalities, suite)."""
    out = ["## All metrics (%, mean ± std over seeds)", ""]
    runs = ctx.paper_runs
    if runs.empty:
        return out + ["No runs under the paper's settings.", ""]
    # with each modality's share of constant runs: a constant predictor is named, not shown as an accuracy
    flags = [f"{m}_constant" for m in ctx.modalities if f"{m}_constant" in runs]
    columns = [*METRICS, *(f"{m}_accuracy" for m in ctx.modalities), "share_all_missing", *flags]
    cell = seed_stats(runs, ["method", "missing_rate"], columns).set_index(["method", "missing_rate"])
    header = [
        "method",
        "missing rate",
        "WA",
        "UA",
        "macro F1",
        "weighted F1",
        *[f"{m} acc" for m in ctx.modalities],
        "all-missing share",
        "runs",
    ]
    rows = [
        [
            method,
            md.rate(r),
            *[md.pm(c[f"{k}_mean"], c[f"{k}_std"]) for k in METRICS],
            *[unimodal_cell(c, m) for m in ctx.modalities],
            f"{100 * c['share_all_missing_mean']:.1f}",
            str(int(c["n_runs"])),
        ]
        for (method, r), c in cell.iterrows()
    ]
    return out + [
        *md.table(header, rows),
        "",
        "Per-modality accuracy: each modality's own prediction (MLA: the shared head on that modality's "
        "encoder; late fusion: that modality's classifier), on the test samples where the modality is "
        'present; "constant predictor": one class in most runs (Table 1 analogue).',
        "",
    ]
