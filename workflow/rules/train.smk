rule train:
    """The runs of one method at one missing rate that train.job_group puts in one job (default: all seeds x
    folds), in one process, stacked (one metrics JSON per run)."""
    input:
        manifest="data/manifest/manifest.csv",
        features=[feature_path(m) for m in MODALITIES],
        folds="data/splits/folds.csv",
        masks=variant_masks,
        shift_masks=shift_masks,
        code=code("data", "features", "methods", "train"),
    output:
        run_files(P.PAPER_VARIANT, "{method}", "{rate}", JOB_SEEDS, JOB_FOLDS),
    params:
        variant=variant_of,
        seeds=job_seeds,
        folds=job_folds,
        method=method_cfg,
        train=variant_train_cfg,
    threads: config["train"]["threads"]
    resources:
        gpu=GPUS,
        mem_mb=4000,
        runtime=60,
    log:
        "logs/train/{method}/missing_{rate}" + JOB_NAME + ".log",
    benchmark:
        "benchmarks/train/{method}/missing_{rate}" + JOB_NAME + ".tsv"
    shell:
        "{MLAFLOW} train --variant {params.variant} --method {wildcards.method} --missing-rate {wildcards.rate}"
        " --seed-list {params.seeds} --fold-list {params.folds} --manifest {input.manifest} --features {input.features}"
        " --folds {input.folds} --masks {input.masks} --shift-masks {input.shift_masks} --out {output} > {log} 2>&1"


use rule train as train_variant with:
    # a fidelity variant (params.yaml `fidelity`): MLA or a protocol method with the variant's overrides
    output:
        run_files("{variant}", "{method}", "{rate}", JOB_SEEDS, JOB_FOLDS),
    log:
        "logs/fidelity/{variant}/{method}/missing_{rate}" + JOB_NAME + ".log",
    benchmark:
        "benchmarks/fidelity/{variant}/{method}/missing_{rate}" + JOB_NAME + ".tsv"


use rule train as train_suite with:
    # the missing-modality suite (params.yaml `missing_suite`, Table 2): the paper's settings, other methods
    output:
        run_files(P.PAPER_VARIANT, "{method}", "{rate}", JOB_SEEDS, JOB_FOLDS, root=SUITE_ROOT),
    log:
        "logs/suite/{method}/missing_{rate}" + JOB_NAME + ".log",
    benchmark:
        "benchmarks/suite/{method}/missing_{rate}" + JOB_NAME + ".tsv"


use rule train as train_isolation with:
    # the isolation analysis (params.yaml `isolation`, Figure 2): one modality masked in training data only
    output:
        run_files("{variant}", "{method}", "{rate}", JOB_SEEDS, JOB_FOLDS, root="data/isolation/{variant}"),
    log:
        "logs/isolation/{variant}/{method}/missing_{rate}" + JOB_NAME + ".log",
    benchmark:
        "benchmarks/isolation/{variant}/{method}/missing_{rate}" + JOB_NAME + ".tsv"
