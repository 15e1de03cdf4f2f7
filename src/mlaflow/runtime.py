"""How and where a job runs, kept apart from what it computes.

A job's config file (`<output>.config.json`) holds exactly the keys that change its result; Snakemake reruns a
job when that file changes. The settings that only say how or where it runs never go there:

- params.yaml `runtime` (device, batch_runs, job_group, tuning_workers, tuning_storage): the Snakefile puts the
  validated section into the environment variable MLAFLOW_RUNTIME (JSON) of every job it starts; the CLI reads
  it back (`mlaflow.cli.runtime_from_environment`). Outside Snakemake (a step run by hand) the variable is unset and the schema's
  defaults apply.
- threads and GPUs per job: Snakemake's own (the rule's `threads`, the `gpu` resource), set by a profile
  (`set-threads`, `set-resources`); a step gets its threads as `--threads`.

So changing any of them reruns nothing, and a run's record says where it ran (`device`) without that entering
its config hash.
"""

from __future__ import annotations

from dataclasses import dataclass

ENV_VAR = "MLAFLOW_RUNTIME"


@dataclass(frozen=True)
class Runtime:
    """The runtime settings a step uses (params.yaml `runtime`, and the job's threads)."""

    device: str = "auto"
    batch_runs: bool = True
    tuning_storage: str | None = None
    threads: int = 1
