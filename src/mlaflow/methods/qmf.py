"""QMF: Quality-aware Multimodal Fusion (Zhang, Wu, Han, Hu, Zhu, Peng, Zhang, ICML 2023), following the
reference code QingyangZhang/QMF (text-image-classification/src/models/late_fusion.py and train_qmf.py;
RGBD-scene-recognition/models/QMF.py and train_QMF_nyud2.py for the ranking-loss weight).

Architecture as late fusion (appendix A.2: "we applied QMF similarly to the late fusion setting"): one
encoder and one linear head per modality, f_m = head_m(encoder_m(x_m)).

- Energy and fusion weight: E_m = -T * logsumexp(f_m / T) (T = `energy_temperature`, 1 in the reference),
  w_m = -confidence_scale * E_m (the reference's `energy / 10`, `confidence_scale` 0.1): a lower energy
  gives a higher weight. The fused logits are sum_m w_m f_m over the present modalities, unnormalised as in
  the reference; the weights are detached in the fusion (text-image code; the RGBD code does not detach).
- Loss: sum_m CE(f_m) + CE(fused) + rank_loss_weight * sum_m rank_m. rank_m is the reference's
  `rank_loss` on the confidences w_m (not detached): each sample of the batch is paired with the next one
  (torch.roll by -1); a History keeps every training sample's cumulative cross-entropy of that modality,
  min-max normalised over the training samples (n in [0, 1]); with t = sign(n_1 - n_2) and margin
  |n_1 - n_2| the pair's loss is max(0, t * (w_1 - w_2) - margin) (MarginRankingLoss with the reference's
  target and margin, simplified), averaged over the batch. As in the text-image code the history is updated
  with the batch's losses before the ranking loss is computed. rank_loss_weight defaults to 0.1 (the RGBD
  code's `lamb`; the text-image code adds the ranking loss with weight 1).

Missing modalities: modality m's cross-entropy and ranking loss run over the samples where m is present
only (the pairs are formed among those, in batch order, cyclically); its history counts those samples
only, and the min-max normalisation runs over the run's training samples where m is present; a masked
modality has fusion weight 0 and is dropped from the sum. Encoder m and head m step only in runs whose
batch has m present. The history is per run and per modality, reset when the method is built.
Unimodal evaluation (section 4.1.1, deactivating the other modalities): modality m's own logits f_m (the
fused output with only m present is w_m f_m, whose argmax is the same whenever w_m > 0).
Simplifications: no gradient accumulation, and the reference's dropout/ReduceLROnPlateau schedule is
replaced by the shared training loop of mlaflow.
"""

from __future__ import annotations

from typing import ClassVar

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
from mlaflow.methods.space import LogRange


