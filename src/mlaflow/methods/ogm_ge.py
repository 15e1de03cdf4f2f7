"""OGM-GE: On-the-fly Gradient Modulation with Generalization Enhancement (Peng, Wei, Deng, Wang, Hu,
CVPR 2022), following the reference code GeWu-Lab/OGM-GE_CVPR2022, main.py `train_epoch`.

Fusion (option `fusion`): concat (default, as the reference code's default and appendix A.2: "implied in
the setting of concatenation", see concat.py) or sum (see sum_fusion.py). Trained on the fused
cross-entropy like the plain fusion; after backward and before the optimiser step, per run:

1. Scores: each modality's branch output (concat: its sub-head W_m h_m + b / M; sum: fc_m(h_m)), softmax,
   probability of the true class, averaged over the batch's samples where that modality is present. The
   reference sums over the batch; with complete modalities the ratios below are the same, and the mean
   keeps them comparable when modalities are missing from different numbers of samples.
2. Ratio and coefficient (paper eq. 10; the reference code's form): the dominant modality d is the one
   with the highest score; rho = score_d / (mean score of the other modalities present in the batch; with
   two modalities, score_d / score_other as in the reference). k_d = 1 - tanh(alpha * rho) if rho > 1,
   every other modality k = 1. Note: the reference code and the paper use tanh(alpha * rho), not
   tanh(alpha * (rho - 1)), so k jumps from 1 to 1 - tanh(alpha) as rho crosses 1. A run with fewer than
   two modalities in its batch is not modulated (k = 1).
3. Modulation (`modulation`: ogm_ge | ogm | none), only in epochs modulation_starts <= epoch <=
   modulation_ends (0-based, both ends inclusive, as the reference). The reference modulates the encoders'
   4-D gradients (conv kernels): so do the ResNet encoders of `train.encoder: resnet18`; the MLP encoders are
   linear, so there we modulate their weight matrices and leave their biases alone
   (`modulated_parameters` of each encoder). ogm: grad <- k_m * grad. ogm_ge: grad <- k_m * grad + N(0, std(grad) + 1e-8), the
   noise's std is that of the run's unmodulated gradient tensor and the noise is drawn from the run's own
   generator, only in runs where that encoder steps. Every modality gets the noise, dominant or not.

Defaults: alpha 0.1, modulation window 0..50 (the reference README's "default modulation setting"; it
recommends alpha 0.8 for CREMA-D).
Unimodal evaluation (section 4.1.1 lists OGM-GE among the methods evaluated by deactivating the other
modalities): the fused network with the other modalities' embeddings zero-filled; for concat that is
W_m h_m + b (the whole bias), for sum fc_m(h_m).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from mlaflow.methods.concat import ConcatHead
from mlaflow.methods.joint import JointFusion
from mlaflow.methods.space import LogRange
from mlaflow.methods.sum_fusion import SumHead


def ogm_coefficients(scores: torch.Tensor, available: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 10 per run: scores [R, M] (mean true-class probability of each branch), available [R, M] (the
    modality is present in the batch) -> coefficients k [R, M]: 1 - tanh(alpha * rho) for the dominant
    modality when rho = score_d / mean(other available scores) > 1, and 1 everywhere else."""
    dominant = scores.masked_fill(~available, float("-inf")).argmax(dim=1, keepdim=True)  # [R, 1]
    n_others = available.sum(dim=1, keepdim=True) - 1
    score_dominant = scores.gather(1, dominant)
    others_mean = ((scores * available).sum(dim=1, keepdim=True) - score_dominant) / n_others.clamp(min=1)
    ratio = score_dominant / others_mean
    modulated = (n_others >= 1) & (ratio > 1)
    k_dominant = torch.where(modulated, 1 - torch.tanh(alpha * ratio), torch.ones_like(ratio))
    return torch.ones_like(scores).scatter(1, dominant, k_dominant)


class OGMGE(JointFusion):
    name = "ogm_ge"
    search_space: ClassVar[dict] = {"alpha": LogRange(0.03, 1.0)}

    def __init__(self, input_dims, n_classes, train_cfg, method_cfg, generators):
        super().__init__(input_dims, n_classes, train_cfg, method_cfg, generators)
        options = method_cfg
        self.alpha, self.modulation = options["alpha"], options["modulation"]
        self.window = (options["modulation_starts"], options["modulation_ends"])
        head = ConcatHead if options["fusion"] == "concat" else SumHead
        self.head = head(self.n_modalities, self.hidden_dim, n_classes, generators)
        self.generators = generators  # GE noise of run r comes from run r's generator
        self.last_coefficients: torch.Tensor | None = None  # k [R, M] of the last step, for inspection

    def fuse(self, h, present):
        return self.head(h, present)

    def coefficients(self, h: torch.Tensor, present: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """k [R, M] for a batch: h [R, M, B, s], present [R, B, M], labels [R, B]."""
        probs = torch.softmax(self.head.branch_logits(h), dim=-1)  # [R, M, B, C]
        index = labels[:, None, :, None].expand(-1, probs.shape[1], -1, 1)
        p_true = probs.gather(-1, index).squeeze(-1)  # [R, M, B]
        on = present.permute(0, 2, 1)
        scores = (p_true * on).sum(dim=-1) / on.sum(dim=-1).clamp(min=1)
        return ogm_coefficients(scores, on.any(dim=-1), self.alpha)

    @torch.no_grad()
    def modify_gradients(self, h, present, labels, encoder_steps):
        if self.modulation == "none" or not self.window[0] <= self.epochs_trained <= self.window[1]:
            return
        k = self.coefficients(h, present, labels)
        self.last_coefficients = k
        for m, encoder in enumerate(self.encoders):
            for weight in encoder.modulated_parameters():
                if weight.grad is None:
                    continue
                grad = weight.grad  # [R, ...]
                per_run = (-1,) + (1,) * (grad.dim() - 1)
                new = grad * k[:, m].view(per_run)
                if self.modulation == "ogm_ge":
                    std = grad.flatten(1).std(dim=1) + 1e-8  # per run, unmodulated
                    noise = torch.zeros_like(grad)
                    for r, g in enumerate(self.generators):
                        if encoder_steps[r, m]:
                            noise[r] = torch.randn(grad.shape[1:], generator=g).to(grad.device) * std[r]
                    new = new + noise
                weight.grad = torch.where(encoder_steps[:, m].view(per_run), new, grad)
