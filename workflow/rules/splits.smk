rule folds:
    """Leave-one-session-out folds, validation drawn from the training sessions."""
    input:
        manifest="data/manifest/manifest.csv",
        code=code("data"),
    output:
        "data/splits/folds.csv",
    params:
        splits=config["splits"],
    log:
        "logs/folds.log",
    benchmark:
        "benchmarks/folds.tsv"
    shell:
        "{MLAFLOW} folds --manifest {input.manifest} --out {output} > {log} 2>&1"


rule masks:
    """Missing-modality masks of one missing rate, one per seed, same rate on train/val/test."""
    input:
        manifest="data/manifest/manifest.csv",
        code=code("data"),
    output:
        "data/splits/masks/missing_{rate}.h5",
    params:
        masks=config["masks"],
        seeds=SEEDS,
    log:
        "logs/masks/missing_{rate}.log",
    benchmark:
        "benchmarks/masks/missing_{rate}.tsv"
    shell:
        "{MLAFLOW} masks --manifest {input.manifest} --missing-rate {wildcards.rate} --out {output} > {log} 2>&1"
