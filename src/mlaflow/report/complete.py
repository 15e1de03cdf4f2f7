"""Complete-modality analyses (missing rate 0): the Table 1 analogue (every method's multimodal and unimodal
accuracy), the laziness statement computed from it, the modality gap (Figure 3 analogue) and the Table 3
analogue (MLA's ablations).

Modality laziness (section 4.3): under joint training the weak modality learns less than it can. Late fusion
trains each modality alone, so its unimodal accuracies say what each modality can reach; the weak modality is
the one with the lowest late-fusion unimodal accuracy (the lowest mean over methods if late fusion did not run).
The claim holds on a corpus when MLA's accuracy on the weak modality beats the best joint-training method's by
more than the larger of their standard deviations over seeds.

What the section says of a method comes from its class, read through the method registry
(mlaflow.methods.method_class): whether it is a joint-training method (`joint_training`) and how its unimodal
prediction is made (`unimodal_rule`).
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from mlaflow.methods import METHODS, method_class
from mlaflow.pipeline.experiments import Experiment
from mlaflow.report import catalog, plots
from mlaflow.report import markdown as md
from mlaflow.report.aggregate import seed_stats
from mlaflow.report.context import MAIN_KINDS, ReportContext

PAPER_ORDER = ("sum", "concat", "late_fusion", "film", "bigated", "ogm_ge", "qmf", "mla")  # Table 1's order
GAP_METHODS = ("mla", "concat")  # Figure 3 of the paper
# the only override of the fidelity variant that turns head gradient modification off (Table 3's "HGM off")
HGM_OFF = {"method_params": {"mla": {"head_gradient_modification": "off"}}}


def joint_methods(names) -> tuple[str, ...]:
    """Of the methods `names` (those that ran), the ones trained end to end through one fusion layer
    (`joint_training`), in registry order: the methods whose weak modality the paper calls lazy."""
    return tuple(name for name in METHODS if name in set(names) and method_class(name).joint_training)


def unimodal_rules(names) -> str:
    """How the unimodal prediction of each of the methods `names` (those that ran) is made (section 4.1.1), as
    its class states it
    (`unimodal_rule`, who and how), in one clause: the rule several methods share first (the joint-training
    methods' default), then each method's own, joint-training methods first, in registry order; methods whose
    rules read alike are named together."""
    stated = [cls for cls in map(method_class, [m for m in METHODS if m in set(names)]) if cls.unimodal_rule]
    shared = Counter(cls.unimodal_rule for cls in stated)
    named: dict[str, list[str]] = {}
    for cls in sorted(stated, key=lambda cls: (shared[cls.unimodal_rule] == 1, not cls.joint_training)):
        who, how = cls.unimodal_rule
        names = named.setdefault(how, [])
        if who not in names:
            names.append(who)
    return ", ".join(f"{' and '.join(names)} {how}" for how, names in named.items())


def columns(modalities: list[str]) -> tuple[str, ...]:
    """Table 1's figures: each modality's unimodal accuracy, then the multimodal one."""
    return (*(f"{m}_accuracy" for m in modalities), "accuracy")


def _paper_order(methods) -> list[str]:
    return sorted(methods, key=lambda m: (PAPER_ORDER.index(m) if m in PAPER_ORDER else 99, m))


def _by_method(frame: pd.DataFrame, cols) -> pd.DataFrame:
    """seed_stats per method, indexed by method, in the paper's column order."""
    table = seed_stats(frame, ["method"], list(cols)).set_index("method")
    return table.loc[_paper_order(table.index)]


# a unimodal column whose prediction is one class in more than this share of the runs is not measured
CONSTANT_SHARE = 0.5


def table1(runs: pd.DataFrame, modalities: list[str]) -> pd.DataFrame:
    """One row per method that ran at missing rate 0 (runs under the paper's settings). `<m>_constant_mean`:
    the share of runs whose unimodal prediction of m is one class; where most runs' are (> CONSTANT_SHARE), the
    accuracy is mostly the share of one class, not a measure of the modality, and `<m>_accuracy_mean` is NaN
    (not measured)."""
    at_zero = runs[runs["missing_rate"] == 0.0]
    flags = [f"{m}_constant" for m in modalities if f"{m}_constant" in at_zero]
    table = _by_method(at_zero, [*columns(modalities), *flags])
    for m in modalities:
        if f"{m}_constant_mean" in table:
            constant = table[f"{m}_constant_mean"] > CONSTANT_SHARE
            table.loc[constant, [f"{m}_accuracy_mean", f"{m}_accuracy_std"]] = float("nan")
    return table


def unimodal_cell(row: pd.Series, modality: str) -> str:
    """A Table 1 unimodal cell: mean ± std; "constant predictor" where most runs predict one class (with the
    share unless all do); the share of constant runs where some do."""
    share = row.get(f"{modality}_constant_mean", 0.0)
    if share > CONSTANT_SHARE:
        return "constant predictor" if share == 1.0 else f"constant predictor ({share:.0%} of runs)"
    text = md.pm(row[f"{modality}_accuracy_mean"], row[f"{modality}_accuracy_std"])
    return f"{text} ({share:.0%} of runs constant)" if share and share > 0 else text


def weak_modality(table: pd.DataFrame, modalities: list[str]) -> str:
    unimodal = [f"{m}_accuracy_mean" for m in modalities]
    reference = table.loc["late_fusion", unimodal] if "late_fusion" in table.index else table[unimodal].mean()
    return modalities[int(reference.to_numpy(dtype=float).argmin())]


def laziness_statement(table: pd.DataFrame, modalities: list[str]) -> str:
    """A sentence computed from the Table 1 analogue: does MLA's weak modality learn more than under the best
    joint-training method here?"""
    weak = weak_modality(table, modalities)
    # a method whose weak-modality prediction is a constant has no accuracy to compare there
    joint = [m for m in joint_methods(table.index) if not pd.isna(table.loc[m, f"{weak}_accuracy_mean"])]
    if "mla" not in table.index or not joint:
        return (
            "The laziness comparison needs MLA and at least one joint-training method with a measured "
            "weak-modality accuracy at missing rate 0."
        )
    col = f"{weak}_accuracy"
    best = max(joint, key=lambda m: table.loc[m, f"{col}_mean"])
    mla, other = table.loc["mla"], table.loc[best]
    gap = mla[f"{col}_mean"] - other[f"{col}_mean"]
    margin = max(mla[f"{col}_std"], other[f"{col}_std"])
    verdict = "holds" if gap > margin else ("does not hold" if gap <= 0 else "is not clear (within one std)")
    fused_gap = mla["accuracy_mean"] - max(table.loc[m, "accuracy_mean"] for m in joint)
    return (
        f"**Laziness claim on this corpus: {verdict}.** The weak modality is {weak} (lowest unimodal accuracy "
        f"{'when trained alone (late fusion)' if 'late_fusion' in table.index else 'on average'}). MLA reaches "
        f"{100 * mla[f'{col}_mean']:.2f} ± {100 * mla[f'{col}_std']:.2f}% on it, the best joint-training method "
        f"({best}) {100 * other[f'{col}_mean']:.2f} ± {100 * other[f'{col}_std']:.2f}%: a difference of "
        f"{100 * gap:+.2f} points (criterion: more than the larger std, {100 * margin:.2f}). MLA's multimodal "
        f"accuracy is {100 * fused_gap:+.2f} points from the best joint method's."
    )


def hgm_off_experiment(experiments: list[Experiment]) -> Experiment | None:
    """The fidelity experiment whose only change is head gradient modification off (Table 3's HGM off)."""
    return next((e for e in experiments if e.kind == "fidelity" and e.overrides == HGM_OFF), None)


def table3(main: pd.DataFrame, hgm_off: pd.DataFrame, modalities: list[str]) -> pd.DataFrame | None:
    """MLA with head gradient modification (HGM) on/off and dynamic fusion (DF) on/off, at missing rate 0.

    `main`: runs of the main grid; `hgm_off`: runs of the HGM-off variant. DF off is the average of the
    unimodal predictions, measured on the same runs' recorded curves (fusion acts after training). None when
    either has no MLA run at missing rate 0."""

    def at_zero(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[(frame["missing_rate"] == 0.0) & (frame["method"] == "mla")]

    on, off = at_zero(main), at_zero(hgm_off)
    if on.empty or off.empty or "fusion_average_accuracy" not in on or "fusion_average_accuracy" not in off:
        return None
    cols = [*columns(modalities)[:-1], "multi"]
    rows = {}
    for hgm, frame in (("off", off), ("on", on)):
        for df, column in (("off", "fusion_average_accuracy"), ("on", "accuracy")):
            rows[(hgm, df)] = seed_stats(frame.assign(multi=frame[column]), ["method"], cols).iloc[0]
    return pd.DataFrame(rows).T


def gap_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Modality gap per method and modality pair at missing rate 0 (mean ± std over seeds)."""
    complete = runs[runs["missing_rate"] == 0.0]
    pairs = [c for c in complete.columns if c.startswith("gap_") and complete[c].notna().any()]
    return _by_method(complete, pairs)


def plot_gap(projections: dict[str, dict], out_png) -> None:
    methods = [m for m in GAP_METHODS if projections.get(m)] or ["(none)"]
    fig, axes = plots.new_figure(4.2, 4.0, panels=len(methods))
    for ax, method in zip(axes, methods):
        for i, (modality, points) in enumerate(projections.get(method, {}).items()):
            xy = list(zip(*points)) if points else ([], [])
            ax.scatter(xy[0], xy[1], s=8, alpha=0.6, color=f"C{i}", label=modality)
        ax.set_title(f"{method}: test embeddings (L2-normalised, PCA)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # "(none)": an empty panel, no legend
            ax.legend(fontsize=8)
    plots.save_png(fig, out_png, dpi=110)


def _paper_cell(values: list[float] | None) -> str:
    return " / ".join(f"{v:.2f}" for v in values) if values else "—"


def _paper_header(paper, table: dict, modalities: list[str]) -> list[str]:
    """The paper column's header (its modality names), or no column when the paper has no such table."""
    if not table:
        return []
    return [f"paper ({paper.dataset}): " + " / ".join([*(paper.column(m) for m in modalities), "multi"])]


TITLE = "## Complete modalities: every method (Table 1 analogue)"


def section(ctx: ReportContext) -> list[str]:
    """Table 1 and Table 3 analogues at missing rate 0, beside the paper's rows; the modality gap."""
    write_gap_figure(ctx)
    if ctx.paper_runs[ctx.paper_runs["missing_rate"] == 0.0].empty:
        return [
            TITLE,
            "",
            "Complete modalities (Table 1 analogue): no run at missing rate 0 under the paper's "
            "settings (add 0.0 to masks.missing_rates or methods to complete_modality_methods).",
            "",
        ]
    return [*table1_part(ctx), *gap_part(ctx), *table3_part(ctx)]


def write_gap_figure(ctx: ReportContext) -> None:
    """The modality gap figure: the main grid's runs of GAP_METHODS at missing rate 0 (an empty panel
    without)."""
    main = {e.name for e in ctx.of_kind(*MAIN_KINDS)}
    projections = {
        method: projection
        for (name, method, rate), projection in ctx.projections.items()
        if name in main and rate == 0.0 and method in GAP_METHODS
    }
    plot_gap(projections, catalog.GAP_PNG.at(ctx.out_dir))


def table1_part(ctx: ReportContext) -> list[str]:
    """Table 1 analogue: every method's unimodal and multimodal accuracy, the best of each column in bold,
    with the paper's row; then the laziness statement computed from it."""
    modalities, paper = ctx.modalities, ctx.paper
    table = table1(ctx.paper_runs, modalities)
    cols = columns(modalities)
    best = {c: table[f"{c}_mean"].max() for c in cols}
    rows = []
    for method, row in table.iterrows():
        cells = []
        for c in cols:
            modality = c[: -len("_accuracy")] if c != "accuracy" else None
            text = unimodal_cell(row, modality) if modality else md.pm(row[f"{c}_mean"], row[f"{c}_std"])
            cells.append(f"**{text}**" if row[f"{c}_mean"] == best[c] else text)
        paper_cell = [_paper_cell(paper.row(paper.table1, method, modalities))] if paper.table1 else []
        rows.append([method, *cells, *paper_cell])
    return [
        TITLE,
        "",
        "Missing rate 0, accuracy % (mean ± std over seeds of the fold means). Unimodal accuracy as section "
        f'4.1.1 says: {unimodal_rules(table.index)}. Bold: the best of this run per column. "constant '
        'predictor": the unimodal prediction is one class in most runs (all, unless a share is given), so its '
        "accuracy is mostly that class's share, not what the modality carries (not shown as a number, and left "
        "out of the laziness comparison). "
        f"{ctx.settings_note}",
        "",
        *md.table(
            [
                "method",
                *[f"{m} acc" for m in modalities],
                "multimodal acc",
                *_paper_header(paper, paper.table1, modalities),
            ],
            rows,
        ),
        "",
        laziness_statement(table, modalities),
        "",
        *md.later_work(
            paper.later,
            "table1",
            f"Published elsewhere on {paper.dataset}, accuracy %, under their own protocols (not comparable cell by "
            "cell with the rows above):",
        ),
    ]


def gap_part(ctx: ReportContext) -> list[str]:
    """The modality gap per method and modality pair (Figure 3 analogue), and the figure."""
    gaps = gap_table(ctx.paper_runs)
    pairs = [c[: -len("_mean")] for c in gaps.columns if c.startswith("gap_") and c.endswith("_mean")]
    return [
        "### Modality gap (Figure 3 analogue)",
        "",
        "Distance between the centroids of the L2-normalised encoder outputs of two modalities on the test set "
        "(Liang et al. 2022), missing rate 0, mean ± std over seeds. The figure projects one run's embeddings "
        "(seed and fold first in order) on their two principal axes.",
        "",
        *md.table(
            ["method", *[p.replace("gap_", "") for p in pairs]],
            [
                [m, *[f"{row[f'{p}_mean']:.3f} ± {row[f'{p}_std']:.3f}" for p in pairs]]
                for m, row in gaps.iterrows()
            ],
        ),
        "",
        f"![modality gap]({catalog.GAP_PNG.name})",
        "",
    ]


def table3_part(ctx: ReportContext) -> list[str]:
    """Table 3 analogue: MLA with head gradient modification and dynamic fusion on and off, with the paper's
    rows; a sentence when the main grid's MLA or the HGM-off variant has no run at missing rate 0."""
    modalities, paper = ctx.modalities, ctx.paper
    variant = hgm_off_experiment(ctx.experiments)
    t3 = None if variant is None else table3(ctx.runs_of_kind("main"), ctx.runs_of(variant), modalities)
    if t3 is None:
        return [
            "MLA ablations (Table 3 analogue): need MLA at missing rate 0 in the main grid and a fidelity "
            "variant whose only change is `head_gradient_modification: off`, at missing rate 0.",
            "",
        ]
    unimodal = columns(modalities)[:-1]
    rows = [
        [
            hgm,
            df,
            *[md.pm(row[f"{c}_mean"], row[f"{c}_std"]) for c in (*unimodal, "multi")],
            *([_paper_cell(paper.row(paper.table3, (hgm, df), modalities))] if paper.table3 else []),
        ]
        for (hgm, df), row in t3.iterrows()
    ]
    return [
        "### MLA ablations (Table 3 analogue)",
        "",
        "Head gradient modification (HGM, eq. 3-5) and dynamic fusion (DF, eq. 6-8) on and off, missing "
        f"rate 0. HGM off: the fidelity variant `{variant.name}`; DF off: the average of the unimodal "
        "predictions, measured on the same runs (fusion acts after training).",
        "",
        *md.table(
            [
                "HGM",
                "DF",
                *[f"{m} acc" for m in modalities],
                "multimodal acc",
                *_paper_header(paper, paper.table3, modalities),
            ],
            rows,
        ),
        "",
    ]
