"""Search spaces of the tuning stage: what each method's hyperparameters may take, declared next to the method.

Every method class has a `search_space` (its own options, `method_params.<method>.<option>`, mlaflow/methods/),
and every method that trains with the shared optimiser also searches `COMMON_SPACE` (train.lr around the
method's own value, train.weight_decay). A dimension is one of:

- `LogRange(low, high)`: a float drawn on a log scale; `relative=True` makes the bounds factors of the value the
  config gives (the learning rate: Adam's 1e-3 and SGD's 1e-2 get the same search, relative to their own start);
- `Range(low, high)`: a float on a linear scale; `IntRange(low, high)`: an integer;
- `Choice(values)`: one of a list; `Choice(MODALITIES)` means one of the corpus's modality names.

A dimension's Optuna name is the dotted path of the key it sets (`train.lr`, `method_params.film.condition`);
`mlaflow.tune.study` samples them and `apply_values` writes them into a job's settings.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from mlaflow.errors import InputError

MODALITIES = "<modalities>"  # Choice(MODALITIES): the corpus's modality names, known only from the config


@dataclass(frozen=True)
class LogRange:
    low: float
    high: float
    relative: bool = False

    def bounds(self, current: float) -> tuple[float, float]:
        return (self.low * current, self.high * current) if self.relative else (self.low, self.high)

    def suggest(self, trial, name: str, current, modalities):
        low, high = self.bounds(current)
        return trial.suggest_float(name, low, high, log=True)

    def describe(self, current, modalities) -> str:
        low, high = self.bounds(current)
        return f"{low:g} to {high:g}, log scale"


@dataclass(frozen=True)
class Range:
    low: float
    high: float

    def suggest(self, trial, name: str, current, modalities):
        return trial.suggest_float(name, self.low, self.high)

    def describe(self, current, modalities) -> str:
        return f"{self.low:g} to {self.high:g}"


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int

    def suggest(self, trial, name: str, current, modalities):
        return trial.suggest_int(name, self.low, self.high)

    def describe(self, current, modalities) -> str:
        return f"integers {self.low} to {self.high}"


@dataclass(frozen=True)
class Choice:
    values: tuple | str

    def options(self, modalities: list[str]) -> list:
        return list(modalities) if self.values == MODALITIES else list(self.values)

    def suggest(self, trial, name: str, current, modalities):
        return trial.suggest_categorical(name, self.options(modalities))

    def describe(self, current, modalities) -> str:
        return "one of " + ", ".join(str(v) for v in self.options(modalities))


# the shared optimiser's settings, searched for every method that uses it
COMMON_SPACE = {"train.lr": LogRange(0.1, 10.0, relative=True), "train.weight_decay": LogRange(1e-6, 1e-2)}


def method_space(method: str) -> dict:
    """Every dimension searched for `method`, by dotted key: COMMON_SPACE (unless the method trains with its own
    optimisers only: `uses_shared_optimizer = False`), then the method's own `search_space`."""
    from mlaflow.methods import method_class

    cls = method_class(method)
    space = dict(COMMON_SPACE) if cls.uses_shared_optimizer else {}
    space.update({f"method_params.{method}.{option}": dim for option, dim in cls.search_space.items()})
    return space


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
