"""Summation fusion (appendix A.2 "Summation"; OGM-GE's `SumFusion`, GeWu-Lab/OGM-GE_CVPR2022,
models/fusion_modules.py).

Each modality's encoder has its own linear layer (hidden_dim -> classes, with its own bias); the fused
output is the sum of these unimodal outputs, and the fused cross-entropy trains everything. This is the
"sum of per-modality linear outputs" form (A.2's words and OGM-GE's code), not one shared head on the sum
of the embeddings (which would share the weight and have a single bias).

Missing modalities: a masked modality's term is left out of the sum entirely (its bias included), so a
sample with only modality m present is predicted exactly by m's layer.
Unimodal evaluation (section 4.1.1, following OGM-GE): modality m's prediction is its own layer on its own
embedding, fc_m(h_m), with the full bias of that layer (OGM-GE's evaluation code halves it; with one bias per
layer there is nothing to share, so we keep it whole).
"""

from __future__ import annotations

import torch
from torch import nn

from mlaflow.methods.base import StackedLinear, fuse
from mlaflow.methods.joint import JointFusion


class SumHead(nn.Module):
    """One linear layer per modality; fused logits = sum of the present modalities' outputs."""

    def __init__(self, n_modalities: int, hidden_dim: int, n_classes: int, generators: list[torch.Generator]):
        super().__init__()
        self.layers = nn.ModuleList(
            StackedLinear(hidden_dim, n_classes, generators) for _ in range(n_modalities)
        )

    def branch_logits(self, h: torch.Tensor) -> torch.Tensor:
        """fc_m(h_m) for every modality: h [R, M, B, s] -> [R, M, B, C]."""
        return torch.stack([layer(h[:, m]) for m, layer in enumerate(self.layers)], dim=1)

    def forward(self, h: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return fuse(self.branch_logits(h), present.permute(0, 2, 1).float())  # masked terms dropped


class SumFusion(JointFusion):
    name = "sum"
    unimodal_rule = ("`sum`", "one modality through its layer")

    def __init__(self, input_dims, n_classes, train_cfg, method_cfg, generators):
        super().__init__(input_dims, n_classes, train_cfg, method_cfg, generators)
        self.head = SumHead(self.n_modalities, self.hidden_dim, n_classes, generators)

    def fuse(self, h, present):
        return self.head(h, present)

    def unimodal(self, h, present):
        return self.head.branch_logits(h)
