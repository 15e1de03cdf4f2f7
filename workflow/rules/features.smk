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


# runtime.extraction_shards: with N > 1, N `extract` jobs per modality each encode every N-th batch of the
# length-sorted utterances into a shard store (temporary: removed once merged), and `merge_features` streams them
# into the modality's store, the same as one job writes (mlaflow/features/extract.py, merge.py). With 1, the one
# `extract` job as before. Changing it re-extracts (the jobs and their commands differ), to the same features.
EXTRACTION_SHARDS = config["runtime"]["extraction_shards"]


if EXTRACTION_SHARDS == 1:

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

else:

    rule extract:
        """One shard of a modality's extraction: every N-th batch of the length-sorted utterances, into a store of
        their rows (resumable from its .partial.h5, like an unsharded store)."""
        input:
            config="data/features/{modality}.config.json",
            manifest="data/manifest/manifest.csv",
            model=modality_model,
            code=extract_code,
        output:
            temp(f"data/features/shards/{{modality}}/{{shard}}of{EXTRACTION_SHARDS}.h5"),
        log:
            f"logs/extract/{{modality}}/{{shard}}of{EXTRACTION_SHARDS}.log",
        benchmark:
            f"benchmarks/extract/{{modality}}/{{shard}}of{EXTRACTION_SHARDS}.tsv"
        wildcard_constraints:
            shard=r"[1-9]\d*",
        threads: 1
        resources:
            gpu=0,
            mem_mb=8000,
            runtime=120,
        params:
            shards=EXTRACTION_SHARDS,
        shell:
            "mlaflow extract --config {input.config:q} --manifest {input.manifest:q} --model {input.model:q}"
            " --out {output:q} --threads {threads} --shard {wildcards.shard} --shards {params.shards}"
            " > {log:q} 2>&1"

    rule merge_features:
        """The shard stores of a modality streamed into its feature store (checked: every utterance of the
        manifest once, the same params and encoder), the same store as one extraction job writes."""
        input:
            config="data/features/{modality}.config.json",
            manifest="data/manifest/manifest.csv",
            shards=expand(
                "data/features/shards/{{modality}}/{shard}of{shards}.h5",
                shard=range(1, EXTRACTION_SHARDS + 1),
                shards=EXTRACTION_SHARDS,
            ),
            code=code("mlaflow.features.merge"),
        output:
            "data/features/{modality}.h5",
        log:
            "logs/merge_features/{modality}.log",
        benchmark:
            "benchmarks/merge_features/{modality}.tsv"
        threads: 1
        resources:
            mem_mb=2000,
        shell:
            "mlaflow merge-features --config {input.config:q} --manifest {input.manifest:q}"
            " --shards {input.shards:q} --out {output:q} > {log:q} 2>&1"
