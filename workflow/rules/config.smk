rule job_config:
    """A job's config file: exactly the keys that job computes from (see JOB_CONFIGS in common.smk). Written in
    the Snakemake process (a localrule): it is the config Snakemake was given, nothing else."""
    output:
        "{path}.config.json",
    params:
        content=job_config,
    wildcard_constraints:
        path="|".join(re.escape(p[: -len(".config.json")]) for p in JOB_CONFIGS),
    run:
        from mlaflow.io import write_json

        write_json(output[0], params.content, sort_keys=False)
