rule build_encoder:
    """Build a small randomly initialised (not pretrained) encoder of the real architecture, saved with
    save_pretrained so that extraction loads it exactly like pretrained weights."""
    input:
        code("features"),
    output:
        directory("data/models/{modality}"),
    params:
        cfg=modality_cfg,
        seed=config["features"]["embedded_seed"],
    log:
        "logs/build_encoder/{modality}.log",
    benchmark:
        "benchmarks/build_encoder/{modality}.tsv"
    shell:
        "{MLAFLOW} build-encoder --modality {wildcards.modality} --out {output} > {log} 2>&1"


rule extract:
    """Utterance-level features of one modality into HDF5 (batched, length-sorted, resumable)."""
    input:
        manifest="data/manifest/manifest.csv",
        model=modality_model,
        code=code("features"),
    output:
        "data/features/{modality}.h5",
    params:
        cfg=modality_cfg,
        device=config["features"]["device"],
        half_precision=config["features"]["half_precision"],
    threads: 1
    resources:
        gpu=GPUS,
        mem_mb=8000,
        runtime=120,
    log:
        "logs/extract/{modality}.log",
    benchmark:
        "benchmarks/extract/{modality}.tsv"
    shell:
        "{MLAFLOW} extract --modality {wildcards.modality} --manifest {input.manifest} --model {input.model}"
        " --out {output} --threads {threads} > {log} 2>&1"
