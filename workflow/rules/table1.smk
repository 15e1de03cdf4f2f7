rule table1_corpus:
    """The Table 1 analogue of one audio-video corpus (mlaflow.pipeline.table1): the whole workflow again, in its own
    folder, on the config derived from this one; that workflow decides what in it is stale (its own records).
    """
    input:
        config=table1.config_path("{kind}"),
        # what the inner workflow runs: its rules, its schema and the whole package (it reruns only what changed)
        workflow=[os.path.relpath(WORKFLOW_DIR / "Snakefile"), *TABLE1_WORKFLOW_FILES],
        code=TABLE1_CODE,
    output:
        metrics=table1.folder("{kind}") + "/reports/metrics.json",
        report=table1.folder("{kind}") + "/reports/report.md",
    log:
        "logs/table1/{kind}.log",
    benchmark:
        "benchmarks/table1/{kind}.tsv"
    threads: workflow.cores
    params:
        snakefile=os.path.relpath(WORKFLOW_DIR / "Snakefile"),
        folder=lambda wildcards: table1.folder(wildcards.kind),
    shell:
        'snakemake -s "$PWD"/{params.snakefile:q} -d {params.folder:q} --configfile "$PWD"/{input.config:q}'
        " --replace-workflow-config --cores {threads} all > {log:q} 2>&1"
