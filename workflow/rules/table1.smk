rule table1_corpus:
    """The Table 1 (or Table 4) analogue of one corpus (mlaflow.pipeline.table1): the whole workflow again, in its own
    folder, on the config derived from this one (and this one's runtime settings, apart: they rerun nothing); that
    workflow decides what in it is stale (its own records). Its outputs are touched, and its time recorded, after
    every run: an inner workflow with nothing to do leaves its files as they were."""
    input:
        config=table1.config_path("{entry}"),
        # what the inner workflow runs: its rules, its schema and the code its jobs run (it reruns only what changed)
        workflow=[os.path.relpath(WORKFLOW_DIR / "Snakefile"), *TABLE1_WORKFLOW_FILES],
        code=TABLE1_CODE,
    output:
        metrics=os.path.join(table1.folder("{entry}"), "reports", "metrics.json"),
        report=os.path.join(table1.folder("{entry}"), "reports", "report.md"),
        duration=table1.duration_path("{entry}"),
    log:
        "logs/table1/{entry}.log",
    # the whole machine (its inner workflow's --cores), but never more CPUs than a node has: under a cluster
    # executor workflow.cores is unbounded (set table1_corpus's threads and resources in the profile there)
    threads: min(workflow.cores, os.cpu_count() or 1)
    params:
        folder=lambda wildcards: table1.folder(wildcards.entry),
        # beside the log, not in the stage's DVC output: runtime settings change no result (they come from the
        # environment, MLAFLOW_RUNTIME, not from a param: a changed param would rerun the job)
        runtime_file=lambda wildcards: f"logs/table1/{wildcards.entry}.runtime.json",
    shell:
        "mkdir -p {params.folder:q} logs/table1"
        ' && printf \'{{"runtime": %s}}\' "$MLAFLOW_RUNTIME" > {params.runtime_file:q}'
        " && start=$(date +%s)"
        # the inner workflow runs in its folder: the files it is given are named by their absolute paths
        ' && snakemake -s "$(realpath {input.workflow[0]:q})" -d {params.folder:q} --replace-workflow-config'
        ' --configfile "$(realpath {input.config:q})" "$(realpath {params.runtime_file:q})"'
        " --cores {threads} all > {log:q} 2>&1"
        " && touch {output.metrics:q} {output.report:q}"
        " && printf '{{\"seconds\": %s}}\\n' $(( $(date +%s) - start )) > {output.duration:q}"
