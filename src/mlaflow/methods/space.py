"""Search spaces of the tuning stage: what each method's hyperparameters may take, declared next to the method.

Every method class has a `search_space` (its own options, `method_params.<method>.<option>`, mlaflow/methods/),
and every method that trains with the shared optimiser also searches `COMMON_SPACE` (train.lr around the
method's own value, train.weight_decay). A dimension is one of:

- `LogRange(low, high)`: a float drawn on a log scale; `relative=True` makes the bounds factors of the value the
  config gives (the learning rate: Adam's 1e-3 and SGD's 1e-2 get the same search, relative to their own start);
- `Range(low, high)`: a float on a linear scale; `IntRange(low, high)`: an integer;
- `Choice(values)`: one of a list; `Choice(MODALITIES)` means one of the corpus's modality names.

A dimension's Optuna name is the dotted path of the key it sets (`train.lr`, `method_params.film.condition`);
`mlaflow.tune.study` samples them and `mlaflow.train.tuned.apply_values` writes them into a job's settings. This
module sits with the methods, which declare their spaces with it; tuning (above training) reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

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
