"""`mlaflow settle`: make a copy that DVC restored look to Snakemake exactly as up to date as it is.

Snakemake decides what is stale from file modification times and from its own records (`.snakemake/metadata`).
A copy that DVC made has no records and meaningless times: `dvc exp run --queue` / `--temp` runs each experiment
in a temporary copy, and `git clone` + `dvc pull` gives a colleague one; DVC writes the restored outputs in
any order, so an output may look older than its inputs (everything retrains) or, had its inputs changed, newer
(a stale result looks up to date).

What travels with such a copy is content, and DVC has already checked it: `dvc.lock` holds the hash of every
dependency and output of every stage as they were when the results were made together. `settle` hashes each
of them the way DVC does (honouring .dvcignore); every one that still matches, and every job config file
whose content is the one the current params give, gets one and the same old modification time. What differs
keeps its own (newer) time, so Snakemake reruns exactly what depends on it: a changed params section rewrites
its jobs' config files (the Snakefile removes a job config whose content is out of date, common.smk), edited
code is newer than the outputs it made. Nothing is ever marked up to date that `dvc.lock` does not vouch for.

Each DVC stage runs it before its Snakemake target. Where Snakemake has records, it does nothing: the records
and the real times decide, as always.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pathspec
import yaml

from mlaflow.errors import InputError

log = logging.getLogger(__name__)

# one modification time for everything dvc.lock vouches for (2000-01-01 UTC): older than anything rewritten
SETTLED_TIME = 946_684_800


def has_snakemake_records(root: Path) -> bool:
    metadata = root / ".snakemake" / "metadata"
    return metadata.is_dir() and any(metadata.iterdir())


def _dvcignore(root: Path) -> pathspec.PathSpec:
    path = root / ".dvcignore"
    lines = path.read_text().splitlines() if path.exists() else []
    return pathspec.PathSpec.from_lines("gitignore", lines)


def _files_under(path: Path, root: Path, ignore: pathspec.PathSpec) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(path):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not ignore.match_file((here / d).relative_to(root).as_posix() + "/")
        )
        files += [
            here / f for f in filenames if not ignore.match_file((here / f).relative_to(root).as_posix())
        ]
    return files


def _file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dvc_md5(path: Path, root: Path, ignore: pathspec.PathSpec) -> tuple[str, list[Path]] | None:
    """DVC's md5 of a file, or of a directory (`<md5 of its sorted listing>.dir`), and the files it covers;
    None when the path does not exist."""
    if path.is_file():
        return _file_md5(path), [path]
    if not path.is_dir():
        return None
    files = _files_under(path, root, ignore)
    entries = [{"md5": _file_md5(f), "relpath": f.relative_to(path).as_posix()} for f in files]
    entries.sort(key=lambda entry: entry["relpath"])  # as DVC sorts its listing: by the relative path string
    listing = json.dumps(entries, sort_keys=True).encode()
    return hashlib.md5(listing).hexdigest() + ".dir", files


def _stamp(paths: list[Path]) -> None:
    for path in paths:
        os.utime(path, (SETTLED_TIME, SETTLED_TIME), follow_symlinks=False)


def settle(root: Path, job_configs: dict[str, dict], force: bool = False) -> dict:
    """Settle the copy at `root` (see the module's docstring). `job_configs`: path -> content of every job's
    config file for the current params (mlaflow.pipeline.jobconfigs.job_configs). `force`: also where Snakemake has
    records (after `git checkout` + `dvc checkout` of another commit, whose files the records do not describe).
    Returns what it did."""
    root = Path(root)
    if has_snakemake_records(root) and not force:
        return {"skipped": "Snakemake has records of this workspace: its records and the real times decide"}
    lock_path = root / "dvc.lock"
    if not lock_path.exists():
        return {"skipped": "no dvc.lock: nothing vouches for the files here"}
    try:
        lock = yaml.safe_load(lock_path.read_text()) or {}
    except yaml.YAMLError as err:
        raise InputError(
            lock_path, f"unreadable ({err})", "restore it from git (git checkout dvc.lock)"
        ) from err
    ignore = _dvcignore(root)
    entries = {}
    for stage in (lock.get("stages") or {}).values():
        for entry in [*stage.get("deps", []), *stage.get("outs", [])]:
            entries[entry["path"]] = entry.get("md5")
    matching, differing = [], []
    for relpath, expected in sorted(entries.items()):
        found = dvc_md5(root / relpath, root, ignore)
        if found is not None and expected is not None and found[0] == expected:
            matching.append(relpath)
            _stamp([*found[1], *_directories(root / relpath)])
        else:
            differing.append(relpath)
    # job configs: settled when their content is the current params' (the Snakefile removes the others)
    from mlaflow.pipeline.jobconfigs import config_text

    current = [
        p
        for p, content in job_configs.items()
        if (root / p).is_file() and (root / p).read_text() == config_text(content)
    ]
    _stamp([root / p for p in current])
    summary = {"settled": matching, "differ_from_dvc_lock": differing, "job_configs_settled": len(current)}
    log.info(
        "settled %d paths that match dvc.lock and %d job configs (one modification time); %d paths differ from "
        "dvc.lock and keep their own, so what depends on them reruns: %s",
        len(matching),
        len(current),
        len(differing),
        ", ".join(differing) or "none",
    )
    return summary


def _directories(path: Path) -> list[Path]:
    """The directory itself and every directory below it (Snakemake reads a directory output's own time)."""
    if not path.is_dir():
        return []
    return [path, *(Path(d) / name for d, names, _ in os.walk(path) for name in names)]
