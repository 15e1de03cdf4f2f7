"""The method registry: every training method mlaflow runs, by the name used in params.yaml.

Modules are named, not imported: a training job imports only its own method's module, and the workflow derives
each job's code inputs from that (editing `tate.py` reruns TATE's jobs only; see mlaflow.pipeline.codedeps).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from mlaflow.errors import ParamsError

if (
    TYPE_CHECKING
):  # the registry is read where torch is not needed (the workflow's parse): the methods import it
    import torch

# name -> "module:class"
METHODS: dict[str, str] = {
    "mla": "mlaflow.methods.mla:MLA",
    "late_fusion": "mlaflow.methods.late_fusion:LateFusion",
    "sum": "mlaflow.methods.sum_fusion:SumFusion",
    "concat": "mlaflow.methods.concat:ConcatFusion",
    "film": "mlaflow.methods.film:FiLM",
    "bigated": "mlaflow.methods.bigated:BiGated",
    "ogm_ge": "mlaflow.methods.ogm_ge:OGMGE",
    "qmf": "mlaflow.methods.qmf:QMF",
    "cca": "mlaflow.methods.cca:CCA",
    "dcca": "mlaflow.methods.dcca:DCCA",
    "dccae": "mlaflow.methods.dccae:DCCAE",
    "ae": "mlaflow.methods.ae:AE",
    "cra": "mlaflow.methods.cra:CRA",
    "mmin": "mlaflow.methods.mmin:MMIN",
    "if_mmin": "mlaflow.methods.if_mmin:IFMMIN",
    "cpm_net": "mlaflow.methods.cpm_net:CPMNet",
    "tate": "mlaflow.methods.tate:TATE",
    "mmpareto": "mlaflow.methods.mmpareto:MMPareto",
    "reconboost": "mlaflow.methods.reconboost:ReconBoost",
    "gcnet": "mlaflow.methods.gcnet:GCNet",
    "mla_hgm_off": "mlaflow.methods.mla:MLAWithoutHGM",
}

# Variants: a method that is another one with some options fixed. It has no `method_params` section of its own:
# it reads its base's (so the two stay paired when an option changes) with the fixed values over them, and is
# tuned (its own study, the same budget) and trained as a method of its own. MLA without head gradient
# modification is the paper's Table 3 ablation "w/o HGM", tuned like MLA for the report's claims.
VARIANTS: dict[str, tuple[str, dict]] = {"mla_hgm_off": ("mla", {"head_gradient_modification": "off"})}


def options_section(name: str) -> str:
    """The method whose `method_params` section holds `name`'s options (its base for a variant)."""
    return VARIANTS[name][0] if name in VARIANTS else name


def method_options(method_params: dict, name: str) -> dict:
    """`name`'s options from a config's `method_params`: its own section, or a variant's base's with the
    variant's fixed values over them."""
    options = dict(method_params.get(options_section(name), {}))
    options.update(VARIANTS[name][1] if name in VARIANTS else {})
    return options


def method_module(name: str) -> str:
    """The dotted module of a method (for code dependencies)."""
    if name not in METHODS:
        raise ParamsError("methods", f"unknown method {name!r}", f"use one of {sorted(METHODS)}")
    return METHODS[name].split(":")[0]


def method_class(name: str):
    module = importlib.import_module(method_module(name))
    return getattr(module, METHODS[name].split(":")[1])


def build_method(
    name: str,
    input_dims: dict[str, int] | list[int],
    n_classes: int,
    settings: dict,
    generators: list[torch.Generator],
):
    """Build `name` for len(generators) stacked runs (one generator per run: its init, shuffles, dropout).
    settings: {"train": ..., "method_params": {name: options}} (mlaflow.pipeline.experiments.method_settings)."""
    return method_class(name)(
        input_dims, n_classes, settings["train"], settings["method_params"].get(name, {}), generators
    )
