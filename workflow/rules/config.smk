rule job_config:
    """A job's config file: exactly the keys that job computes from (see JOB_CONFIGS in common.smk). Written in
    the Snakemake process (a localrule): it is the config Snakemake was given, nothing else."""
    output:
        "{path}.config.json",
    log:
        "logs/config/{path}.log",
    wildcard_constraints:
        path="|".join(re.escape(p[: -len(".config.json")]) for p in JOB_CONFIGS),
    params:
        content=job_config,
    run:
        write_job_config(output[0], params.content, log[0])
