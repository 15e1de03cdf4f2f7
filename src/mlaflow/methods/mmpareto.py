"""MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance (Wei & Hu, ICML 2024), following the
reference code GeWu-Lab/MMPareto_ICML2024, code/MMPareto.py `train_epoch` and code/min_norm_solvers.py.

Architecture (the reference's AVClassifier, models/models.py): the modality encoders feed a concatenation head
(one linear layer on the concatenated embeddings, see concat.py) for the multimodal loss, and each encoder also
feeds its own linear unimodal head (`head_audio`, `head_video`) for its unimodal loss. The loss is the fused
cross-entropy plus the sum of the unimodal cross-entropies (the reference's loss_mm + loss_a + loss_v); the
heads train on its plain gradient. Each encoder's gradient is replaced, per run, by the Pareto integration of
its two gradients, g_mm (of the multimodal loss) and g_u (of its own unimodal loss; the other modalities'
unimodal losses do not reach it):

1. Direction: over all the encoder's parameters flattened into one vector, if cos(g_mm, g_u) > 0 the weights
   are 0.5 / 0.5; otherwise the two-task min-norm (MGDA) weights of MinNormSolver.find_min_norm_element, which
   for two vectors is `_min_norm_element_from2`: c = (g_u.g_u - g_mm.g_u) / |g_mm - g_u|^2 on g_mm, 1 - c on
   g_u, with the reference's edge cases c = 0.999 if g_mm.g_u >= g_mm.g_mm and c = 0.001 if g_mm.g_u >=
   g_u.g_u (with a conflict these happen only when a gradient is zero).
2. Per parameter tensor: new = 2 c g_mm + 2 (1 - c) g_u (the reference's 2 * k); with t = the tensor's summed
   gradient g_mm + g_u (the reference's param.grad after backward of the total loss), if |t| / |new| > 1 the
   gradient is new * |t| / |new| * gamma, else new * gamma: the magnitude is raised to the summed gradient's,
   never lowered, and gamma (the reference's hard-coded 1.5) enhances it. With no conflict new = t, so the
   encoder's gradient is the summed gradient times gamma.

Choices and deviations:
- Parameters: the reference integrates every parameter of the encoders (all names with `audio` / `visual`
  that are not heads: convolution kernels and batch-norm weights and biases alike, for the cosine, the MGDA
  dot products and the replacement). So do we: every parameter of each encoder (MLP weights and biases,
  ResNet kernels and batch-norm affines), not only OGM-GE's `modulated_parameters`.
- Stacked runs: every quantity (dot products, cosine sign, weights, norms, rescaling) is per run, over the
  parameters' leading run axis, in batched tensor operations.
- Gradients: g_u by `torch.autograd.grad` of the summed unimodal losses in `batch_step` (one extra backward
  through the unimodal heads and encoders), g_mm = (gradient of the total loss) - g_u, which is the same in exact
  arithmetic and saves the reference's third backward pass.
- More than two modalities: each encoder is integrated with its own pair (g_mm, g_u_m), as the reference does
  for audio and visual separately.
- Missing modalities: a masked cell's embedding is zero (joint.py) and gets no unimodal loss (the unimodal
  loss of m is the mean over the samples where m is present); encoder m and its unimodal head step only in
  runs whose batch has m present; the fusion head steps in every run with a batch.
- A zero integrated gradient (|new| = 0; the reference divides by it and gets NaN or 0) stays zero.
- Rescaling (option `rescale`): `tensor` (default) is the reference's, each parameter tensor scaled by its own
  |t| / |new|; where a tensor's integrated gradient nearly cancels while its summed one does not, that ratio is
  unbounded (up to 1e6 on the tests' 8-wide MLP, which makes the loss spike at lr 0.05). `encoder` uses the
  norms of the whole encoder's gradient, the level at which the weights are computed: one factor per run and
  encoder, >= 1 under a conflict (the min-norm point is no longer than the midpoint).
Prediction: the fusion head (zero logits for samples with no modality present); each modality's own
prediction is its unimodal head, as the reference evaluates acc_a and acc_v.
Options (`method_params.mmpareto`): gamma (default 1.5, the reference's value), rescale (tensor | encoder,
default tensor).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from mlaflow.errors import ParamsError
from mlaflow.methods.base import Batch, RunGroup, StackedLinear, Step, masked_cross_entropy
from mlaflow.methods.concat import ConcatHead
from mlaflow.methods.joint import JointFusion
from mlaflow.methods.space import Range

RESCALE = ("tensor", "encoder")  # method_params.mmpareto.rescale


def min_norm_weight(v11: torch.Tensor, v12: torch.Tensor, v22: torch.Tensor) -> torch.Tensor:
    """MinNormSolver._min_norm_element_from2, per run: the weight c [R] of x1 in argmin |c x1 + (1 - c) x2|
    from the dot products v11 = x1.x1, v12 = x1.x2, v22 = x2.x2 [R], with the reference's clipping."""
    c = (v22 - v12) / (v11 + v22 - 2 * v12).clamp(min=torch.finfo(v11.dtype).tiny)
    c = torch.where(v12 >= v22, torch.full_like(c, 0.001), c)
    return torch.where(v12 >= v11, torch.full_like(c, 0.999), c)  # checked first in the reference


