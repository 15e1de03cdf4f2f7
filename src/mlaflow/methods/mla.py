"""MLA: Multimodal Learning with Alternating Unimodal Adaptation (Zhang, Yoon, Bansal, Yao, CVPR 2024).

The default (`method_params.mla` as shipped) is the paper's section 3 and Algorithm 1, exactly:

- eq. 1-2, alternating unimodal learning (`alternation: per_step`): training step t uses modality
  m_t = t mod M only, with the loss L_t = CE(g(h_{m_t}(x)), y) over a mini-batch drawn from D_{m_t}, the
  samples where m_t is present. An epoch has M * ceil(N / B) steps (N: training samples with any modality),
  so each modality gets about one pass over the data per epoch; each modality cycles through its own
  shuffled stream.
- eq. 3-5, head gradient modification (`head_gradient_modification: paper`): the shared linear head g
  (weight W [C, s], bias b) is updated with the gradient projected by P_t: grad_W <- grad_W @ P_t (W is stored
  as [out, in]: projecting the input directions is right-multiplication); the bias has no input direction and
  is not projected. P_0 = I and at t = 0 the gradient is used as is. For t > 0, following Algorithm 1
  (lines 5-6), P_t is first computed from P_{t-1} and the mean encoder output of the current modality (eq. 4,
  estimated by the mini-batch mean, detached), then used for the head update. P is reset for every run.
  alpha is a constant (`alpha_schedule: constant`).
- eq. 6-8, test-time dynamic fusion per sample (`fusion: per_sample`): weights from the entropy of each
  modality's prediction; a masked modality gets weight 0 and the others renormalise.

The released code (Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation, main.py and
utils/utils.py GSPlugin) differs; each difference is an option, named after what it does (docs/science.md,
"Paper against released code"):

- `head_gradient_modification: released`: `released_rls_update` (outer-product denominator, Frobenius
  renormalisation of P) and grad_W <- grad_W @ P^T. `off`: no projection, which is what the released code
  actually runs (its projection only touches a parameter named `module.weight`, which does not exist).
- `alpha_schedule: decay_within_epoch`: alpha_b = alpha * 0.1 ** (b / batches_per_epoch) at batch b of the
  epoch; with alpha = 0.1 this is the released 0.1 ** (1 + b / batches_per_epoch).
- `alternation: in_batch`: one forward of all encoders per mini-batch, then for each modality in a fixed order
  (audio, visual, text) one backward and one optimiser step on that same batch: M optimiser steps per batch.
- `fusion: per_batch`: one entropy per modality per test batch, of the softmax over the batch axis
  (`per_batch_fusion_weights`); `fixed`: constant weights (`fixed_weights`); `average`: equal weights.

How the projection combines with SGD's momentum and weight decay the paper does not say; it states neither
of the two readings, and both are options (`head_update`):

- `head_update: project_gradient` (default, the behaviour above): the head's gradient is projected before the
  optimiser step, as eq. 3 reads and as a natural reading of "SGD with momentum 0.9" gives. The projected
  gradient then enters SGD's momentum buffer and weight decay is added after the projection, so the step taken
  is not in P_t's range: it keeps a component along the current modality's mean feature (past steps' momentum,
  projected by older P, and the decay term -lr * wd * W, not projected at all).
- `head_update: project_step`: the optimiser steps on the raw gradient (momentum and weight decay as usual),
  and the change it made to the head's weight is projected afterwards (`after_step`):
  W <- W_old + (W_new - W_old) @ P_t (P_t^T with `head_gradient_modification: released`; nothing with `off`),
  for the runs that took the step and have t > 0, exactly where `project_gradient` projects the gradient; the
  bias is not projected. It guarantees that the update actually applied to W at step t is D @ P_t (D the
  optimiser's raw change, momentum and weight decay included), so with `paper` (W_new - W_old) h = D P_t h
  and P_t h = alpha / (alpha + h^T P_{t-1} h) * P_{t-1} h (eq. 5): |(W_new - W_old) h| <= ||D|| |P_t h|, the
  applied update is orthogonal to the current modality's mean feature h (eq. 4) up to eq. 5's alpha, whatever
  the momentum and weight decay. The momentum buffer keeps the raw gradients. With momentum 0 and weight decay
  0 both options take the same step, -lr * grad_W @ P_t.

Public API relied on by tests outside the package: `rls_update` (eq. 5) and `dynamic_fusion_weights`
(eq. 7-8).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from mlaflow.errors import ParamsError
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

FUSION_RULES = ("per_sample", "per_batch", "fixed", "average")
HEAD_UPDATES = ("project_gradient", "project_step")


# ------------------------------------------------------------------------------- eq. 3-5: the projector P


def rls_update(P: torch.Tensor, h_mean: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """Eq. 5: P_t = P_{t-1} - q_t h^T P_{t-1},  q_t = P_{t-1} h / (alpha + h^T P_{t-1} h).

    P: [s, s], h_mean: [s] (eq. 4, the mean encoder output of the current modality). Returns P_t.
    Leading batch axes are allowed (P [R, s, s], h_mean [R, s], alpha a float or [R]): one update per run.
    """
    alpha = torch.as_tensor(alpha, dtype=P.dtype, device=P.device)
    if alpha.dim():
        alpha = alpha.reshape(-1, 1)  # one alpha per run
    P_h = (P @ h_mean.unsqueeze(-1)).squeeze(-1)  # P_{t-1} h        [..., s]
    q = P_h / (alpha + (h_mean * P_h).sum(-1, keepdim=True))  # q_t              [..., s]
    h_P = (h_mean.unsqueeze(-2) @ P).squeeze(-2)  # h^T P_{t-1}      [..., s]
    return P - q.unsqueeze(-1) * h_P.unsqueeze(-2)  # P_{t-1} - q_t h^T P_{t-1}


def released_rls_update(P: torch.Tensor, h_mean: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """The released code's update (utils/utils.py, GSPlugin.before_update), not the paper's eq. 5:

        k = P h;  P <- P - (k k^T) / (alpha + k h^T)   (elementwise division by an s x s outer product)
        P <- P / ||P||_F

    and the head's gradient is then projected by P^T (`grad @ P.T`). Same shapes as `rls_update`."""
    alpha = torch.as_tensor(alpha, dtype=P.dtype, device=P.device)
    if alpha.dim():
        alpha = alpha.reshape(-1, 1, 1)  # one alpha per run
    k = (P @ h_mean.unsqueeze(-1)).squeeze(-1)  # [..., s]
    denominator = alpha + k.unsqueeze(-1) * h_mean.unsqueeze(-2)  # [..., s, s]
    P_next = P - (k.unsqueeze(-1) * k.unsqueeze(-2)) / denominator
    return P_next / torch.linalg.matrix_norm(P_next, ord="fro", keepdim=True)


