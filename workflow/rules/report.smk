rule report:
    """Tables (mean +- std over seeds), plots and provenance, beside the paper's figures."""
    input:
        runs=ALL_RUN_FILES,
        features=[feature_path(m) for m in MODALITIES],
        masks=MASK_FILES,
        paper=config["report"]["paper_results"],
        code=code("report"),
    output:
        REPORT_OUTPUTS,
    params:
        report=config["report"],
        methods=METHODS,
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    shell:
        "{MLAFLOW} report --runs {input.runs} --features {input.features} --masks {input.masks}"
        " --out-dir reports > {log} 2>&1"
