"""The report's two jobs, each reading the stage indexes the workflow wrote (see `mlaflow.report.context`):

- `build_summary`: the main grid's DVC metrics and plots (reports/metrics.json,
  reports/plots/accuracy_vs_missing_rate.csv, reports/figures/accuracy_vs_missing_rate.png);
- `build_report`: reports/report.md, the section after section of `SECTIONS`, each of which also writes its
  own figures, plots data and metrics files (reports/missing_suite.json, reports/fidelity.json, ...); and
  reports/report_page.html, the same as one self-contained page (`mlaflow.report.page`).

A section is a function of one `ReportContext` (runs, experiments, config, paper figures, output folder,
feature and mask provenance) returning its markdown lines. A section whose data is missing (a stage not run,
no run at missing rate 0, no MLA in the main grid) says so in a sentence instead of failing. Aggregation
everywhere: for each seed the mean over folds, then mean ± std over seeds (`mlaflow.report.aggregate`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mlaflow.io import write_text
from mlaflow.report import appendix, catalog, claims, complete, fidelity, grid, suite, table1, tuning
from mlaflow.report.context import ReportContext, load_context
from mlaflow.report.page import render_page

Section = Callable[[ReportContext], list[str]]

# report.md, in order
SECTIONS: tuple[Section, ...] = (
    grid.header,  # title, read-first note, how cells are computed
    grid.accuracy_table,  # main accuracy table beside the paper's Table 2
    grid.all_metrics,  # every metric under the paper's settings
    tuning.section,  # each method's search space, budget, chosen values, validation tuned against untuned
    complete.section,  # Table 1, laziness, modality gap, Table 3
    suite.suite_section,  # Table 2, the paper's claim, test-time shift
    suite.isolation_section,  # Figure 2 analogue
    fidelity.section,  # effects, optimism of test-set selection, both mask protocols
    table1.section,  # Table 1 on the paper's other corpora (their own workflows' reports)
    table1.table4_section,  # Table 4: CLIP's towers on Food-101, beside the paper's
    claims.section,  # each claim of the paper, judged per corpus from paired runs
    appendix.masks,
    appendix.provenance,
)


def build_summary(config: dict, index_paths: list[str], paper_path: str, out_dir: Path) -> None:
    """The main grid's DVC metrics and plots. `config`: the summary job's config, {"methods": [main-grid
    methods], "modalities": [...], "paper_dataset": "IEMOCAP" or None}."""
    grid.write_summary(load_context(config, index_paths, paper_path, Path(out_dir)))


def render(ctx: ReportContext, sections: tuple[Section, ...] = SECTIONS) -> str:
    return "\n".join(line for section in sections for line in section(ctx))


def build_report(
    config: dict,
    index_paths: list[str],
    paper_path: str,
    feature_paths: list[str],
    mask_paths: list[str],
    out_dir: Path,
    tuned_paths: list[str] = (),
) -> None:
    """reports/report.md and the files its sections write. `config`: the report job's config,
    {"config": <the validated params config>, "modalities": [...], "classes": [...], "paper_dataset": ...}."""
    ctx = load_context(config, index_paths, paper_path, Path(out_dir), feature_paths, mask_paths, tuned_paths)
    markdown = render(ctx)
    write_text(catalog.REPORT_MD.at(ctx.out_dir), markdown)
    # after the sections, which write the figures the page embeds
    write_text(catalog.REPORT_PAGE.at(ctx.out_dir), render_page(markdown, ctx.out_dir))
