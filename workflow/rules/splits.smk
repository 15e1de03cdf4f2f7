rule folds:
    """Leave-one-session-out folds, validation drawn from the training sessions."""
    input:
        config="data/splits/folds.config.json",
        manifest="data/manifest/manifest.csv",
        code=code("mlaflow.data.folds"),
    output:
        "data/splits/folds.csv",
    log:
        "logs/folds.log",
    benchmark:
        "benchmarks/folds.tsv"
    shell:
        "mlaflow folds --config {input.config:q} --manifest {input.manifest:q} --out {output:q} > {log:q} 2>&1"


rule masks:
    """Missing-modality masks of one specification (data/splits/masks/<folder>) and missing rate, one per seed."""
    input:
        config="data/splits/masks/{folder}.config.json",
        manifest="data/manifest/manifest.csv",
        code=code("mlaflow.data.masks"),
    output:
        "data/splits/masks/{folder}/missing_{rate}.h5",
    log:
        "logs/masks/{folder}/missing_{rate}.log",
    benchmark:
        "benchmarks/masks/{folder}/missing_{rate}.tsv"
    wildcard_constraints:
        folder="|".join(MASK_SPECS),
    shell:
        "mlaflow masks --config {input.config:q} --manifest {input.manifest:q} --missing-rate {wildcards.rate:q}"
        " --out {output:q} > {log:q} 2>&1"