def pareto_weights(v11: torch.Tensor, v12: torch.Tensor, v22: torch.Tensor) -> torch.Tensor:
    """The multimodal gradient's weight [R]: 0.5 where cos(g_mm, g_u) > 0 (the sign of v12), else MGDA's."""
    return torch.where(v12 > 0, torch.full_like(v12, 0.5), min_norm_weight(v11, v12, v22))


def integrate(
    g_mm: list[torch.Tensor],
    g_u: list[torch.Tensor],
    summed: list[torch.Tensor],
    c: torch.Tensor,
    gamma: float,
    rescale: str = "tensor",
) -> list[torch.Tensor]:
    """The reference's new gradient of an encoder's parameter tensors (lists of [R, ...]): 2 c g_mm + 2 (1 - c)
    g_u, scaled up to the norm of `summed` (never down) where that is larger, times gamma; c [R]. The norms are
    each tensor's (`rescale: tensor`, the reference) or the whole encoder's (`encoder`)."""
    shapes = [(-1,) + (1,) * (g.dim() - 1) for g in g_mm]
    new = [2 * c.view(sh) * mm + 2 * (1 - c).view(sh) * u for mm, u, sh in zip(g_mm, g_u, shapes)]
    new_sq = [n.flatten(1).square().sum(dim=1) for n in new]
    summed_sq = [t.flatten(1).square().sum(dim=1) for t in summed]
    if rescale == "encoder":
        new_sq, summed_sq = [sum(new_sq)] * len(new), [sum(summed_sq)] * len(new)
    out = []
    for n, n_sq, t_sq, sh in zip(new, new_sq, summed_sq, shapes):
        ratio = t_sq.sqrt() / n_sq.sqrt().clamp(min=torch.finfo(n.dtype).tiny)
        scale = torch.where((ratio > 1) & (n_sq > 0), ratio, torch.ones_like(ratio)) * gamma
        out.append(n * scale.view(sh))
    return out


def flat_dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """Per-run dot product [R] of two gradients given as lists of [R, ...] tensors (one vector per run)."""
    return sum((x * y).flatten(1).sum(dim=1) for x, y in zip(a, b))


