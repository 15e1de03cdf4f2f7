rule summary:
    """The main grid's DVC metrics and plots: mean and std over seeds per method and missing rate."""
    input:
        config="reports/summary.config.json",
        index=INDEX_FILES["main_grid"],
        paper=PAPER_RESULTS,
        code=code("mlaflow.report.build"),
    output:
        report_outputs("summary"),
    log:
        "logs/summary.log",
    benchmark:
        "benchmarks/summary.tsv"
    shell:
        "mlaflow summary --config {input.config:q} --indexes {input.index:q} --paper {input.paper:q}"
        " --out-dir reports > {log:q} 2>&1"


rule build_report:
    """reports/report.md: the main tables beside the paper's, the suite, isolation and fidelity sections, masks
    and provenance; the suite's and the fidelity experiment's metrics and plots."""
    input:
        config="reports/report.config.json",
        indexes=list(INDEX_FILES.values()),
        features=FEATURE_FILES,
        masks=MASK_FILES,
        tuned=TUNED_FILES,
        paper=PAPER_RESULTS,
        # the main grid's figure: report.md shows it, report_page.html embeds it
        summary_figure=catalog.ACCURACY_PNG.path,
        # the Table 1 and Table 4 analogues' reports and metrics (mlaflow.report.table1 gathers them)
        table1=[
            p for p in STAGE_TARGETS["table1"] if p.endswith(("report.md", "duration.json", "metrics.json"))
        ],
        # the faces cut from the dialog videos: the provenance section shows their quality
        faces=[corpora.FACES_DIR] if corpora.cuts_faces(config) else [],
        code=report_code(),
    output:
        report_outputs("build_report"),
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    shell:
        "mlaflow report --config {input.config:q} --indexes {input.indexes:q} --paper {input.paper:q}"
        " --features {input.features:q} --masks {input.masks:q} --tuned {input.tuned:q} --out-dir reports > {log:q} 2>&1"
