"""Concatenation fusion (appendix A.2 "Concatenation"; OGM-GE's `ConcatFusion`, GeWu-Lab/OGM-GE_CVPR2022,
models/fusion_modules.py).

The encoder outputs are concatenated in modality order (audio, visual, text) and one linear layer
(M * hidden_dim -> classes) gives the fused logits; the fused cross-entropy trains everything.

Missing modalities: a masked modality's embedding block is zero (see joint.py), so it adds nothing but the
layer's bias is kept whole.
Unimodal evaluation (section 4.1.1, as OGM-GE's code): the layer is split into sub-heads, one per modality:
modality m's prediction is W[:, block m] h_m + b / M, the column block of the weight that reads m plus an
M-th of the bias (OGM-GE's code uses bias / 2 for its two modalities). With every modality present the
sub-heads sum exactly to the full layer's logits.
"""

from __future__ import annotations

import torch
from torch import nn

from mlaflow.methods.base import StackedLinear
from mlaflow.methods.joint import JointFusion


class ConcatHead(nn.Module):
    """One linear layer on the concatenated embeddings; `branch_logits` gives its per-modality sub-heads."""

    def __init__(self, n_modalities: int, hidden_dim: int, n_classes: int, generators: list[torch.Generator]):
        super().__init__()
        self.n_modalities = n_modalities
        self.linear = StackedLinear(n_modalities * hidden_dim, n_classes, generators)

    def branch_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Sub-head outputs W_m h_m + b / M: h [R, M, B, s] -> [R, M, B, C]."""
        R, M, _, s = h.shape
        weight_blocks = self.linear.weight.view(R, -1, M, s)  # [R, C, M, s]
        return torch.einsum("rcms,rmbs->rmbc", weight_blocks, h) + self.linear.bias[:, None, None, :] / M

    def forward(self, h: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        R, M, B, s = h.shape
        return self.linear(h.permute(0, 2, 1, 3).reshape(R, B, M * s))


class ConcatFusion(JointFusion):
    name = "concat"
    unimodal_rule = ("`concat`", "the head split into per-modality sub-heads")

    def __init__(self, input_dims, n_classes, train_cfg, method_cfg, generators):
        super().__init__(input_dims, n_classes, train_cfg, method_cfg, generators)
        self.head = ConcatHead(self.n_modalities, self.hidden_dim, n_classes, generators)

    def fuse(self, h, present):
        return self.head(h, present)

    def unimodal(self, h, present):
        return self.head.branch_logits(h)
