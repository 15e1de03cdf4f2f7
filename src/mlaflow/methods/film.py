"""FiLM fusion (Perez et al., AAAI 2018; appendix A.2 "FiLM"; OGM-GE's `FiLM` module,
GeWu-Lab/OGM-GE_CVPR2022, models/fusion_modules.py).

One modality, the condition c (option `condition`, default text: A.2 conditions on "either audio or text",
and text is IEMOCAP's strongest modality), goes through a linear layer hidden_dim -> 2 * hidden_dim whose
output is split into gamma (first half) and beta (second half), as OGM-GE's code does. Each other modality
m is modulated feature-wise, z_m = gamma * h_m + beta, and one linear layer on the concatenation of the z_m
(in modality order, (M - 1) * hidden_dim -> classes) gives the fused logits. With two modalities this is
exactly OGM-GE's FiLM; with three, both non-condition modalities share the same gamma and beta.

Missing modalities (zero-filled embeddings, see joint.py): a masked condition gives gamma, beta = the FiLM
layer's bias; a masked modulated modality gives z_m = beta.
Unimodal evaluation (section 4.1.1): the network with the other modalities deactivated (zero-filled); for
the condition modality that is fc([beta(h_c), ...]), its only path to the output.
"""

from __future__ import annotations

import torch

from mlaflow.methods.base import StackedLinear
from mlaflow.methods.joint import JointFusion


class FiLM(JointFusion):
    name = "film"

    def __init__(self, input_dims, n_classes, train_cfg, method_cfg, generators):
        super().__init__(input_dims, n_classes, train_cfg, method_cfg, generators)
        options = method_cfg
        self.condition = self.modality_index("condition", options["condition"])
        self.modulated = [m for m in range(self.n_modalities) if m != self.condition]
        self.film = StackedLinear(self.hidden_dim, 2 * self.hidden_dim, generators)
        self.head = StackedLinear(len(self.modulated) * self.hidden_dim, n_classes, generators)

    def film_parameters(self, h_condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """gamma, beta [R, B, s] from the condition's embedding [R, B, s]."""
        gamma, beta = self.film(h_condition).chunk(2, dim=-1)
        return gamma, beta

    def modulate_and_classify(self, h: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """fc([gamma * h_m + beta for the modulated m]) -> [R, B, C]."""
        return self.head(torch.cat([gamma * h[:, m] + beta for m in self.modulated], dim=-1))

    def fuse(self, h, present):
        gamma, beta = self.film_parameters(h[:, self.condition])
        return self.modulate_and_classify(h, gamma, beta)
