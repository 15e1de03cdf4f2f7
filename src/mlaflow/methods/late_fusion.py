"""Late fusion (appendix A.2): one encoder and one linear head per modality, trained independently on their
own modality; the fused prediction is the average of the unimodal outputs (logits) of the present modalities.

The M independent models are trained in one loop: the loss is the sum of the unimodal cross-entropies, and
since no parameter is shared the gradients (and SGD/Adam updates) are those of M separate trainings.
A modality masked for a sample contributes no loss for that sample and is left out of its average.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mlaflow.methods.base import Method, Predictions, batches, fuse


class LateFusion(Method):
    name = "late_fusion"

    def __init__(self, input_dims, n_classes, train_cfg, method_cfg):
        super().__init__(input_dims, n_classes, train_cfg, method_cfg)
        self.heads = nn.ModuleList(nn.Linear(self.hidden_dim, n_classes) for _ in input_dims)

    def fit_epoch(self, features, present, labels, optimizer, batch_size, generator):
        total_loss, n_batches = 0.0, 0
        for batch in batches(present.any(dim=1).nonzero().flatten(), batch_size, generator):
            loss = torch.zeros(())
            for m, (encoder, head) in enumerate(zip(self.encoders, self.heads)):
                rows = batch[present[batch, m]]
                if len(rows):
                    loss = loss + F.cross_entropy(head(encoder(features[m][rows])), labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
            n_batches += 1
        return {"loss": total_loss / max(n_batches, 1)}

    @torch.no_grad()
    def predict(self, features, present):
        unimodal = torch.stack([h(e(x)) for e, h, x in zip(self.encoders, self.heads, features)])  # [M, N, C]
        weights = present.T.float() / present.T.sum(dim=0).clamp(min=1)   # average over present modalities
        return Predictions(unimodal, fuse(unimodal, weights), present.any(dim=1))
