"""Every file the report jobs write, declared once: `OUTPUTS`.

An `Output` says where the file goes (`name`, inside the report folder `reports/`), which Snakemake rule
writes it, which DVC stage versions it and as what (`kind`), and whether `snakemake --report
reports/report.html` shows it (its category and caption, an rst file in workflow/report/). Everything else
reads it from here:

- workflow/rules/common.smk: the outputs of the rules `summary`, `build_report` and `tuning_summary`
  (`outputs_of`), flagged with Snakemake's report() where they have a category, and the stage targets;
- the report's modules: the paths they write and the figures report.md links (`Output.name`, `Output.at`);
- tests/test_catalog.py: dvc.yaml declares exactly these outputs under `reports/`, each in its stage as its
  kind says (metrics -> `metrics`; plot -> `plots`, with its x, y, title and `PLOT_TEMPLATE`; table, figure,
  page -> `outs`), and every figure among the top-level `plots`; the browser test (tests/test_workflow.py)
  checks that the HTML report lists exactly `REPORT_ITEMS`.

A plot is long-format data (`write_series` in report/plots.py): columns x, `SERIES`, y, one row per series and
x, drawn by `PLOT_TEMPLATE` with one line per series. dvc.yaml therefore names no method, variant or other
series: a new method or fidelity variant is a new line of the same plot. A new figure or table of the report
belongs here (and in dvc.yaml, which the test keeps in step), with its caption file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPORTS = "reports"  # the report jobs' --out-dir, relative to the working directory
KINDS = ("metrics", "plot", "table", "figure", "page")
SERIES = "series"  # a plot's column naming its line (a method, a variant, a paper curve)
PLOT_TEMPLATE = (
    "workflow/plots/series.json"  # DVC's plot template: one line per series (path from the repo root)
)


@dataclass(frozen=True)
class Output:
    name: str  # inside the report folder
    rule: str  # the Snakemake rule that writes it
    stage: str  # the DVC stage whose output it is
    kind: str  # one of KINDS
    category: str | None = (
        None  # snakemake --report: its category (numbered to keep their order); None: not shown
    )
    caption: str | None = None  # snakemake --report: the rst file in workflow/report/
    x: str | None = None  # a plot's x column
    y: str | None = None  # a plot's y column
    title: str | None = None  # a plot's title

    @property
    def path(self) -> str:
        """Relative to the working directory."""
        return f"{REPORTS}/{self.name}"

    def at(self, out_dir: str | Path) -> Path:
        """Its path inside the report folder `out_dir` (the job's --out-dir)."""
        return Path(out_dir) / self.name

    @property
    def columns(self) -> list[str]:
        """A plot's CSV columns."""
        return [self.x, SERIES, self.y]


MAIN, COMPLETE, SUITE = "2. Main grid", "3. Complete modalities", "4. Missing-modality suite"
ISOLATION, FIDELITY = "5. Isolation", "6. Fidelity"

# the main grid's summary (rule summary, stage main_grid)
METRICS = Output("metrics.json", "summary", "main_grid", "metrics", MAIN, "metrics_json.rst")
ACCURACY_CSV = Output(
    "plots/accuracy_vs_missing_rate.csv",
    "summary",
    "main_grid",
    "plot",
    MAIN,
    "accuracy_vs_missing_rate_csv.rst",
    x="missing_rate",
    y="accuracy",
    title="Accuracy (%) against missing rate",
)
ACCURACY_PNG = Output(
    "figures/accuracy_vs_missing_rate.png",
    "summary",
    "main_grid",
    "figure",
    MAIN,
    "accuracy_vs_missing_rate_png.rst",
)

# the report (rule build_report, stage report)
REPORT_MD = Output("report.md", "build_report", "report", "page")
REPORT_PAGE = Output("report_page.html", "build_report", "report", "page", "1. Report", "report_page.rst")
SUITE_JSON = Output(
    "missing_suite.json", "build_report", "report", "metrics", SUITE, "missing_suite_json.rst"
)
FIDELITY_JSON = Output("fidelity.json", "build_report", "report", "metrics", FIDELITY, "fidelity_json.rst")
SUITE_CSV = Output(
    "plots/missing_suite_accuracy.csv",
    "build_report",
    "report",
    "plot",
    SUITE,
    "missing_suite_csv.rst",
    x="missing_rate",
    y="accuracy",
    title="Missing-modality suite: accuracy (%) against missing rate",
)
SHIFT_CSV = Output(  # train rate x test rate: a table, not a line plot
    "plots/test_time_shift.csv", "build_report", "report", "table", SUITE, "test_time_shift_csv.rst"
)
ISOLATION_CSV = Output(
    "plots/isolation.csv",
    "build_report",
    "report",
    "plot",
    ISOLATION,
    "isolation_csv.rst",
    x="training_missing_rate",
    y="accuracy",
    title="Isolation: unimodal accuracy (%) against the training missing share",
)
EFFECTS_CSV = Output(
    "plots/fidelity_effects.csv",
    "build_report",
    "report",
    "plot",
    FIDELITY,
    "fidelity_effects_csv.rst",
    x="missing_rate",
    y="accuracy_difference",
    title="Fidelity: accuracy difference to the paper's MLA (percentage points)",
)
PROTOCOL_CSV = Output(
    "plots/accuracy_vs_missing_rate_by_protocol.csv",
    "build_report",
    "report",
    "plot",
    FIDELITY,
    "by_protocol_csv.rst",
    x="missing_rate",
    y="accuracy",
    title="Accuracy (%) against missing rate under both mask protocols",
)
GAP_PNG = Output(
    "figures/modality_gap.png", "build_report", "report", "figure", COMPLETE, "modality_gap_png.rst"
)
SUITE_PNG = Output(
    "figures/missing_suite_accuracy.png", "build_report", "report", "figure", SUITE, "missing_suite_png.rst"
)
ISOLATION_PNG = Output(
    "figures/isolation.png", "build_report", "report", "figure", ISOLATION, "isolation_png.rst"
)
PROTOCOL_PNG = Output(
    "figures/accuracy_vs_missing_rate_by_protocol.png",
    "build_report",
    "report",
    "figure",
    FIDELITY,
    "by_protocol_png.rst",
)

# the tuning stage's metrics (rule tuning_summary, stage tuning)
TUNING_JSON = Output("tuning.json", "tuning_summary", "tuning", "metrics", "7. Tuning", "tuning_json.rst")

OUTPUTS: tuple[Output, ...] = (
    METRICS,
    ACCURACY_CSV,
    ACCURACY_PNG,
    REPORT_MD,
    REPORT_PAGE,
    SUITE_JSON,
    FIDELITY_JSON,
    SUITE_CSV,
    SHIFT_CSV,
    ISOLATION_CSV,
    EFFECTS_CSV,
    PROTOCOL_CSV,
    GAP_PNG,
    SUITE_PNG,
    ISOLATION_PNG,
    PROTOCOL_PNG,
    TUNING_JSON,
)


def outputs_of(rule: str) -> list[Output]:
    """The outputs a rule writes, in catalog order."""
    return [output for output in OUTPUTS if output.rule == rule]


# what `snakemake --report` shows: path -> (category, caption file in workflow/report/)
REPORT_ITEMS: dict[str, tuple[str, str]] = {
    output.path: (output.category, output.caption) for output in OUTPUTS if output.category
}
