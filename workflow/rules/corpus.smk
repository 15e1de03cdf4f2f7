if CORPUS.generator_module:

    rule corpus:
        """Generate the embedded corpus in the IEMOCAP release layout (deterministic, seeded)."""
        input:
            config=f"{CORPUS_ROOT}.config.json",
            code=code(CORPUS.generator_module),
        output:
            directory(CORPUS_ROOT),
        threads: 2
        log:
            "logs/corpus.log",
        benchmark:
            "benchmarks/corpus.tsv"
        shell:
            "{MLAFLOW} corpus --config {input.config} --out {output} --threads {threads} > {log} 2>&1"


rule manifest:
    """Parse the corpus into a manifest (one row per kept utterance)."""
    input:
        config="data/manifest/manifest.config.json",
        corpus=CORPUS_ROOT,
        code=code("mlaflow.data.manifest", CORPUS.manifest_module),
    output:
        "data/manifest/manifest.csv",
    log:
        "logs/manifest.log",
    benchmark:
        "benchmarks/manifest.tsv"
    shell:
        "{MLAFLOW} manifest --config {input.config} --corpus-root {input.corpus} --out {output} > {log} 2>&1"
