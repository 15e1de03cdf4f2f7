"""The workflow's plumbing: the config (params, schema), the experiment table, every job's config file, the code
inputs of the rules (codedeps), and what DVC stages run around Snakemake (settle, integrity). The Snakefile and
the CLI use it; the steps below it (data, features, methods, train, tune) never import it, and report reads
only the experiment table."""
