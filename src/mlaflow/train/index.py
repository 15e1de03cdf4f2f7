"""A stage's index (`mlaflow index`): the list of its experiments and run files, written once every run is there.

Each run records the hash of the config file its training job read; the index job checks it against the hash
of that job's config as the workflow has it now, so a run trained under other settings (copied in, or left from
a run that Snakemake's metadata does not know of) stops here, named, instead of reaching a table. The report
reads the indexes, never a run the index has not vouched for.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlaflow.errors import InputError
from mlaflow.io import write_json


def write_index(config: dict, run_paths: list[str], out: str | Path, tuned_paths: list[str] = ()) -> None:
    """Check every run against its job's config hash and, for a tuned method, against the chosen values it
    must have trained with (data/tuning/<method>.json, `tuned_paths`); write the index."""
    from mlaflow.train.tuned import read_chosen

    expected = config["config_hashes"]
    chosen = {c["method"]: c["values_hash"] for c in map(read_chosen, tuned_paths)}
    missing = sorted(set(config["tuned_methods"]) - set(chosen))
    if missing:
        raise SystemExit(f"the index needs the tuned values of {missing} (data/tuning/<method>.json)")
    for path in run_paths:
        try:
            run = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(
                path,
                f"unreadable run metrics ({err})",
                "delete it and re-run its training job (snakemake or dvc repro)",
            ) from err
        key = f"{run.get('experiment')}/{run.get('method')}"
        if key not in expected:
            raise InputError(path, f"a run of {key}, which this stage does not train", "delete it")
        if run.get("config_hash") != expected[key]:
            raise InputError(
                path,
                f"stale result: trained with config hash {run.get('config_hash')}, its job's "
                f"config now has {expected[key]}",
                "delete it (or `snakemake --forcerun train`) and run `dvc repro` again",
            )
        want = chosen.get(run.get("method")) if run.get("method") in config["tuned_methods"] else None
        had = (run.get("tuned") or {}).get("values_hash")  # None: trained with the config's values
        if had != want:
            raise InputError(
                path,
                f"stale result: trained with tuned values {had}, the tuning stage now chose {want}",
                "delete it (or `snakemake --forcerun train`) and run `dvc repro` again",
            )
    write_json(out, {"stage": config["stage"], "experiments": config["experiments"], "runs": list(run_paths)})
