"""The experiment table: every kind of training the workflow runs, as data, in one place.

An `Experiment` is a named set of runs (method x missing rate x seed x fold) trained under one set of overrides
of the paper's settings and one mask specification. The Snakemake rules (workflow/rules/train.smk), the DVC
stages (dvc.yaml) and the report all read this table; nothing parses an experiment's name.

| kind       | name                  | root                      | cells                                   | masks                  |
|------------|-----------------------|---------------------------|-----------------------------------------|------------------------|
| main       | main                  | data/runs                 | `methods` x `masks.missing_rates`       | `masks.protocol`       |
| complete   | complete              | data/runs                 | `complete_modality_methods` x {0.0}     | `masks.protocol`       |
| suite      | suite                 | data/suite                | `missing_suite` cells main does not run | `masks.protocol`       |
| isolation  | isolate_<modality>    | data/isolation/<name>     | `isolation.methods` x shares            | that modality, training split only |
| fidelity   | <variant name>        | data/fidelity/<name>      | mla x `fidelity.missing_rates`          | the variant's protocol |
| fidelity   | masks_<protocol>      | data/fidelity/<name>      | `protocol_methods` x every missing rate | the other protocol     |

A root is the folder of the experiment's stage (`STAGE_DIRS`, the one place these folders are written: the
stage indexes of mlaflow.pipeline.jobconfigs and the rules derive from it), or, for isolation and fidelity
(stages of several experiments), a folder of the experiment's name inside it. Main and complete share a root
(their methods never overlap: a complete-modality method that is also in `methods` runs in the main grid).
Runs of main, complete and suite are also tested under the test masks of every missing rate
(`test_time_shift`). A cell that would equal a main-grid (or complete-modality) run exactly
is not trained but listed in `reused`, and the report reads that run in its place: a fidelity variant at
missing rate 0 that only changes the masks or how masked inputs are fed (nothing is masked there), and the
isolation analysis' share 0 (nothing masked in training).

This module also builds the config file of every job (`*_job_config`): what a job computes comes from that
file, which a Snakemake rule writes from the config Snakemake was given (workflow/rules/common.smk), and a
run records its hash, so the report can refuse a run trained under other settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlaflow.data import corpora
from mlaflow.keys import config_hash, format_rate, rate_key  # noqa: F401  (re-exported for the Snakefile)
from mlaflow.methods import method_options

MASK_PROTOCOLS = ("bernoulli", "cpm")
# the stages that train, in the order the report shows them, and the folder each one's runs and index live in
STAGE_DIRS = {
    "main_grid": "data/runs",
    "missing_suite": "data/suite",
    "isolation": "data/isolation",
    "fidelity": "data/fidelity",
}
STAGES = tuple(STAGE_DIRS)
# the stage that trains each kind of experiment; the kinds of several experiments (OWN_FOLDER) put each one's
# runs in a folder of its name inside the stage's
KIND_STAGES = {
    "main": "main_grid",
    "complete": "main_grid",
    "suite": "missing_suite",
    "isolation": "isolation",
    "fidelity": "fidelity",
}
OWN_FOLDER = ("isolation", "fidelity")


# ------------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class MaskSpec:
    """How an experiment's masks are drawn: `bernoulli` or `cpm` over every modality (data/masks.py), or
    `single_modality`: only `modality` is masked, and with `training_only` the mask applies to the training
    split alone (validation and test stay complete)."""

    protocol: str
    modality: str | None = None
    training_only: bool = False

    @property
    def folder(self) -> str:
        """Where its mask files live: data/splits/masks/<folder>/missing_<rate>.h5."""
        return f"isolate_{self.modality}" if self.protocol == "single_modality" else self.protocol

    def as_dict(self) -> dict:
        return {"protocol": self.protocol, "modality": self.modality, "training_only": self.training_only}


@dataclass(frozen=True)
class Experiment:
    """One kind of training (see the module docstring). `overrides` change the paper's settings:
    {"method_params": {method: {option: value}}, "train": {key: value}}."""

    name: str
    kind: str
    stage: str
    root: str
    cells: tuple[tuple[str, float], ...]
    masks: MaskSpec
    overrides: dict = field(default_factory=dict)
    test_time_shift: bool = False
    reused: tuple[tuple[str, float], ...] = ()  # cells read from main/complete, not trained here
    description: str = ""

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(method for method, _ in self.cells))

    def rates(self, method: str) -> list[float]:
        return [rate for m, rate in self.cells if m == method]


def _equals_main_at(overrides: dict, rate: float) -> bool:
    """At missing rate 0 nothing is masked: a variant that changes only how masks are drawn or fed (the mask
    protocol, train.masked_input) trains exactly the main grid's runs there."""
    return (
        rate == 0
        and not overrides.get("method_params")
        and set(overrides.get("train", {})) <= {"masked_input"}
    )


