"""The method registry: every training method mlaflow runs, by the name used in params.yaml."""
from __future__ import annotations

import torch

from mlaflow.errors import ParamsError
from mlaflow.methods.ae import AE
from mlaflow.methods.base import Method
from mlaflow.methods.bigated import BiGated
from mlaflow.methods.cca import CCA
from mlaflow.methods.concat import ConcatFusion
from mlaflow.methods.cpm_net import CPMNet
from mlaflow.methods.cra import CRA
from mlaflow.methods.dcca import DCCA
from mlaflow.methods.dccae import DCCAE
from mlaflow.methods.film import FiLM
from mlaflow.methods.if_mmin import IFMMIN
from mlaflow.methods.late_fusion import LateFusion
from mlaflow.methods.mla import MLA
from mlaflow.methods.mmin import MMIN
from mlaflow.methods.ogm_ge import OGMGE
from mlaflow.methods.qmf import QMF
from mlaflow.methods.sum_fusion import SumFusion
from mlaflow.methods.tate import TATE

METHODS: dict[str, type[Method]] = {
    cls.name: cls for cls in (MLA, LateFusion, SumFusion, ConcatFusion, FiLM, BiGated, OGMGE, QMF, CCA, DCCA, DCCAE, AE, CRA, MMIN, IFMMIN, CPMNet, TATE)}


def build_method(name: str, input_dims: list[int], n_classes: int, params: dict,
                 generators: list[torch.Generator]) -> Method:
    """Build `name` for len(generators) stacked runs (one generator per run: its init, shuffles, dropout)."""
    if name not in METHODS:
        raise ParamsError("methods", f"unknown method {name!r}", f"use one of {sorted(METHODS)}")
    return METHODS[name](input_dims, n_classes, params["train"], params["method_params"].get(name, {}), generators)
