"""FiLM fusion (Perez et al., AAAI 2018; appendix A.2 "FiLM"; OGM-GE's `FiLM` module,
GeWu-Lab/OGM-GE_CVPR2022, models/fusion_modules.py).

One modality, the condition c (option `condition`, default text: A.2 conditions on "either audio or text",
and text is IEMOCAP's strongest modality), goes through a linear layer hidden_dim -> 2 * hidden_dim whose
output is split into gamma (first half) and beta (second half), as OGM-GE's code does. Each other modality
m is modulated feature-wise, z_m = gamma * h_m + beta, and one linear layer on the concatenation of the z_m
(in modality order, (M - 1) * hidden_dim -> classes) gives the fused logits. With two modalities this is
exactly OGM-GE's FiLM; with three, both non-condition modalities share the same gamma and beta. The condition
modality is in the tuning stage's search space (`search_space`): conditioned on the strongest modality, FiLM is
effectively that modality alone, so which one conditions is chosen on validation rather than fixed.

Missing modalities (zero-filled embeddings, see joint.py), in training and in the fused predictions: a
masked condition gives gamma, beta = the FiLM layer's biases (left so: it is what the network is trained on
for such samples, and what it predicts for a test sample whose condition is masked); a masked modulated
modality gives z_m = beta.

Unimodal evaluation (section 4.1.1, the network with the other modalities deactivated):
- A modulated modality m: its own embedding h_m; the other modulated modalities zero-filled (z = beta, as
  for a missing modulated modality in training; their training mean would only add another per-class
  constant); and the condition deactivated by its TRAINING MEAN embedding, not by zeros:
  gamma, beta = film(mean h_c). Deactivating the condition by zeros leaves gamma, beta at the layer's
  biases, a constant predictor wherever the gamma bias is small: h_m reaches the head only through
  gamma * h_m, and the network learnt gamma from real condition embeddings, never from a zero one (with
  complete training data). With h_m fixed, the logits are affine in h_c, so the training mean gives exactly
  these logits averaged over the condition's training embeddings. It cannot make a modality count that
  the trained network ignores: on the embedded corpus FiLM's fused output hardly moves with audio or visual,
  and both stay (near) constant predictors under either deactivation.
  The mean is taken at each prediction, per run, over the run's training rows where the condition is
  present (as the method is told: with `masked_input: zero_fill`, every training row, masked cells reading
  as zeros), through the condition encoder in its current (eval) mode; masked cells are never read. A run
  with no such row falls back to zeros.
- The condition modality c: fc([beta(h_c), ...]) with the modulated modalities zero-filled, its only path
  to the output (not constant: beta varies with h_c).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from mlaflow.methods.base import Batch, Predictions, RunGroup, StackedLinear
from mlaflow.methods.joint import JointFusion
from mlaflow.methods.space import MODALITIES, Choice


class FiLM(JointFusion):
    name = "film"
    # the condition modality is searched: FiLM conditioned on the strongest modality is that modality alone
    search_space: ClassVar[dict] = {"condition": Choice(MODALITIES)}
    modality_options = ("condition",)

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

    @torch.no_grad()
    def condition_training_mean(self, data: RunGroup) -> torch.Tensor:
        """Per run, the mean condition embedding [R, s] over its training rows where the condition is
        present (zeros for a run with none), from the encoder in its current mode."""
        c = self.condition
        train = data.padded(data.rows("train"))
        on = data.present_at(train.idx, train.valid)[..., c]  # [R, n]
        h_c = self.encode(c, data, train).masked_fill(~on.unsqueeze(-1), 0.0)
        return h_c.sum(dim=1) / on.sum(dim=1, keepdim=True).clamp(min=1)

    def unimodal(self, h, present, condition_mean: torch.Tensor | None = None):
        """Per-modality logits [R, M, B, C] (see the module's docstring). condition_mean [R, s]: what stands
        for the deactivated condition when a modulated modality is evaluated (None: zeros, the generic
        JointFusion deactivation)."""
        if condition_mean is None:
            return super().unimodal(h, present)
        c = self.condition
        out = []
        for m in range(self.n_modalities):
            keep = torch.zeros(self.n_modalities, dtype=torch.bool, device=h.device)
            keep[m] = True
            h_m = h.masked_fill(~keep.view(1, -1, 1, 1), 0.0)  # only m's (already zero-filled) embedding
            if m != c:
                h_m[:, c] = condition_mean.unsqueeze(1).expand_as(h_m[:, c])
            gamma, beta = self.film_parameters(h_m[:, c])
            out.append(self.modulate_and_classify(h_m, gamma, beta))
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def predict(self, data: RunGroup, batch: Batch) -> Predictions:
        present = data.present_at(batch.idx, batch.valid)
        h = self.embed(data, batch, present)
        fused = self.fuse(h, present).masked_fill(~present.any(dim=-1, keepdim=True), 0.0)
        return Predictions(self.unimodal(h, present, self.condition_training_mean(data)), fused)