def _experiment(kind: str, name: str, cells, masks: MaskSpec, **fields) -> Experiment:
    """An experiment of `kind`, its stage and root (where its runs live) those of the kind (KIND_STAGES)."""
    stage = KIND_STAGES[kind]
    root = f"{STAGE_DIRS[stage]}/{name}" if kind in OWN_FOLDER else STAGE_DIRS[stage]
    return Experiment(name, kind, stage, root, tuple(cells), masks, **fields)


def experiment_table(config: dict) -> list[Experiment]:
    """Every experiment of a validated config, in the order the report shows them."""
    main, complete = _main_grid(config)
    table = [main, complete, _suite(config, trained={*main.cells, *complete.cells})]
    if config["isolation"]["enabled"]:
        table += _isolation(config)
    if config["fidelity"]["enabled"]:
        table += _fidelity(config)
    return table


def _main_grid(config: dict) -> tuple[Experiment, Experiment]:
    """The main grid and the complete-modality baselines (those of them not in the main grid)."""
    methods, masks = list(config["methods"]), MaskSpec(config["masks"]["protocol"])
    main_cells = [(m, r) for m in methods for r in config["masks"]["missing_rates"]]
    complete_cells = [(m, 0.0) for m in config["complete_modality_methods"] if m not in methods]
    main = _experiment(
        "main",
        "main",
        main_cells,
        masks,
        test_time_shift=True,
        description="the main grid: `methods` at every missing rate",
    )
    complete = _experiment(
        "complete",
        "complete",
        complete_cells,
        masks,
        test_time_shift=True,
        description="complete-modality baselines (Table 1 analogue) at missing rate 0",
    )
    return main, complete


def not_applicable(config: dict) -> dict[str, str]:
    """The suite's methods that cannot run on the config's corpus, each with why (the report says so): a method
    that reads conversations (GCNet) on a corpus kind without them."""
    from mlaflow.methods import method_class

    kind = corpora.corpus_kind(config)
    return {
        method: f"it reads conversations, and corpus kind {kind.name!r} has none"
        for method in config["missing_suite"]["methods"]
        if method_class(method).needs_conversations and not kind.conversations
    }


def _suite(config: dict, trained: set[tuple[str, float]]) -> Experiment:
    """The missing-modality suite: its cells that the main grid (`trained`) does not run, without the methods
    that do not apply to the corpus (`not_applicable`)."""
    suite, skipped = config["missing_suite"], not_applicable(config)
    cells = [
        (m, r)
        for m in suite["methods"]
        if m not in skipped
        for r in suite["missing_rates"]
        if (m, r) not in trained
    ]
    return _experiment(
        "suite",
        "suite",
        cells,
        MaskSpec(config["masks"]["protocol"]),
        test_time_shift=True,
        description="the missing-modality suite (Table 2 analogue)",
    )


