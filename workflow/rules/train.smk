if JOB_GROUP == "method":

    rule train:
        """Every run of one method in one experiment (all its missing rates, seeds x folds) in one process, stacked:
        one metrics JSON per run, in the method's folder of the experiment (runtime.job_group: method)."""
        input:
            config=train_config_file,
            manifest="data/manifest/manifest.csv",
            features=FEATURE_FILES,
            folds="data/splits/folds.csv",
            masks=method_masks,
            shift_masks=shift_masks,
            tuned=tuned_values,
            code=train_code,
        output:
            directory("{root}/{method}"),
        log:
            "logs/train/{root}/{method}.log",
        benchmark:
            "benchmarks/train/{root}/{method}.tsv"
        wildcard_constraints:
            root="|".join(re.escape(root) for root in ROOTS),
        # threads and GPUs: a profile's set-threads / set-resources (profiles/gpu-node); never part of a result
        threads: 1
        resources:
            gpu=0,
            mem_mb=4000,
            runtime=60,
        params:
            runs=method_run_files,
        shell:
            "mlaflow train --config {input.config:q} --manifest {input.manifest:q} --features {input.features:q}"
            " --folds {input.folds:q} --masks {input.masks:q} --shift-masks {input.shift_masks:q}"
            " --tuned {input.tuned:q} --code {input.code:q} --threads {threads} --out {params.runs:q} > {log:q} 2>&1"

else:

    rule train:
        """The runs of one method at one missing rate of one experiment that runtime.job_group (cell, seed or run)
        puts in one job, in one process, stacked (one metrics JSON per run)."""
        input:
            config=train_config_file,
            manifest="data/manifest/manifest.csv",
            features=FEATURE_FILES,
            folds="data/splits/folds.csv",
            masks=train_masks,
            shift_masks=shift_masks,
            tuned=tuned_values,
            code=train_code,
        output:
            job_outputs("{root}", "{method}", "{rate}"),
        log:
            f"logs/train/{{root}}/{{method}}/missing_{{rate}}{JOB_NAME}.log",
        benchmark:
            f"benchmarks/train/{{root}}/{{method}}/missing_{{rate}}{JOB_NAME}.tsv"
        wildcard_constraints:
            root="|".join(re.escape(root) for root in ROOTS),
        threads: 1
        resources:
            gpu=0,
            mem_mb=4000,
            runtime=60,
        shell:
            "mlaflow train --config {input.config:q} --manifest {input.manifest:q} --features {input.features:q}"
            " --folds {input.folds:q} --masks {input.masks:q} --shift-masks {input.shift_masks:q}"
            " --tuned {input.tuned:q} --code {input.code:q} --threads {threads} --out {output:q} > {log:q} 2>&1"


rule index:
    """A stage's index: its experiments and every run file, each run's config hash checked against its job's
    config (a run trained under other settings stops here, named). The report reads the indexes."""
    input:
        config="{stage_dir}/index.config.json",
        # the training jobs' outputs (their run files, or with job_group method their folders)
        outputs=stage_outputs_of_dir,
        tuned=index_tuned,
        code=code("mlaflow.train.index"),
    output:
        "{stage_dir}/index.json",
    log:
        "logs/index/{stage_dir}.log",
    wildcard_constraints:
        stage_dir="|".join(STAGE_DIRS.values()),
    params:
        runs=stage_runs_of_dir,
    shell:
        "mlaflow index --config {input.config:q} --runs {params.runs:q} --tuned {input.tuned:q} --out {output:q}"
        " > {log:q} 2>&1"
