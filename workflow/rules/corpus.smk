if EMBEDDED:

    rule corpus:
        """Generate the embedded corpus in the IEMOCAP release layout (deterministic, seeded)."""
        input:
            code("data"),
        output:
            directory(CORPUS_ROOT),
        params:
            embedded=config["corpus"]["embedded"],
        threads: 2
        log:
            "logs/corpus.log",
        benchmark:
            "benchmarks/corpus.tsv"
        shell:
            "{MLAFLOW} corpus --out {output} --threads {threads} > {log} 2>&1"


rule manifest:
    """Parse the IEMOCAP layout into a manifest (one row per kept utterance)."""
    input:
        corpus=CORPUS_ROOT,
        code=code("data"),
    output:
        "data/manifest/manifest.csv",
    params:
        label_setup=config["corpus"]["label_setup"],
    log:
        "logs/manifest.log",
    benchmark:
        "benchmarks/manifest.tsv"
    shell:
        "{MLAFLOW} manifest --corpus-root {input.corpus} --out {output} > {log} 2>&1"
