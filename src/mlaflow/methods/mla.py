"""MLA: Multimodal Learning with Alternating Unimodal Adaptation (Zhang, Yoon, Bansal, Yao, CVPR 2024).

Implements the paper's section 3 and Algorithm 1 exactly (the released code differs; see README):

- eq. 1-2, alternating unimodal learning: training step t uses modality m_t = t mod M only, with the loss
  L_t = CE(g(h_{m_t}(x)), y) over a mini-batch drawn from D_{m_t}, the samples where m_t is present.
  An epoch has M * ceil(N / B) steps (N: training samples with any modality), so each modality gets about
  one pass over the data per epoch; each modality cycles through its own shuffled stream.
- eq. 3-5, head gradient modification: the shared linear head g (weight W [C, s], bias b) is updated with the
  gradient projected by P_t: grad_W <- grad_W @ P_t (W is stored as [out, in]: projecting the input
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

from mlaflow.methods.base import Batch, Method, Predictions, RunGroup, StackedLinear, fuse, masked_cross_entropy


def rls_update(P: torch.Tensor, h_mean: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 5: P_t = P_{t-1} - q_t h^T P_{t-1},  q_t = P_{t-1} h / (alpha + h^T P_{t-1} h).

    P: [s, s], h_mean: [s] (eq. 4, the mean encoder output of the current modality). Returns P_t.
    Leading batch axes are allowed (P [R, s, s], h_mean [R, s]): one independent update per run.
    """
    P_h = (P @ h_mean.unsqueeze(-1)).squeeze(-1)                          # P_{t-1} h        [..., s]
    q = P_h / (alpha + (h_mean * P_h).sum(-1, keepdim=True))             # q_t              [..., s]
    h_P = (h_mean.unsqueeze(-2) @ P).squeeze(-2)                         # h^T P_{t-1}      [..., s]
    return P - q.unsqueeze(-1) * h_P.unsqueeze(-2)                        # P_{t-1} - q_t h^T P_{t-1}


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


class MLA(Method):
    name = "mla"

    def __init__(self, input_dims, n_classes, train_cfg, method_cfg, generators):
        super().__init__(input_dims, n_classes, train_cfg, method_cfg, generators)
        self.head = StackedLinear(self.hidden_dim, n_classes, generators)  # g, shared by all modalities
        self.use_hgm = method_cfg["head_gradient_modification"] == "paper"
        self.fusion = method_cfg["fusion"]
        self.alpha = method_cfg["alpha"]
        # P of eq. 3-5, one per run: P_0 = I, reset per run (not saved with the weights)
        self.register_buffer("P", torch.eye(self.hidden_dim).repeat(self.n_runs, 1, 1), persistent=False)
        self.step = [0] * self.n_runs  # t of eq. 1, per run, counted over the whole run

    def fit_epoch(self, data: RunGroup, optimizer, batch_size: int) -> torch.Tensor:
        M, R = self.n_modalities, self.n_runs
        train_rows = data.rows("train")
        n_steps = [M * -(-len(rows) // batch_size) for rows in train_rows]  # a multiple of M for every run
        present_train = [data.present[r, rows] for r, rows in enumerate(train_rows)]
        streams = [[_CyclingBatches(rows[present_train[r][:, m]], batch_size, data.generators[r]) for m in range(M)]
                   for r, rows in enumerate(train_rows)]
        loss_sum = torch.zeros(R, device=data.device)
        n_taken = torch.zeros(R, device=data.device)
        empty = train_rows[0][:0]
        for j in range(max(n_steps)):
            m = j % M                        # eq. 1: every run's t is a multiple of M at the start of an epoch
            rows, active, t = [], [], []
            for r in range(R):
                batch_rows = streams[r][m].next() if j < n_steps[r] else None
                t.append(self.step[r])
                self.step[r] += int(j < n_steps[r])
                rows.append(empty if batch_rows is None else batch_rows)
                active.append(batch_rows is not None)
            active = torch.tensor(active, device=data.device)
            if not bool(active.any()):
                continue
            batch = data.padded(rows, batch_size)
            self.set_active_runs(active)
            h = self.encoders[m](data.inputs(m, batch.idx, batch.valid))            # h_{m_t}(x)  [R, B, s]
            loss = masked_cross_entropy(self.head(h), batch.labels, batch.valid)    # eq. 2, per run
            optimizer.zero_grad()
            loss.sum().backward()                                                   # runs are independent
            if self.use_hgm:
                project = active & (torch.tensor(t, device=data.device) > 0)
                valid = batch.valid.unsqueeze(-1).float()
                h_mean = (h.detach() * valid).sum(1) / valid.sum(1).clamp(min=1)    # eq. 4 (batch mean)
                gate = project.view(-1, 1, 1)
                self.P = torch.where(gate, rls_update(self.P, h_mean, self.alpha), self.P)   # eq. 5
                grad = self.head.weight.grad
                self.head.weight.grad = torch.where(gate, grad @ self.P, grad)              # eq. 3
            stepping = [*self.encoders[m].parameters(), *self.head.parameters()]    # other encoders: no step
            optimizer.step({p: active for p in stepping})
            loss_sum += loss.detach() * active
            n_taken += active
        return loss_sum / n_taken.clamp(min=1)

    @torch.no_grad()
    def predict(self, data: RunGroup, batch: Batch) -> Predictions:
        unimodal = torch.stack([self.head(enc(data.inputs(m, batch.idx, batch.valid)))
                                for m, enc in enumerate(self.encoders)], dim=1)       # [R, M, n, C]
        present = data.present_at(batch.idx, batch.valid).permute(0, 2, 1)             # [R, M, n]
        if self.fusion == "dynamic":
            R, M, n, C = unimodal.shape
            flat = dynamic_fusion_weights(unimodal.transpose(0, 1).reshape(M, R * n, C),
                                          present.transpose(0, 1).reshape(M, R * n))   # eq. 7-8, per sample
            weights = flat.view(M, R, n).transpose(0, 1)
        else:
            weights = present.float() / present.sum(dim=1, keepdim=True).clamp(min=1)
        return Predictions(unimodal, fuse(unimodal, weights))                          # eq. 6


class _CyclingBatches:
    """An endless stream of shuffled mini-batches over `indices`, reshuffled at every pass."""

    def __init__(self, indices: torch.Tensor, batch_size: int, generator: torch.Generator):
        self.indices, self.batch_size, self.generator = indices, batch_size, generator
        self._pending: list[torch.Tensor] = []

    def next(self) -> torch.Tensor | None:
        if len(self.indices) == 0:
            return None
        if not self._pending:
            order = self.indices[torch.randperm(len(self.indices), generator=self.generator).to(self.indices.device)]
            self._pending = list(order.split(self.batch_size))[::-1]
        return self._pending.pop()
