rule summary:
    """The main grid's DVC metrics and plots: mean +- std over seeds per method and missing rate."""
    input:
        runs=MAIN_RUN_FILES,
        paper=config["report"]["paper_results"],
        code=code("report"),
    output:
        SUMMARY_OUTPUTS,
    params:
        report=config["report"],
        methods=METHODS,
    log:
        "logs/summary.log",
    benchmark:
        "benchmarks/summary.tsv"
    shell:
        "{MLAFLOW} summary --runs {input.runs} --out-dir reports > {log} 2>&1"


rule report:
    """reports/report.md: the main tables beside the paper's, the fidelity section, masks and provenance."""
    input:
        runs=MAIN_RUN_FILES + SUITE_RUN_FILES + ISOLATION_RUN_FILES + FIDELITY_RUN_FILES,
        features=[feature_path(m) for m in MODALITIES],
        masks=MASK_FILES,
        paper=config["report"]["paper_results"],
        code=code("report"),
    output:
        REPORT_OUTPUTS,
    params:
        report=config["report"],
        methods=METHODS,
        fidelity=config["fidelity"],
        missing_suite=config["missing_suite"],
        isolation=config["isolation"],
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    shell:
        "{MLAFLOW} report --runs {input.runs} --features {input.features} --masks {input.masks}"
        " --out-dir reports > {log} 2>&1"
