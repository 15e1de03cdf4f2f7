"""The report: stage indexes and runs -> reports/metrics.json, report.md, plots data, figures.

    build.py      the two entry points (build_summary, build_report) and SECTIONS, the ordered list of sections
    context.py    loading, once: stage indexes -> experiments, runs -> one table, the paper's figures, provenance
    aggregate.py  seed_stats: per seed the mean over folds, then mean ± std over seeds (used everywhere)
    markdown.py   tables and "mean ± std" cells;  plots.py  figures, errorbar curves, atomic PNG/CSV writes
    grid.py       summary files; sections: read-first header, accuracy against missing rate, all metrics
    complete.py   Table 1 analogue, laziness statement, modality gap, Table 3 analogue
    suite.py      Table 2 analogue and the paper's claim, test-time shift; the isolation analysis
    fidelity.py   the paper's MLA against its released code, optimism of test-set selection, both mask protocols
    appendix.py   masks and provenance
    page.py       report_page.html: report.md as one self-contained page
    catalog.py    every file the report writes, once: its rule, DVC stage and kind, its `snakemake --report`
                  category and caption (REPORT_ITEMS)

A section is a function of a `context.ReportContext` returning its markdown lines; it writes its own files, at
the paths of catalog.py.
"""
