rule train:
    """All seeds x folds of one method at one missing rate, in one process (one metrics JSON per run)."""
    input:
        manifest="data/manifest/manifest.csv",
        features=[feature_path(m) for m in MODALITIES],
        folds="data/splits/folds.csv",
        masks="data/splits/masks/missing_{rate}.h5",
        code=code("data", "features", "methods", "train"),
    output:
        run_files("{method}", "{rate}"),
    params:
        method=method_cfg,
        train=config["train"],
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
        "{MLAFLOW} train --method {wildcards.method} --missing-rate {wildcards.rate}"
        " --manifest {input.manifest} --features {input.features} --folds {input.folds} --masks {input.masks}"
        " --out {output} > {log} 2>&1"
