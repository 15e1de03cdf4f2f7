"""A method's tuned values as training applies them: the chosen values file of the tuning stage
(data/tuning/<method>.json, written by mlaflow.tune.study) and the settings with those values written in.

Training (this floor) reads them; tuning (the floor above) writes them and reads settings the same way.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from mlaflow.errors import InputError


def current_value(settings: dict, key: str):
    """The value a dotted key has in a job's settings ({"train": ..., "method_params": {...}})."""
    node = settings
    for part in key.split("."):
        node = node[part]
    return node


def apply_values(settings: dict, values: dict, keep: dict | None = None) -> dict:
    """`settings` with the dotted `values` written in (a copy). Keys that `keep` (an experiment's overrides,
    {"train": {...}, "method_params": {method: {...}}}) sets are left as the experiment has them: a fidelity
    variant that fixes an option is that variant whatever the tuning chose."""
    out = copy.deepcopy(settings)
    for key, value in values.items():
        *path, leaf = key.split(".")
        kept = keep or {}
        for part in path:
            kept = kept.get(part, {}) if isinstance(kept, dict) else {}
        if isinstance(kept, dict) and leaf in kept:
            continue
        node = out
        for part in path:
            node = node[part]
        node[leaf] = value
    return out


def read_chosen(path: str | Path) -> dict:
    """The chosen values file of a method (what the training jobs apply)."""
    try:
        chosen = json.loads(Path(path).read_text())
        return {"values": chosen["values"], "values_hash": chosen["values_hash"], "method": chosen["method"]}
    except (OSError, json.JSONDecodeError, KeyError) as err:
        raise InputError(
            path, f"unreadable tuned values ({err})", "re-run the tuning stage (dvc repro)"
        ) from err