def _isolation(config: dict) -> list[Experiment]:
    """One experiment per isolated modality; share 0 is the main grid's (or complete) missing-rate-0 run."""
    isolation = config["isolation"]
    cells = [(m, r) for m in isolation["methods"] for r in isolation["training_missing_rates"]]
    return [
        _experiment(
            "isolation",
            f"isolate_{modality}",
            cells,
            MaskSpec("single_modality", modality, training_only=True),
            reused=tuple((m, 0.0) for m in isolation["methods"]),
            description=f"{modality} masked in a share of the training samples only",
        )
        for modality in isolation["modalities"]
    ]


def _fidelity(config: dict) -> list[Experiment]:
    """One experiment per MLA variant, then `protocol_methods` under the other mask protocol."""
    fidelity, protocol = config["fidelity"], config["masks"]["protocol"]
    table = []
    for name, variant in fidelity["variants"].items():
        overrides = {
            key: value
            for key, value in (
                ("method_params", {"mla": variant["mla"]} if variant.get("mla") else {}),
                ("train", variant.get("train", {})),
            )
            if value
        }
        cells = [("mla", r) for r in fidelity["missing_rates"]]
        reused = [c for c in cells if _equals_main_at(overrides, c[1])]
        table.append(
            _experiment(
                "fidelity",
                name,
                [c for c in cells if c not in reused],
                MaskSpec(variant.get("masks", {}).get("protocol", protocol)),
                overrides=overrides,
                reused=tuple(reused),
                description="; ".join(
                    f"{k}: {v}" for section in variant.values() for k, v in section.items()
                ),
            )
        )
    other = next(p for p in MASK_PROTOCOLS if p != protocol)
    cells = [(m, r) for m in fidelity["protocol_methods"] for r in config["masks"]["missing_rates"]]
    reused = [c for c in cells if c[1] == 0]
    table.append(
        _experiment(
            "fidelity",
            f"masks_{other}",
            [c for c in cells if c not in reused],
            MaskSpec(other),
            reused=tuple(reused),
            description=f"masks: {other}",
        )
    )
    return table


def as_dict(experiment: Experiment) -> dict:
    """An experiment as JSON (the stage indexes hold them); `Experiment.from_dict` reads it back."""
    return {
        "name": experiment.name,
        "kind": experiment.kind,
        "stage": experiment.stage,
        "root": experiment.root,
        "cells": [list(c) for c in experiment.cells],
        "masks": experiment.masks.as_dict(),
        "overrides": experiment.overrides,
        "test_time_shift": experiment.test_time_shift,
        "reused": [list(c) for c in experiment.reused],
        "description": experiment.description,
    }


def from_dict(d: dict) -> Experiment:
    return Experiment(
        d["name"],
        d["kind"],
        d["stage"],
        d["root"],
        tuple((m, float(r)) for m, r in d["cells"]),
        MaskSpec(**d["masks"]),
        d["overrides"],
        d["test_time_shift"],
        tuple((m, float(r)) for m, r in d["reused"]),
        d["description"],
    )


def by_name(table: list[Experiment]) -> dict[str, Experiment]:
    return {experiment.name: experiment for experiment in table}


def run_path(experiment: Experiment, method: str, rate: float, seed: int | str, fold: int | str) -> str:
    return f"{experiment.root}/{method}/missing_{format_rate(rate)}/seed{seed}_fold{fold}.json"


def job_config_path(experiment: Experiment, method: str) -> str:
    """The config file of a method's training jobs in an experiment (next to its runs, inside its DVC output)."""
    return f"{experiment.root}/{method}.config.json"


def mask_path(masks: MaskSpec, rate: float) -> str:
    return f"data/splits/masks/{masks.folder}/missing_{format_rate(rate)}.h5"


# ------------------------------------------------------------------------------------------- job configs


def effective_train(config: dict, method: str, overrides: dict | None = None) -> dict:
    """`train` as `method` trains it: its reference optimiser (train.method_optimizers) and the experiment's
    overrides, without the seeds (a job's runs are its outputs) and the other methods' optimisers."""
    train = {k: v for k, v in config["train"].items() if k not in ("seeds", "method_optimizers")}
    train.update(config["train"]["method_optimizers"].get(method, {}))
    train.update((overrides or {}).get("train", {}))
    return train


