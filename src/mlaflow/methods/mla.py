"""MLA: Multimodal Learning with Alternating Unimodal Adaptation (Zhang, Yoon, Bansal, Yao, CVPR 2024).

Implements the paper's section 3 and Algorithm 1 exactly (the released code differs; see README):

- eq. 1-2, alternating unimodal learning: training step t uses modality m_t = t mod M only, with the loss
  L_t = CE(g(h_{m_t}(x)), y) over a mini-batch drawn from D_{m_t}, the samples where m_t is present.
  An epoch has M * ceil(N / B) steps (N: training samples with any modality), so each modality gets about
  one pass over the data per epoch; each modality cycles through its own shuffled stream.
- eq. 3-5, head gradient modification: the shared linear head g (weight W [C, s], bias b) is updated with the
  gradient projected by P_t: grad_W <- grad_W @ P_t (PyTorch stores W as [out, in]: projecting the input
  directions is right-multiplication); the bias has no input direction and is not projected. P_0 = I and at
  t = 0 the gradient is used as is. For t > 0, following Algorithm 1 (lines 5-6), P_t is first computed from
  P_{t-1} and the mean encoder output of the current modality (eq. 4, estimated by the mini-batch mean,
  detached), then used for the head update. P is reset for every run.
- eq. 6-8, test-time dynamic fusion, per sample: weights from the entropy of each modality's prediction;
  a masked modality gets weight 0 and the others renormalise.

Public API relied on by tests outside the package: `rls_update` (eq. 5) and `dynamic_fusion_weights`
(eq. 7-8).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mlaflow.methods.base import Method, Predictions, fuse  # fuse is eq. 6


def rls_update(P: torch.Tensor, h_mean: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 5: P_t = P_{t-1} - q_t h^T P_{t-1},  q_t = P_{t-1} h / (alpha + h^T P_{t-1} h).

    P: [s, s], h_mean: [s] (eq. 4, the mean encoder output of the current modality). Returns P_t.
    """
    P_h = P @ h_mean                                  # P_{t-1} h           [s]
    q = P_h / (alpha + h_mean @ P_h)                  # q_t                 [s]
    return P - torch.outer(q, h_mean @ P)             # P_{t-1} - q_t (h^T P_{t-1})


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 7: e = -p^T log p with p = softmax(logits) over classes. logits [..., C] -> [...]."""
    log_p = F.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def dynamic_fusion_weights(logits: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 7-8: lambda_{m,r} = exp(max_k e_{k,r} - e_{m,r}) / sum_v exp(max_k e_{k,r} - e_{v,r}).

    logits: [M, B, C]; present: optional bool [M, B] (False = modality masked for that sample: weight 0,
    the max and the sum run over present modalities only). Returns weights [M, B] that sum to 1 over M for
    every sample with at least one modality present (all zeros for a sample with none).
    """
    entropy = prediction_entropy(logits)                               # e_{m,r}   [M, B]
    if present is None:
        present = torch.ones_like(entropy, dtype=torch.bool)
    neg_inf = torch.finfo(entropy.dtype).min
    max_entropy = entropy.masked_fill(~present, neg_inf).amax(dim=0)   # max_k e_{k,r}  [B]
    score = (max_entropy - entropy).masked_fill(~present, float("-inf"))
    weights = torch.softmax(score, dim=0)                              # eq. 8
    return torch.nan_to_num(weights, nan=0.0)                          # samples with nothing present


class RLSProjector:
    """Holds the gradient modification matrix P of eq. 3-5 for the shared head's input space."""

    def __init__(self, dim: int, alpha: float, device: torch.device | str = "cpu"):
        self.alpha = alpha
        self.P = torch.eye(dim, device=device)  # P_0 = I, reset per run

    def update(self, h_mean: torch.Tensor) -> torch.Tensor:
        self.P = rls_update(self.P, h_mean.detach().to(self.P.dtype), self.alpha)
        return self.P

    def project_(self, weight_grad: torch.Tensor) -> None:
        """Eq. 3 for a linear head: grad_W <- grad_W @ P_t, in place."""
        weight_grad.copy_(weight_grad @ self.P)


class MLA(Method):
    name = "mla"

    def __init__(self, input_dims, n_classes, train_cfg, method_cfg):
        super().__init__(input_dims, n_classes, train_cfg, method_cfg)
        self.head = nn.Linear(self.hidden_dim, n_classes)  # g, shared by all modalities
        self.use_hgm = method_cfg["head_gradient_modification"] == "paper"
        self.fusion = method_cfg["fusion"]
        self.projector = RLSProjector(self.hidden_dim, method_cfg["alpha"])
        self.step = 0  # t of eq. 1, counted over the whole run

    def _apply(self, fn, *args, **kwargs):  # keep P on the module's device
        super()._apply(fn, *args, **kwargs)
        self.projector.P = fn(self.projector.P)
        return self

    def fit_epoch(self, features, present, labels, optimizer, batch_size, generator):
        M = self.n_modalities
        any_present = present.any(dim=1)
        n_steps = M * -(-int(any_present.sum()) // batch_size)
        streams = [_CyclingBatches(present[:, m].nonzero().flatten(), batch_size, generator) for m in range(M)]
        total_loss, n_taken = 0.0, 0
        for _ in range(n_steps):
            m = self.step % M                                   # eq. 1
            batch = streams[m].next()
            if batch is None:                                   # no training sample has modality m
                self.step += 1
                continue
            h = self.encoders[m](features[m][batch])            # h_{m_t}(x)
            loss = F.cross_entropy(self.head(h), labels[batch])  # eq. 2
            optimizer.zero_grad(set_to_none=True)                # other encoders get no gradient and no step
            loss.backward()
            if self.use_hgm and self.step > 0:
                self.projector.update(h.mean(dim=0))             # eq. 4 (batch mean) and eq. 5
                self.projector.project_(self.head.weight.grad)   # eq. 3
            optimizer.step()
            self.step += 1
            total_loss += loss.item()
            n_taken += 1
        return {"loss": total_loss / max(n_taken, 1)}

    @torch.no_grad()
    def predict(self, features, present):
        unimodal = torch.stack([self.head(enc(x)) for enc, x in zip(self.encoders, features)])  # [M, N, C]
        mask = present.T                                                                       # [M, N]
        if self.fusion == "dynamic":
            weights = dynamic_fusion_weights(unimodal, mask)                                   # eq. 7-8
        else:
            weights = mask.float() / mask.sum(dim=0).clamp(min=1)
        return Predictions(unimodal, fuse(unimodal, weights), present.any(dim=1))           # eq. 6


class _CyclingBatches:
    """An endless stream of shuffled mini-batches over `indices`, reshuffled at every pass."""

    def __init__(self, indices: torch.Tensor, batch_size: int, generator: torch.Generator):
        self.indices, self.batch_size, self.generator = indices, batch_size, generator
        self._pending: list[torch.Tensor] = []

    def next(self) -> torch.Tensor | None:
        if len(self.indices) == 0:
            return None
        if not self._pending:
            order = self.indices[torch.randperm(len(self.indices), generator=self.generator)]
            self._pending = list(order.split(self.batch_size))[::-1]
        return self._pending.pop()
