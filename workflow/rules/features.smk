rule build_encoder:
    """Build a small randomly initialised (not pretrained) encoder of the real architecture, saved with
    save_pretrained so that extraction loads it exactly like pretrained weights."""
    input:
        config="data/models/{modality}.config.json",
        code=encoder_code,
    output:
        directory("data/models/{modality}"),
    log:
        "logs/build_encoder/{modality}.log",
    benchmark:
        "benchmarks/build_encoder/{modality}.tsv"
    shell:
        "mlaflow build-encoder --config {input.config:q} --out {output:q} > {log:q} 2>&1"


rule extract:
    """Utterance-level features of one modality into HDF5 (batched, length-sorted, resumable)."""
    input:
        config="data/features/{modality}.config.json",
        manifest="data/manifest/manifest.csv",
        model=modality_model,
        code=extract_code,
    output:
        "data/features/{modality}.h5",
    log:
        "logs/extract/{modality}.log",
    benchmark:
        "benchmarks/extract/{modality}.tsv"
    threads: 1
    resources:
        gpu=0,
        mem_mb=8000,
        runtime=120,
    shell:
        "mlaflow extract --config {input.config:q} --manifest {input.manifest:q} --model {input.model:q}"
        " --out {output:q} --threads {threads} > {log:q} 2>&1"