# ------------------------------------------------------------------------------------ eq. 6-8: fusion


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 7: e = -p^T log p with p = softmax(logits) over classes. logits [..., C] -> [...]."""
    log_p = F.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def entropy_fusion_weights(entropy: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Eq. 8 given entropies [..., M, B]: lambda_m = exp(max_k e_k - e_m) / sum_v exp(max_k e_k - e_v), the max
    and the sum over the modalities present for each sample; 0 for masked ones (and for samples with none)."""
    neg_inf = torch.finfo(entropy.dtype).min
    max_entropy = entropy.masked_fill(~present, neg_inf).amax(dim=-2, keepdim=True)
    score = (max_entropy - entropy).masked_fill(~present, float("-inf"))
    return torch.nan_to_num(torch.softmax(score, dim=-2), nan=0.0)


def dynamic_fusion_weights(logits: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 7-8 per sample: lambda_{m,r} = exp(max_k e_{k,r} - e_{m,r}) / sum_v exp(max_k e_{k,r} - e_{v,r}).

    logits: [M, B, C] (leading axes allowed); present: optional bool [M, B] (False = modality masked for that
    sample: weight 0, the max and the sum run over present modalities only). Returns weights [M, B] that sum to
    1 over M for every sample with at least one modality present (all zeros for a sample with none).
    """
    entropy = prediction_entropy(logits)  # e_{m,r}   [M, B]
    if present is None:
        present = torch.ones_like(entropy, dtype=torch.bool)
    return entropy_fusion_weights(entropy, present)


def batch_entropy(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """The released code's entropy (main.py, calculate_entropy): p = softmax over the *batch* axis, one scalar
    -sum(p log p) over all samples and classes of the batch. logits [..., M, b, C], present [..., M, b]
    (only present samples take part) -> [..., M]."""
    mask = present.unsqueeze(-1)
    log_p = F.log_softmax(logits.masked_fill(~mask, float("-inf")), dim=-2)
    terms = (log_p.exp() * log_p).masked_fill(~mask, 0.0)
    return -terms.sum(dim=(-2, -1))


def per_batch_fusion_weights(logits: torch.Tensor, present: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The released code's fusion: samples are taken in order in batches of `batch_size` (its test loader, no
    shuffling); within a batch every sample gets the same lambda, eq. 8 on `batch_entropy`. The weights depend
    on the batch's composition. logits [..., M, B, C], present [..., M, B] -> [..., M, B] (masked: 0)."""
    weights = torch.zeros(present.shape, dtype=logits.dtype, device=logits.device)
    for start in range(0, present.shape[-1], batch_size):
        part = slice(start, start + batch_size)
        entropy = batch_entropy(logits[..., part, :], present[..., part])  # [..., M]
        shared = entropy.unsqueeze(-1).expand(present[..., part].shape)  # same e for the batch
        weights[..., part] = entropy_fusion_weights(shared, present[..., part])
    return weights


def fixed_fusion_weights(present: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """Constant weight per modality (the released code's non-dynamic fusion: audio .35, visual .25, text .40),
    renormalised over the present modalities. present [..., M, B] -> [..., M, B]."""
    w = torch.tensor(weights, dtype=torch.float32, device=present.device).unsqueeze(-1) * present
    return w / w.sum(dim=-2, keepdim=True).clamp(min=1e-12)


def fusion_weights(
    rule: str, logits: torch.Tensor, present: torch.Tensor, batch_size: int, fixed: list[float]
) -> torch.Tensor:
    """Weights [..., M, B] of a fusion rule (FUSION_RULES) for logits [..., M, B, C]."""
    if rule == "per_sample":
        return dynamic_fusion_weights(logits, present)
    if rule == "per_batch":
        return per_batch_fusion_weights(logits, present, batch_size)
    if rule == "fixed":
        return fixed_fusion_weights(present, fixed)
    if rule == "average":
        return present.float() / present.sum(dim=-2, keepdim=True).clamp(min=1)
    raise ValueError(f"unknown fusion rule {rule!r}; use one of {FUSION_RULES}")


# ----------------------------------------------------------------------------------------------- MLA


class MLA(Method):
    name = "mla"
    end_to_end = True
    search_space: ClassVar[dict] = {"alpha": LogRange(0.01, 1.0)}  # eq. 5's regulariser
    modality_weight_options = ("fixed_weights",)
    unimodal_rule = ("MLA", "the shared head on one encoder")

    @classmethod
    def check_options(cls, options: dict, modalities: list[str], variants: list[dict] = ()) -> None:
        """Fusion `fixed` (here or in a variant) needs a weight for each of the corpus's modalities."""
        super().check_options(options, modalities, variants)
        fusions = {options["fusion"], *(variant.get("fusion") for variant in variants)}
        if "fixed" in fusions and not set(modalities) <= set(options["fixed_weights"]):
            raise ParamsError(
                "method_params.mla.fixed_weights",
                f"has no weight for {sorted(set(modalities) - set(options['fixed_weights']))}, "
                "and fusion fixed needs one per modality",
                f"give a weight to each of {modalities}",
            )

    def __init__(self, input_dims, n_classes, train_cfg, method_cfg, generators):
        super().__init__(input_dims, n_classes, train_cfg, method_cfg, generators)
        self.head = StackedLinear(self.hidden_dim, n_classes, generators)  # g, shared by all modalities
        self.hgm = method_cfg["head_gradient_modification"]
        self.head_update = method_cfg["head_update"]
        if self.head_update not in HEAD_UPDATES:
            raise ParamsError(
                "method_params.mla.head_update",
                f"unknown value {self.head_update!r}",
                f"use one of {list(HEAD_UPDATES)}",
            )
        self.alpha = method_cfg["alpha"]
        self.alpha_schedule = method_cfg["alpha_schedule"]
        self.alternation = method_cfg["alternation"]
        self.fusion = method_cfg["fusion"]
        # the released code's fixed weights (IEMOCAP's modalities); without one per modality the rule is not measured
        self.fixed_weights = self.weights_by_modality("fixed_weights", method_cfg["fixed_weights"])
        if self.fixed_weights is None and self.fusion == "fixed":
            raise ParamsError(
                "method_params.mla.fixed_weights",
                f"has no weight for some of {self.modalities}",
                "give one weight per modality of the corpus",
            )
        self.eval_batch_size = train_cfg["batch_size"]  # the test batches of per-batch fusion
        # P of eq. 3-5, one per run: P_0 = I, reset per run (not saved with the weights)
        self.register_buffer("P", torch.eye(self.hidden_dim).repeat(self.n_runs, 1, 1), persistent=False)
        # t of eq. 1, per run, counted over the whole run
        self.step = torch.zeros(self.n_runs, dtype=torch.long)
        self.optimizer_steps = 0  # optimiser steps taken (any run), for tests
        # head_update: project_step: (gate [R, 1, 1], projector [R, s, s], W_old [R, C, s]) of the step
        # under way, from after_backward to after_step
        self._pending_step_projection: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------------------------ training

    def training_steps(self, data: RunGroup, batch_size: int, epoch: int):
        if self.alternation == "in_batch":
            return self._in_batch_steps(data, batch_size)
        return self._per_step_steps(data, batch_size)

    def _unimodal_step(
        self,
        m: int,
        h: torch.Tensor,
        loss: torch.Tensor,
        rows: torch.Tensor,
        active: torch.Tensor,
        batch_index: int,
        batches_per_epoch: torch.Tensor,
    ) -> Step:
        """One unimodal step of modality m for the active runs: encoder m and the head update; the head's
        gradient is projected in `after_backward` (its step in `after_step`, `project_step`). rows [R, B]: the
        samples of h."""
        stepping = dict.fromkeys([*self.encoders[m].parameters(), *self.head.parameters()], active)
        return Step(
            loss,
            stepping,
            active,
            context={
                "h": h,
                "rows": rows,
                "batch_index": batch_index,
                "batches_per_epoch": batches_per_epoch,
            },
        )

    def _steps_taken(self, active: torch.Tensor) -> None:
        self.step += active.to(self.step.device).long()
        self.optimizer_steps += 1

    def _per_step_steps(self, data: RunGroup, batch_size: int):
        """Eq. 1: step j of the epoch trains modality j mod M, on a batch from that modality's own stream."""
        M, R = self.n_modalities, self.n_runs
        train_rows = data.rows("train")
        n_batches = torch.tensor([-(-len(rows) // batch_size) for rows in train_rows])
        n_steps = M * n_batches  # a multiple of M for every run
        present_train = [data.host_present[r, rows] for r, rows in enumerate(train_rows)]
        streams = [
            [CyclingBatches(rows[present_train[r][:, m]], batch_size, data.generators[r]) for m in range(M)]
            for r, rows in enumerate(train_rows)
        ]
        empty = train_rows[0][:0]
        for j in range(int(n_steps.max())):
            m = j % M  # eq. 1: every run's t is a multiple of M at the start of an epoch
            rows = [streams[r][m].next() if j < n_steps[r] else None for r in range(R)]
            flags = [b is not None for b in rows]  # known on the host: no wait for the device
            if not any(flags):
                continue
            active = torch.tensor(flags, device=data.device)
            batch = data.padded([empty if b is None else b for b in rows], batch_size)
            self.set_active_runs(active)
            h = self.encode(m, data, batch)  # h_{m_t}(x)  [R, B, s]
            loss = masked_cross_entropy(self.head(h), batch.labels, batch.valid)  # eq. 2, per run
            yield self._unimodal_step(m, h, loss, batch.valid, active, j // M, n_batches)
            self._steps_taken(active)

    def _in_batch_steps(self, data: RunGroup, batch_size: int):
        """The released code's scheme: one forward of every encoder on a paired batch, then one backward and
        one optimiser step per modality, in the fixed order audio, visual, text (M steps per batch)."""
        train_rows = data.rows("train")
        n_batches = torch.tensor([-(-len(rows) // batch_size) for rows in train_rows])
        for b, batch in enumerate(data.shuffled_batches(train_rows, batch_size)):
            self.set_active_runs(batch.valid.any(dim=1))
            present = data.present_at(batch.idx, batch.valid)  # [R, B, M]
            hidden = [self.encode(m, data, batch) for m in range(self.n_modalities)]
            for m, h in enumerate(hidden):
                active = present[..., m].any(dim=1)
                if not bool(active.any()):
                    continue
                # head as updated so far
                loss = masked_cross_entropy(self.head(h), batch.labels, present[..., m])
                yield self._unimodal_step(m, h, loss, present[..., m], active, b, n_batches)
                self._steps_taken(active)

    def after_backward(self, step: Step) -> None:
        """Head gradient modification (eq. 3-5, or the released variant) between backward and the step: P is
        updated, then the gradient projected (`project_gradient`) or the step's projection prepared
        (`project_step`, applied in `after_step`)."""
        if self.hgm == "off":
            return
        c, active = step.context, step.active
        gate = (active & (self.step.to(active.device) > 0)).view(-1, 1, 1)  # t = 0: gradient as is
        weight = c["rows"].unsqueeze(-1).float()
        h_mean = (c["h"].detach() * weight).sum(1) / weight.sum(1).clamp(min=1)  # eq. 4 (batch mean)
        alpha = self._alpha(c["batch_index"], c["batches_per_epoch"]).to(h_mean.device)
        update = rls_update if self.hgm == "paper" else released_rls_update
        self.P = torch.where(gate, update(self.P, h_mean, alpha), self.P)  # eq. 5
        projector = self.P if self.hgm == "paper" else self.P.transpose(1, 2)
        if self.head_update == "project_step":  # the gradient stays raw; the step is projected in after_step
            self._pending_step_projection = (gate, projector, self.head.weight.detach().clone())
            return
        grad = self.head.weight.grad
        self.head.weight.grad = torch.where(gate, grad @ projector, grad)  # eq. 3

    @torch.no_grad()
    def after_step(self, step: Step) -> None:
        """`head_update: project_step`: project the change the optimiser made to the head's weight,
        W <- W_old + (W_new - W_old) @ P_t, for the runs that took the step with t > 0 (others untouched)."""
        if self._pending_step_projection is None:
            return
        gate, projector, weight_old = self._pending_step_projection
        self._pending_step_projection = None
        weight = self.head.weight
        weight.copy_(torch.where(gate, weight_old + (weight - weight_old) @ projector, weight))

    def _alpha(self, batch_index: int, batches_per_epoch: torch.Tensor) -> torch.Tensor:
        """alpha of eq. 5 per run: constant, or decaying tenfold over each epoch (the released schedule)."""
        if self.alpha_schedule == "constant":
            return torch.full((self.n_runs,), float(self.alpha))
        return self.alpha * 0.1 ** (batch_index / batches_per_epoch.clamp(min=1).double())

    # ---------------------------------------------------------------------------------- prediction

    @torch.no_grad()
    def predict(self, data: RunGroup, batch: Batch) -> Predictions:
        # [R, M, n, C]
        unimodal = torch.stack(
            [self.head(self.encode(m, data, batch)) for m in range(self.n_modalities)], dim=1
        )
        present = data.present_at(batch.idx, batch.valid).permute(0, 2, 1)  # [R, M, n]
        weights = fusion_weights(self.fusion, unimodal, present, self.eval_batch_size, self.fixed_weights)
        return Predictions(unimodal, fuse(unimodal, weights))  # eq. 6

    def fusion_variants(self, predictions: Predictions, present: torch.Tensor) -> dict[str, torch.Tensor]:
        """Fused logits [R, n, C] under every fusion rule, from the same unimodal predictions: the fusion rule
        acts at test time only, so one trained model measures them all. present [R, M, n]."""
        logits = predictions.unimodal_logits
        return {
            rule: fuse(
                logits, fusion_weights(rule, logits, present, self.eval_batch_size, self.fixed_weights)
            )
            for rule in FUSION_RULES
            if rule != "fixed" or self.fixed_weights is not None
        }


class CyclingBatches:
    """An endless stream of shuffled mini-batches over `indices`, reshuffled at every pass."""

    def __init__(self, indices: torch.Tensor, batch_size: int, generator: torch.Generator):
        self.indices, self.batch_size, self.generator = indices, batch_size, generator
        self._pending: list[torch.Tensor] = []

    def next(self) -> torch.Tensor | None:
        if len(self.indices) == 0:
            return None
        if not self._pending:
            order = self.indices[
                torch.randperm(len(self.indices), generator=self.generator).to(self.indices.device)
            ]
            self._pending = list(order.split(self.batch_size))[::-1]
        return self._pending.pop()


class MLAWithoutHGM(MLA):
    """MLA with head gradient modification off (eq. 3-5 not applied; the paper's Table 3 ablation "w/o HGM"),
    every other choice MLA's. A method of its own (mlaflow.methods.VARIANTS: it reads `method_params.mla` with
    head_gradient_modification off) so that the tuning stage gives it its own study with the same budget as MLA:
    the report's claim "head gradient modification helps" compares two tuned methods, not MLA's tuned values
    with one switch flipped."""

    name = "mla_hgm_off"
    unimodal_rule = None  # MLA's, stated once

    def __init__(self, input_dims, n_classes, train_cfg, method_cfg, generators):
        if method_cfg.get("head_gradient_modification", "off") != "off":
            raise ParamsError(
                "method_params.mla.head_gradient_modification",
                f"mla_hgm_off was given {method_cfg['head_gradient_modification']!r}",
                "mla_hgm_off is MLA without head gradient modification; use mla for the others",
            )
        super().__init__(
            input_dims, n_classes, train_cfg, {**method_cfg, "head_gradient_modification": "off"}, generators
        )