def effective_method_params(config: dict, method: str, overrides: dict | None = None) -> dict:
    options = method_options(config["method_params"], method)
    options.update((overrides or {}).get("method_params", {}).get(method, {}))
    return options


def method_settings(config: dict, method: str, overrides: dict | None = None) -> dict:
    """{"train": ..., "method_params": {method: ...}}: the settings `mlaflow.train.loop.train_runs` takes."""
    return {
        "train": effective_train(config, method, overrides),
        "method_params": {method: effective_method_params(config, method, overrides)},
    }


def train_job_config(config: dict, experiment: Experiment, method: str) -> dict:
    """Everything a training job of `method` in `experiment` computes from (besides its input files)."""
    return {
        "experiment": {
            "name": experiment.name,
            "kind": experiment.kind,
            "masks": experiment.masks.as_dict(),
            "overrides": experiment.overrides,  # the tuned values never replace what an experiment sets
        },
        "method": method,
        **method_settings(config, method, experiment.overrides),
        "masks": {"all_missing": config["masks"]["all_missing"]},
        "test_time_shift": [format_rate(r) for r in config["masks"]["missing_rates"]]
        if experiment.test_time_shift
        else [],
        "modalities": corpora.modalities(config),
        "classes": corpora.classes(config),
        "feature_dims": {m: config["features"][m]["dim"] for m in corpora.modalities(config)},
    }


def mask_job_config(config: dict, masks: MaskSpec) -> dict:
    """What the masks of one specification are drawn from (all_missing matters to bernoulli masks only)."""
    out = {
        "masks": masks.as_dict(),
        "seeds": list(config["train"]["seeds"]),
        "modalities": corpora.modalities(config),
    }
    if masks.protocol == "bernoulli":
        out["all_missing"] = config["masks"]["all_missing"]
    return out


# ------------------------------------------------------------------------------------------- tuning

COMPARISON_KINDS = ("main", "complete", "suite")  # the experiments whose methods are compared, hence tuned


def tuned_methods(config: dict) -> list[str]:
    """The methods the tuning stage tunes (none with tuning.enabled false): every method of the comparison (main
    grid, complete-modality baselines, suite). The isolation and fidelity experiments train these same methods,
    with the same chosen values."""
    if not config["tuning"]["enabled"]:
        return []
    table = [e for e in experiment_table(config) if e.kind in COMPARISON_KINDS]
    return list(dict.fromkeys(method for experiment in table for method in experiment.methods))


def tuning_rates(config: dict, method: str) -> list[float]:
    """The missing rates a method's trials train at: tuning.missing_rates, or [0.0] for a method the comparison
    trains at missing rate 0 only (the complete-modality baselines: tuned where they are used)."""
    rates = {r for e in experiment_table(config) if e.kind in COMPARISON_KINDS for r in e.rates(method)}
    return list(config["tuning"]["missing_rates"]) if any(r > 0 for r in rates) else [0.0]


def tuning_experiment(config: dict, method: str) -> Experiment:
    """The comparison experiment a method is tuned for (its masks and overrides: the paper's settings)."""
    return next(e for e in experiment_table(config) if e.kind in COMPARISON_KINDS and method in e.methods)


def tuning_job_config(config: dict, method: str) -> dict:
    """Everything a tuning job of `method` computes from: the settings its comparison runs start from (trial 0),
    and the `tuning` section with the method's own rates."""
    experiment = tuning_experiment(config, method)
    job = train_job_config(config, experiment, method)
    job["experiment"] = {
        "name": "tuning",
        "kind": "tuning",
        "masks": experiment.masks.as_dict(),
        "overrides": {},
    }
    job["test_time_shift"] = []
    job["tuning"] = {**config["tuning"], "missing_rates": tuning_rates(config, method)}
    return job


def tuned_values_path(method: str) -> str:
    """The chosen values of a method (the tuning stage's output, a training job's input)."""
    return f"data/tuning/{method}.json"
