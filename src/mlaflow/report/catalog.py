"""What `snakemake --report reports/report.html` shows: the report's figures and tables, each in a category,
with a caption (an rst file in workflow/report/).

The report rules flag these outputs with Snakemake's report() (workflow/rules/common.smk, `report_outputs`);
the browser test (tests/test_workflow.py) checks that the HTML report lists exactly these and that each loads.
A new figure or table of the report belongs here, with its caption file.
"""

# file -> (category, caption file in workflow/report/); categories are numbered to keep their order
REPORT_ITEMS: dict[str, tuple[str, str]] = {
    "reports/report_page.html": ("1. Report", "report_page.rst"),
    "reports/figures/accuracy_vs_missing_rate.png": ("2. Main grid", "accuracy_vs_missing_rate_png.rst"),
    "reports/plots/accuracy_vs_missing_rate.csv": ("2. Main grid", "accuracy_vs_missing_rate_csv.rst"),
    "reports/metrics.json": ("2. Main grid", "metrics_json.rst"),
    "reports/figures/modality_gap.png": ("3. Complete modalities", "modality_gap_png.rst"),
    "reports/figures/missing_suite_accuracy.png": ("4. Missing-modality suite", "missing_suite_png.rst"),
    "reports/plots/missing_suite_accuracy.csv": ("4. Missing-modality suite", "missing_suite_csv.rst"),
    "reports/plots/test_time_shift.csv": ("4. Missing-modality suite", "test_time_shift_csv.rst"),
    "reports/missing_suite.json": ("4. Missing-modality suite", "missing_suite_json.rst"),
    "reports/figures/isolation.png": ("5. Isolation", "isolation_png.rst"),
    "reports/plots/isolation.csv": ("5. Isolation", "isolation_csv.rst"),
    "reports/plots/fidelity_effects.csv": ("6. Fidelity", "fidelity_effects_csv.rst"),
    "reports/figures/accuracy_vs_missing_rate_by_protocol.png": ("6. Fidelity", "by_protocol_png.rst"),
    "reports/plots/accuracy_vs_missing_rate_by_protocol.csv": ("6. Fidelity", "by_protocol_csv.rst"),
    "reports/fidelity.json": ("6. Fidelity", "fidelity_json.rst"),
    "reports/tuning.json": ("7. Tuning", "tuning_json.rst"),
}
