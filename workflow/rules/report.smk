rule summary:
    """The main grid's DVC metrics and plots: mean +- std over seeds per method and missing rate."""
    input:
        config="reports/summary.config.json",
        index=INDEX_FILES["main_grid"],
        paper=PAPER_RESULTS,
        code=code("mlaflow.report.build"),
    output:
        SUMMARY_OUTPUTS,
    log:
        "logs/summary.log",
    benchmark:
        "benchmarks/summary.tsv"
    shell:
        "{MLAFLOW} summary --config {input.config} --indexes {input.index} --paper {input.paper}"
        " --out-dir reports > {log} 2>&1"


rule build_report:
    """reports/report.md: the main tables beside the paper's, the suite, isolation and fidelity sections, masks
    and provenance; the suite's and the fidelity experiment's metrics and plots."""
    input:
        config="reports/report.config.json",
        indexes=list(INDEX_FILES.values()),
        features=FEATURE_FILES,
        masks=MASK_FILES,
        paper=PAPER_RESULTS,
        code=code("mlaflow.report.build"),
    output:
        REPORT_OUTPUTS,
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    shell:
        "{MLAFLOW} report --config {input.config} --indexes {input.indexes} --paper {input.paper}"
        " --features {input.features} --masks {input.masks} --out-dir reports > {log} 2>&1"
