"""Gated fusion, "BiGated" (Kiela et al. 2018, "Efficient large-scale multi-modal classification";
appendix A.2 "BiGated"; OGM-GE's `GatedFusion`, GeWu-Lab/OGM-GE_CVPR2022, models/fusion_modules.py).

Every modality has its own linear layer hidden_dim -> hidden_dim (OGM-GE's fc_x, fc_y): u_m = fc_m(h_m).
One modality g (option `gate`, default text) gives the gate sigmoid(u_g), in (0, 1), which multiplies each
other modality's u_m element-wise; one linear layer on the concatenation of the gated u_m (in modality
order, (M - 1) * hidden_dim -> classes) gives the fused logits. With two modalities this is exactly
OGM-GE's GatedFusion (x_gate=True); with three, both non-gate modalities share the same gate.

The gate modality is in the tuning stage's search space (`search_space`): with the strongest modality as the
gate (text on IEMOCAP-like data), that modality reaches the output only through sigmoid(u_g) * u_m, its
unimodal prediction collapses to one class and the fused accuracy to the gated modalities' level; which
modality gates is therefore chosen on validation, like the learning rate, rather than fixed.

Missing modalities (zero-filled embeddings, see joint.py): a masked gate modality gives sigmoid(bias of
fc_g); a masked gated modality gives gate * bias of fc_m.
Unimodal evaluation (section 4.1.1): the network with the other modalities deactivated (zero-filled).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from mlaflow.methods.base import StackedLinear
from mlaflow.methods.joint import JointFusion
from mlaflow.methods.space import MODALITIES, Choice


class BiGated(JointFusion):
    name = "bigated"
    # the gate modality is searched: gating the strongest modality by another one is what makes it gated
    search_space: ClassVar[dict] = {"gate": Choice(MODALITIES)}
    modality_options = ("gate",)

    def __init__(self, input_dims, n_classes, train_cfg, method_cfg, generators):
        super().__init__(input_dims, n_classes, train_cfg, method_cfg, generators)
        options = method_cfg
        self.gating = self.modality_index("gate", options["gate"])
        self.gated = [m for m in range(self.n_modalities) if m != self.gating]
        self.projections = nn.ModuleList(
            StackedLinear(self.hidden_dim, self.hidden_dim, generators) for _ in range(self.n_modalities)
        )
        self.head = StackedLinear(len(self.gated) * self.hidden_dim, n_classes, generators)

    def gate(self, h: torch.Tensor) -> torch.Tensor:
        """sigmoid(fc_g(h_g)) [R, B, s] from the embeddings h [R, M, B, s]."""
        return torch.sigmoid(self.projections[self.gating](h[:, self.gating]))

    def gate_and_classify(self, h: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """fc([gate * fc_m(h_m) for the gated m]) -> [R, B, C]."""
        return self.head(torch.cat([gate * self.projections[m](h[:, m]) for m in self.gated], dim=-1))

    def fuse(self, h, present):
        return self.gate_and_classify(h, self.gate(h))