class MMPareto(JointFusion):
    name = "mmpareto"
    # not among the methods whose weak modality the paper calls lazy (the report's laziness comparison): its
    # unimodal losses are its remedy for laziness, and its unimodal accuracy is read from their own heads, as
    # late fusion's and QMF's, not from the fused network with the other modalities deactivated
    joint_training = False
    end_to_end = True
    unimodal_rule = ("MMPareto", "each modality's own unimodal head")
    # the reference fixes gamma = 1.5 (no search); >= 1: the paper enhances the magnitude, never reduces it
    search_space: ClassVar[dict] = {"gamma": Range(1.0, 2.0)}

    def __init__(self, input_dims, n_classes, train_cfg, method_cfg, generators):
        super().__init__(input_dims, n_classes, train_cfg, method_cfg, generators)
        self.gamma = float(method_cfg.get("gamma", 1.5))
        self.rescale = method_cfg.get("rescale", "tensor")
        if self.rescale not in RESCALE:
            raise ParamsError(
                "method_params.mmpareto.rescale", f"unknown {self.rescale!r}", f"use one of {RESCALE}"
            )
        self.head = ConcatHead(self.n_modalities, self.hidden_dim, n_classes, generators)
        self.unimodal_heads = nn.ModuleList(
            StackedLinear(self.hidden_dim, n_classes, generators) for _ in range(self.n_modalities)
        )
        # for inspection: per run and encoder, the cosine and g_mm's weight of the last step ([R, M])
        self.last_cosines: torch.Tensor | None = None
        self.last_weights: torch.Tensor | None = None

    def fuse(self, h, present):
        return self.head(h, present)

    def unimodal(self, h, present):
        return torch.stack([head(h[:, m]) for m, head in enumerate(self.unimodal_heads)], dim=1)

    def weights(self, v11: torch.Tensor, v12: torch.Tensor, v22: torch.Tensor) -> torch.Tensor:
        """g_mm's weight [R] (g_u's is 1 - it); a hook, so that the tests can break it."""
        return pareto_weights(v11, v12, v22)

    def losses(self, data: RunGroup, batch: Batch, present: torch.Tensor):
        """The multimodal loss [R] and the unimodal losses [R, M] of a batch."""
        h = self.embed(data, batch, present)
        loss_mm = masked_cross_entropy(self.fuse(h, present), batch.labels, present.any(dim=-1))
        uni = self.unimodal(h, present)
        loss_u = torch.stack(
            [
                masked_cross_entropy(uni[:, m], batch.labels, present[..., m])
                for m in range(self.n_modalities)
            ],
            dim=1,
        )
        return loss_mm, loss_u

    def batch_step(self, data: RunGroup, batch: Batch, present: torch.Tensor, active: torch.Tensor) -> Step:
        loss_mm, loss_u = self.losses(data, batch, present)
        params = [p for encoder in self.encoders for p in encoder.parameters()]
        # g_u of every encoder at once: runs and encoders are independent, so one sum serves them all
        g_u = torch.autograd.grad(loss_u.sum(), params, retain_graph=True, allow_unused=True)
        g_u = [torch.zeros_like(p) if g is None else g for p, g in zip(params, g_u)]
        encoder_steps = present.any(dim=1)  # [R, M]
        stepping = dict.fromkeys(self.head.parameters(), active)
        for m, (encoder, head) in enumerate(zip(self.encoders, self.unimodal_heads)):
            stepping.update(dict.fromkeys([*encoder.parameters(), *head.parameters()], encoder_steps[:, m]))
        return Step(
            loss_mm + loss_u.sum(dim=1),
            stepping,
            active,
            context={"unimodal_grads": dict(zip(params, g_u)), "encoder_steps": encoder_steps},
        )

    @torch.no_grad()
    def after_backward(self, step: Step) -> None:
        g_u_of, encoder_steps = step.context["unimodal_grads"], step.context["encoder_steps"]
        cosines = torch.zeros(encoder_steps.shape, device=encoder_steps.device)
        weights = torch.full_like(cosines, 0.5)
        for m, encoder in enumerate(self.encoders):
            params = [p for p in encoder.parameters() if p.grad is not None]
            if not params:
                continue
            summed = [p.grad for p in params]
            g_u = [g_u_of[p] for p in params]
            g_mm = [s - u for s, u in zip(summed, g_u)]
            v11, v12, v22 = flat_dot(g_mm, g_mm), flat_dot(g_mm, g_u), flat_dot(g_u, g_u)
            c = self.weights(v11, v12, v22)
            cosines[:, m], weights[:, m] = v12 / (v11 * v22).sqrt().clamp(min=1e-8), c
            steps = encoder_steps[:, m]
            for p, new, s in zip(params, integrate(g_mm, g_u, summed, c, self.gamma, self.rescale), summed):
                p.grad = torch.where(steps.view((-1,) + (1,) * (s.dim() - 1)), new, s)
        self.last_cosines, self.last_weights = cosines, weights
