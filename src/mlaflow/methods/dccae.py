"""Deep canonically correlated autoencoders (DCCAE; Wang, Arora, Livescu, Bilmes, ICML 2015), baseline of the
missing-modality experiment (paper Table 2), following GCNet's baseline code (zeroQiaoba/GCNet,
baseline-cca/dccae.py): DCCA (dcca.py, whose choices all apply) plus one decoder per modality, the mirror of
its encoder ([k, h, h, h, d], Linear-BatchNorm-ReLU blocks, a last Linear), and the loss
-sum of correlations + `reconstruction_weight` * sum over modalities of the reconstruction MSE (0.001 in the
reference). The decoders train with the networks in the DCCA phase; the classifier sees the encoders' outputs.

Differences from the reference:
- The PCA input guard of dcca.py (`input_components`, default 8; null: none), not in GCNet's reference: each
  modality's standardised inputs are reduced by PCA fitted on each run's training rows where that modality is
  present, against the spurious-correlation collapse to the majority class at 512-1024 input dimensions with
  ~1,200 training rows. The encoders then read, and the decoders ([k, h, h, h, q], q = min(input_components,
  d)) reconstruct, the REDUCED inputs: the reconstruction MSE is over the observed rows of the q PCA
  coordinates, not of the d standardised features (without the guard: the d features, as the reference).
- The reconstruction MSE of modality m is over the rows where m is observed only (GCNet reconstructs the
  mean-imputed cells too, and its third decoder is the visual one, `r3 = self.decoder2(z3)`, a bug: here
  every modality has its own decoder). It is the mean over the observed rows' feature entries.
- `hidden_dim` default 128 (GCNet's DCCAE runs use 1024), for cost.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from mlaflow.methods.correlation import StackedMLP, observed_mse
from mlaflow.methods.dcca import DCCA
from mlaflow.methods.space import LogRange


class DCCAE(DCCA):
    name = "dccae"
    search_space: ClassVar[dict] = {**DCCA.search_space, "reconstruction_weight": LogRange(1e-4, 1e-1)}

    def build_extra(self, opts: dict, generators: list[torch.Generator]) -> None:
        self.reconstruction_weight = float(opts["reconstruction_weight"])
        self.decoders = nn.ModuleList(
            StackedMLP([self.k, self.h, self.h, self.h, d], generators) for d in self.net_dims
        )
        self.last_reconstruction: torch.Tensor | None = None  # [R] summed MSE of the last DCCA batch

    def representation_modules(self) -> list[nn.Module]:
        return [*self.nets, *self.decoders]

    def reconstruction_error(
        self, xs: list[torch.Tensor], hs: list[torch.Tensor], present: torch.Tensor
    ) -> torch.Tensor:
        """Sum over modalities of the MSE of the reconstruction on the observed rows -> [R]; xs: the networks'
        inputs (imputed, then PCA-reduced with the guard)."""
        return sum(
            observed_mse(dec(h), x, present[..., m])
            for m, (dec, x, h) in enumerate(zip(self.decoders, xs, hs))
        )

    def extra_loss(self, xs, hs, present):
        mse = self.reconstruction_error(xs, hs, present)
        self.last_reconstruction = mse.detach()
        return self.reconstruction_weight * mse
