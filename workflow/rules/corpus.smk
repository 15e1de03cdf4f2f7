if CORPUS.generator_module:

    rule corpus:
        """Generate the embedded corpus in its release's layout (IEMOCAP or CREMA-D; deterministic, seeded)."""
        input:
            config=f"{CORPUS_ROOT}.config.json",
            code=code(CORPUS.generator_module),
        output:
            directory(CORPUS_ROOT),
        log:
            "logs/corpus.log",
        benchmark:
            "benchmarks/corpus.tsv"
        threads: 2
        shell:
            "mlaflow corpus --config {input.config:q} --out {output:q} --threads {threads} > {log:q} 2>&1"


if corpora.cuts_faces(config):

    rule faces:
        """Face frames cut from the dialog videos: the speaker's half, sampled in each utterance's window, the
        largest face found by OpenCV's Haar cascade (mlaflow/data/faces.py; resumable per dialog)."""
        input:
            config=f"{corpora.FACES_DIR}.config.json",
            corpus=CORPUS_ROOT,
            code=code("mlaflow.data.faces"),
        output:
            directory(corpora.FACES_DIR),
        log:
            "logs/faces.log",
        benchmark:
            "benchmarks/faces.tsv"
        threads: 2
        shell:
            "mlaflow faces --config {input.config:q} --corpus {input.corpus:q} --out {output:q} --threads {threads}"
            " > {log:q} 2>&1"


rule manifest:
    """Parse the corpus (its tree, or the label table of kind features) into a manifest (one row per utterance)."""
    input:
        config="data/manifest/manifest.config.json",
        source=manifest_source(),
        extra=manifest_inputs(),
        code=code("mlaflow.data.manifest", CORPUS.adapter.split(":")[0]),
    output:
        "data/manifest/manifest.csv",
    log:
        "logs/manifest.log",
    benchmark:
        "benchmarks/manifest.tsv"
    shell:
        "mlaflow manifest --config {input.config:q} --source {input.source:q} --out {output:q} > {log:q} 2>&1"
