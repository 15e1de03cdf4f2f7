rule train:
    """All seeds x folds of one method at one missing rate, in one process (one metrics JSON per run)."""
    input:
        manifest="data/manifest/manifest.csv",
        features=[feature_path(m) for m in MODALITIES],
        folds="data/splits/folds.csv",
        masks=variant_masks,
        code=code("data", "features", "methods", "train"),
    output:
        run_files(P.PAPER_VARIANT, "{method}", "{rate}"),
    params:
        variant=variant_of,
        method=method_cfg,
        train=variant_train_cfg,
    threads: config["train"]["threads"]
    resources:
        gpu=GPUS,
        mem_mb=4000,
        runtime=60,
    log:
        "logs/train/{method}/missing_{rate}.log",
    benchmark:
        "benchmarks/train/{method}/missing_{rate}.tsv"
    shell:
        "{MLAFLOW} train --variant {params.variant} --method {wildcards.method} --missing-rate {wildcards.rate}"
        " --manifest {input.manifest} --features {input.features} --folds {input.folds} --masks {input.masks}"
        " --out {output} > {log} 2>&1"


use rule train as train_variant with:
    # a fidelity variant (params.yaml `fidelity`): MLA or a protocol method with the variant's overrides
    output:
        run_files("{variant}", "{method}", "{rate}"),
    log:
        "logs/fidelity/{variant}/{method}/missing_{rate}.log",
    benchmark:
        "benchmarks/fidelity/{variant}/{method}/missing_{rate}.tsv"
