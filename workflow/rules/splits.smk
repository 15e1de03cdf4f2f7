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
    """Missing-modality masks of one protocol and missing rate, one per seed, same rate on train/val/test."""
    input:
        manifest="data/manifest/manifest.csv",
        code=code("data"),
    output:
        "data/splits/masks/{protocol}/missing_{rate}.h5",
    params:
        all_missing=config["masks"]["all_missing"],
        seeds=SEEDS,
    log:
        "logs/masks/{protocol}/missing_{rate}.log",
    benchmark:
        "benchmarks/masks/{protocol}/missing_{rate}.tsv"
    shell:
        "{MLAFLOW} masks --manifest {input.manifest} --protocol {wildcards.protocol} --missing-rate {wildcards.rate}"
        " --out {output} > {log} 2>&1"
