"""Late fusion (appendix A.2): one encoder and one linear head per modality, trained independently on their
own modality; the fused prediction is the average of the unimodal outputs (logits) of the present modalities.

The M independent models are trained in one loop: the loss is the sum of the unimodal cross-entropies, and
since no parameter is shared the gradients (and optimiser updates) are those of M separate trainings.
A modality masked for a sample contributes no loss for that sample and is left out of its average; a
modality absent from a whole mini-batch takes no optimiser step.
"""

from __future__ import annotations

import torch
from torch import nn

from mlaflow.methods.base import (
    Batch,
    Method,
    Predictions,
    RunGroup,
    StackedLinear,
    Step,
    fuse,
    masked_cross_entropy,
)


class LateFusion(Method):
    name = "late_fusion"
    end_to_end = True
    unimodal_rule = ("late fusion", "each modality's classifier")

    def __init__(self, input_dims, n_classes, train_cfg, method_cfg, generators):
        super().__init__(input_dims, n_classes, train_cfg, method_cfg, generators)
        self.heads = nn.ModuleList(
            StackedLinear(self.hidden_dim, n_classes, generators) for _ in self.input_dims
        )

    def batch_step(self, data: RunGroup, batch: Batch, present: torch.Tensor, active: torch.Tensor) -> Step:
        loss = torch.zeros(self.n_runs, device=data.device)
        stepping = {}
        for m, (encoder, head) in enumerate(zip(self.encoders, self.heads)):
            logits = head(self.encode(m, data, batch))
            loss = loss + masked_cross_entropy(logits, batch.labels, present[..., m])
            runs_with_m = present[..., m].any(dim=1)
            stepping.update(dict.fromkeys([*encoder.parameters(), *head.parameters()], runs_with_m))
        return Step(loss, stepping, active)

    @torch.no_grad()
    def predict(self, data: RunGroup, batch: Batch) -> Predictions:
        # [R, M, n, C]
        unimodal = torch.stack(
            [head(self.encode(m, data, batch)) for m, head in enumerate(self.heads)], dim=1
        )
        present = data.present_at(batch.idx, batch.valid).permute(0, 2, 1).float()  # [R, M, n]
        weights = present / present.sum(dim=1, keepdim=True).clamp(min=1)  # average over present modalities
        return Predictions(unimodal, fuse(unimodal, weights))