def energy_score(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """E = -T * logsumexp(logits / T) over classes: [..., C] -> [...]."""
    return -temperature * torch.logsumexp(logits / temperature, dim=-1)


def qmf_weights(logits: torch.Tensor, temperature: float = 1.0, scale: float = 0.1) -> torch.Tensor:
    """Fusion weights (the reference's confidences) w = -scale * E: [..., C] -> [...]."""
    return -scale * energy_score(logits, temperature)


def ranking_loss(confidence: torch.Tensor, correctness: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    """The reference's `rank_loss` per run: confidence, correctness (normalised cumulative loss) and on
    (sample counted) [R, B] -> [R]. Each counted sample is paired with the next counted one in batch order,
    the last with the first; loss max(0, t * (c_1 - c_2) - |n_1 - n_2|), t = sign(n_1 - n_2), mean over
    the counted samples."""
    B = on.shape[1]
    order = torch.sort((~on).to(torch.uint8), dim=1, stable=True).indices  # counted samples first
    count = on.sum(dim=1, keepdim=True)
    position = torch.arange(B, device=on.device).expand_as(on)
    partner = order.gather(1, torch.where(position + 1 < count, position + 1, 0))
    c1, c2 = confidence.gather(1, order), confidence.gather(1, partner)
    n1, n2 = correctness.gather(1, order), correctness.gather(1, partner)
    pair_loss = torch.relu(torch.sign(n1 - n2) * (c1 - c2) - (n1 - n2).abs())
    return (pair_loss * (position < count)).sum(dim=1) / count.squeeze(1).clamp(min=1)


class QMF(Method):
    name = "qmf"
    end_to_end = True
    search_space: ClassVar[dict] = {"rank_loss_weight": LogRange(0.01, 1.0)}
    unimodal_rule = ("QMF", "each modality's classifier")

    def __init__(self, input_dims, n_classes, train_cfg, method_cfg, generators):
        super().__init__(input_dims, n_classes, train_cfg, method_cfg, generators)
        options = method_cfg
        self.rank_loss_weight = options["rank_loss_weight"]
        self.temperature, self.scale = options["energy_temperature"], options["confidence_scale"]
        self.heads = nn.ModuleList(
            StackedLinear(self.hidden_dim, n_classes, generators) for _ in self.input_dims
        )
        self.history: torch.Tensor | None = None  # [R, M, N] cumulative CE of each training sample
        self.tracked: torch.Tensor | None = None  # [R, M, N] the training samples where m is present

    def unimodal_logits(self, data: RunGroup, batch: Batch) -> torch.Tensor:
        # [R, M, B, C]
        return torch.stack([head(self.encode(m, data, batch)) for m, head in enumerate(self.heads)], dim=1)

    def _start_history(self, data: RunGroup) -> None:
        n = len(data.labels)
        self.history = torch.zeros(self.n_runs, self.n_modalities, n, device=data.device)
        self.tracked = torch.zeros(self.n_runs, self.n_modalities, n, dtype=torch.bool, device=data.device)
        for r, rows in enumerate(data.rows("train")):
            self.tracked[r][:, rows] = data.present[r, rows].T

    def normalised_history(self, idx: torch.Tensor) -> torch.Tensor:
        """History at rows idx [R, B], min-max normalised per run and modality -> [R, M, B]."""
        low = self.history.masked_fill(~self.tracked, float("inf")).amin(dim=-1, keepdim=True)
        high = self.history.masked_fill(~self.tracked, float("-inf")).amax(dim=-1, keepdim=True)
        at = self.history.gather(2, idx.unsqueeze(1).expand(-1, self.n_modalities, -1))
        return (at - low) / (high - low).clamp(min=1e-12)

    def training_steps(self, data: RunGroup, batch_size: int, epoch: int):
        if self.history is None:
            self._start_history(data)
        return super().training_steps(data, batch_size, epoch)

    def batch_step(self, data: RunGroup, batch: Batch, present: torch.Tensor, active: torch.Tensor) -> Step:
        R, M = self.n_runs, self.n_modalities
        on = present.permute(0, 2, 1)  # [R, M, B]
        logits = self.unimodal_logits(data, batch)  # [R, M, B, C]
        weights = qmf_weights(logits, self.temperature, self.scale)  # [R, M, B]
        fused = fuse(logits, weights.detach().masked_fill(~on, 0.0))
        labels = batch.labels.unsqueeze(1).expand(-1, M, -1)
        ce = torch.nn.functional.cross_entropy(logits.flatten(0, 2), labels.flatten(), reduction="none").view(
            R, M, -1
        )
        unimodal_loss = (ce * on).sum(dim=-1) / on.sum(dim=-1).clamp(min=1)  # [R, M]
        loss = unimodal_loss.sum(dim=1) + masked_cross_entropy(fused, batch.labels, present.any(dim=-1))
        # History first (as the text-image code), then the ranking loss on the updated history.
        runs = torch.arange(R, device=data.device).view(R, 1, 1)
        modalities = torch.arange(M, device=data.device).view(1, M, 1)
        self.history.index_put_(
            (runs, modalities, batch.idx.unsqueeze(1)), (ce.detach() * on), accumulate=True
        )
        correctness = self.normalised_history(batch.idx)  # [R, M, B]
        rank = ranking_loss(weights.flatten(0, 1), correctness.flatten(0, 1), on.flatten(0, 1)).view(R, M)
        loss = loss + self.rank_loss_weight * rank.sum(dim=1)
        runs_with = on.any(dim=-1)  # [R, M]
        stepping = {}
        for m, (encoder, head) in enumerate(zip(self.encoders, self.heads)):
            stepping.update(dict.fromkeys([*encoder.parameters(), *head.parameters()], runs_with[:, m]))
        return Step(loss, stepping, active)

    @torch.no_grad()
    def predict(self, data: RunGroup, batch: Batch) -> Predictions:
        logits = self.unimodal_logits(data, batch)
        on = data.present_at(batch.idx, batch.valid).permute(0, 2, 1)
        weights = qmf_weights(logits, self.temperature, self.scale).masked_fill(~on, 0.0)
        return Predictions(logits, fuse(logits, weights))
