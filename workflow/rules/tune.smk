rule tune:
    """One worker of a method's tuning study (runtime.tuning_workers of them share it, in parallel on a cluster): Optuna
    trials scored on validation accuracy only, until the study holds tuning.trials completed trials."""
    input:
        config="data/tuning/{method}.config.json",
        manifest="data/manifest/manifest.csv",
        features=FEATURE_FILES,
        folds="data/splits/folds.csv",
        masks=tuning_masks,
        code=tune_code,
    output:
        "data/tuning/{method}/worker{worker}.json",
    log:
        "logs/tune/{method}/worker{worker}.log",
    benchmark:
        "benchmarks/tune/{method}/worker{worker}.tsv"
    wildcard_constraints:
        worker=r"\d+",
    threads: 1
    resources:
        gpu=0,
        mem_mb=4000,
        runtime=120,
    params:
        journal=tuning_journal,
    shell:
        "mlaflow tune --config {input.config:q} --worker {wildcards.worker:q} --manifest {input.manifest:q}"
        " --features {input.features:q} --folds {input.folds:q} --masks {input.masks:q} --journal {params.journal:q}"
        " --code {input.code:q} --threads {threads} --out {output:q} > {log:q} 2>&1"


rule tune_select:
    """A method's chosen values: the best of its study's first tuning.trials completed trials (the training jobs
    of the method take them as input)."""
    input:
        config="data/tuning/{method}.config.json",
        workers=study_record,
        code=code("mlaflow.tune.study"),
    output:
        "data/tuning/{method}.json",
    log:
        "logs/tune/{method}/select.log",
    params:
        journal=tuning_journal,
    shell:
        "mlaflow tune-select --config {input.config:q} --workers {input.workers:q} --journal {params.journal:q}"
        " --out {output:q} > {log:q} 2>&1"


rule tuning_summary:
    """The tuning stage's DVC metrics: every method's chosen values, validation accuracy tuned and untuned."""
    input:
        config="data/tuning/summary.config.json",
        chosen=TUNED_FILES,
        code=code("mlaflow.tune.study"),
    output:
        report_outputs("tuning_summary"),
    log:
        "logs/tuning_summary.log",
    shell:
        "mlaflow tuning-summary --config {input.config:q} --chosen {input.chosen:q} --out {output:q} > {log:q} 2>&1"
