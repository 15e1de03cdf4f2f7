"""ReconBoost (Hua et al., "ReconBoost: Boosting Can Achieve Modality Reconcilement", ICML 2024; released code
github.com/huacong/ReconBoost, train.py and train_MSA.py): modality-alternating boosting.

One learner per modality (its encoder and a linear head). Training runs in stages; a stage picks one modality m
(round-robin, the released `schedule.py`'s fixed mode) and

1. boosting: trains learner m alone on the released boosting loss (`boosting_loss`): with p_-m the softmax of the
   ensemble of the OTHER learners (detached), the per-sample loss is
   -(weight1 - weight2 * p_-m[y]) / C * log softmax(f_m)[y], i.e. weight1 * CE minus weight2 times the KL-based
   reconcilement term (the paper's lambda), so samples the other modalities already get right count less;
2. global rectification (GR): fine-tunes every learner jointly, and the ensemble's boost rate, on the
   cross-entropy of the ensemble.

The ensemble is boost_rate * (sum of the learners' logits) (the released `DynamicNet`; boost_rate a learnable
scalar, initially `boost_rate`, trained in GR only unless `learn_boost_rate: false`: at lr 0.05 it can diverge on
toys); prediction is that ensemble. A learner joins the ensemble
after its first boosting stage (the released `net_ensemble.add`); while no other learner is in it, the released
code's ensemble is the scalar c0 expanded to one column, whose softmax is 1, so p_-m[y] = 1 (kept here, and used
too for a sample whose other modalities are all missing).

Missing modalities: a learner's boosting stage runs over the samples where its modality is present; a masked
cell adds no logit to any ensemble (sum over the present learners) and no loss; a run with no sample of m in a
step does not step m's parameters; samples with no present learner give no GR loss; fused logits are 0 for them.

How the released schedule maps onto epochs, and the other deviations:
- The released stage is `epochs_per_stage` = 4 passes of boosting then `correct_epoch` = 4 passes of GR, for 1000
  stages, each with a fresh SGD (lr 0.01, momentum 0.9, wd 5e-4). Here one epoch is M stages (every modality once,
  in the corpus's order; the released MSA order is text, visual, audio), each of `boost_passes` passes over the
  modality's present training rows and `correct_passes` passes of GR over all training rows (default 0.5 and 0.5:
  M x batches steps per epoch, as MLA, so that the third modality trains within a 15-epoch budget). Batches
  continue across stages and epochs (cycling shuffled streams), so a fractional pass sees every sample in turn.
  The steps use the trainer's optimiser (its lr schedule; momentum not reset at each stage).
- Head: the released default `common_space: True` shares one head among the learners (`model.fc =
  net_ensemble.head`: one linear layer for MOSI/MOSEI/SIMS, two for CREMA-D/AVE); `shared_head: true` does so with
  one linear layer; `false` gives each learner its own head.
- The "GA" / memory-consolidation term, alpha * MSE(softmax f_m, softmax f_prev) with the previous stage's learner,
  detaches BOTH sides in the released code, so it never changes a gradient (it is only logged). With
  `consolidation_grad: false` (default, the released behaviour) it is not computed; `true` lets its gradient
  reach learner m (the paper's intent; `consolidation_loss`).
- No pretrained unimodal learners (the released `--use_pretrain`): every method here trains from scratch.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

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
from mlaflow.methods.mla import CyclingBatches
from mlaflow.methods.space import LogRange


def boosting_loss(
    logits: torch.Tensor,
    ensemble_logits: torch.Tensor,
    has_ensemble: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    weight1: float,
    weight2: float,
) -> torch.Tensor:
    """The released boosting loss per run [R]: mean over the True entries of mask [R, B] of
    -(weight1 - weight2 * p_ens[y]) / C * log softmax(logits)[y], with p_ens = softmax(ensemble_logits) (no
    gradient) where has_ensemble [R, B], else 1 (the released empty ensemble). logits [R, B, C]."""
    y = labels.unsqueeze(-1)
    log_p = logits.log_softmax(-1).gather(-1, y).squeeze(-1)
    p_ens = ensemble_logits.detach().softmax(-1).gather(-1, y).squeeze(-1)
    p_ens = torch.where(has_ensemble, p_ens, torch.ones_like(p_ens))
    # the released (target * ...).mean(-1): a mean over the C classes of a one-hot product
    per_sample = -(weight1 - weight2 * p_ens) * log_p / logits.shape[-1]
    per_sample = torch.where(mask, per_sample, torch.zeros_like(per_sample))  # not a product: NaN-safe
    return per_sample.sum(1) / mask.sum(1).clamp(min=1)


def consolidation_loss(logits: torch.Tensor, previous: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Memory consolidation per run [R]: mean over mask [R, B] of the class-mean squared difference between the
    softmaxes of logits and of the previous stage's learner (no gradient into the latter); nn.MSELoss's mean."""
    diff = (logits.softmax(-1) - previous.detach().softmax(-1)).pow(2).mean(-1)
    return (diff * mask).sum(1) / mask.sum(1).clamp(min=1)


class ReconBoost(Method):
    name = "reconboost"
    end_to_end = True
    # the released weights: weight1 in {1 (MSA), 4, 5}, weight2 in {0.25 (MSA), 1}; weight2 <= weight1 keeps
    # every sample's weight positive
    search_space: ClassVar[dict] = {"weight1": LogRange(1.0, 5.0), "weight2": LogRange(0.1, 1.0)}
    unimodal_rule = ("ReconBoost", "each modality's learner (its encoder and head)")

    def __init__(self, input_dims, n_classes, train_cfg, method_cfg, generators):
        super().__init__(input_dims, n_classes, train_cfg, method_cfg, generators)
        self.shared_head = bool(method_cfg["shared_head"])
        self.heads = nn.ModuleList(
            StackedLinear(self.hidden_dim, n_classes, generators)
            for _ in range(1 if self.shared_head else self.n_modalities)
        )
        self.boost_rate = nn.Parameter(torch.full((self.n_runs,), float(method_cfg["boost_rate"])))
        self.learn_boost_rate = bool(method_cfg["learn_boost_rate"])
        self.weight1 = float(method_cfg["weight1"])
        self.weight2 = float(method_cfg["weight2"])
        self.alpha = float(method_cfg["alpha"])
        self.consolidation_grad = bool(method_cfg["consolidation_grad"])
        self.boost_passes = float(method_cfg["boost_passes"])
        self.correct_passes = float(method_cfg["correct_passes"])
        if self.boost_passes <= 0 or self.correct_passes < 0:
            raise ParamsError(
                "method_params.reconboost.boost_passes",
                f"boost_passes {self.boost_passes}, correct_passes {self.correct_passes}",
                "use boost_passes > 0 and correct_passes >= 0",
            )
        self._streams: tuple | None = None  # (data, batch size, boosting streams [R][M], GR streams [R])

    # ------------------------------------------------------------------------------------- learners

    def head(self, m: int) -> StackedLinear:
        return self.heads[0 if self.shared_head else m]

    def learner(self, m: int, data: RunGroup, batch: Batch) -> torch.Tensor:
        """Learner m's logits [R, B, C]."""
        return self.head(m)(self.encode(m, data, batch))

    def ensemble(
        self, data: RunGroup, batch: Batch, present: torch.Tensor, members: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """boost_rate * sum of the present members' logits [R, B, C], and whether a member is present [R, B]."""
        R, B = batch.idx.shape
        if not members:
            return torch.zeros(R, B, self.n_classes, device=data.device), torch.zeros_like(batch.valid)
        logits = torch.stack([self.learner(o, data, batch) for o in members], dim=1)  # [R, K, B, C]
        weights = present[..., members].permute(0, 2, 1).float()  # [R, K, B]
        return self.boost_rate.view(-1, 1, 1) * fuse(logits, weights), weights.sum(1) > 0

    # ------------------------------------------------------------------------------------- training

    def _batch_streams(self, data: RunGroup, batch_size: int):
        """Per run, one endless shuffled stream per modality (its present training rows) and one for GR (all
        training rows), kept across epochs."""
        if self._streams is None or self._streams[0] is not data or self._streams[1] != batch_size:
            rows = data.rows("train")
            boost = [
                [
                    CyclingBatches(rows_r[data.host_present[r, rows_r, m]], batch_size, data.generators[r])
                    for m in range(self.n_modalities)
                ]
                for r, rows_r in enumerate(rows)
            ]
            rectify = [CyclingBatches(rows_r, batch_size, g) for rows_r, g in zip(rows, data.generators)]
            self._streams = (data, batch_size, boost, rectify)
        return self._streams[2], self._streams[3]

    def _draws(self, data: RunGroup, streams: list[CyclingBatches], passes: float, batch_size: int):
        """The batches of a phase of `passes` passes over each run's stream: (batch, active [R]) per step."""
        counts = [math.ceil(passes * -(-len(s.indices) // batch_size)) for s in streams]
        empty = streams[0].indices[:0]
        for j in range(max(counts, default=0)):
            rows = [s.next() if j < n else None for s, n in zip(streams, counts)]
            flags = [b is not None for b in rows]  # on the host: no wait for the device
            if not any(flags):
                continue
            batch = data.padded([empty if b is None else b for b in rows], batch_size)
            active = torch.tensor(flags, device=data.device)
            self.set_active_runs(active)
            yield batch, active

    def training_steps(self, data: RunGroup, batch_size: int, epoch: int):
        """M stages (one per modality, in order), each boosting steps then GR steps."""
        boost, rectify = self._batch_streams(data, batch_size)
        M = self.n_modalities
        for m in range(M):
            stage = epoch * M + m
            # learners join the ensemble after their first boosting stage (all have after epoch 0)
            others = [o for o in range(M) if o != m and (epoch > 0 or o < m)]
            for batch, active in self._draws(data, [b[m] for b in boost], self.boost_passes, batch_size):
                yield self._boost_step(data, batch, active, m, others, stage)
            members = [o for o in range(M) if epoch > 0 or o <= m]
            for batch, active in self._draws(data, rectify, self.correct_passes, batch_size):
                yield self._rectify_step(data, batch, active, members)

    def _boost_step(
        self, data: RunGroup, batch: Batch, active: torch.Tensor, m: int, others: list[int], stage: int
    ) -> Step:
        present = data.present_at(batch.idx, batch.valid)  # [R, B, M]
        logits = self.learner(m, data, batch)
        with torch.no_grad():  # the released ensemble forward (others in train mode, no gradient)
            ens, has_ens = self.ensemble(data, batch, present, others)
        loss = boosting_loss(logits, ens, has_ens, batch.labels, present[..., m], self.weight1, self.weight2)
        if self.consolidation_grad and self.alpha and stage > 0:
            prev = (m - 1) % self.n_modalities  # the previous stage's learner
            with torch.no_grad():
                prev_logits = self.learner(prev, data, batch)
            both = present[..., m] & present[..., prev]
            loss = loss + self.alpha * consolidation_loss(logits, prev_logits, both)
        runs_with_m = present[..., m].any(dim=1)
        stepping = dict.fromkeys([*self.encoders[m].parameters(), *self.head(m).parameters()], runs_with_m)
        return Step(loss, stepping, active, phase="boost")

    def _rectify_step(self, data: RunGroup, batch: Batch, active: torch.Tensor, members: list[int]) -> Step:
        present = data.present_at(batch.idx, batch.valid)
        ens, has_ens = self.ensemble(data, batch, present, members)
        loss = masked_cross_entropy(ens, batch.labels, has_ens)
        stepping = {}
        for o in members:
            runs_with_o = present[..., o].any(dim=1)
            stepping.update(dict.fromkeys(self.encoders[o].parameters(), runs_with_o))
            if not self.shared_head:
                stepping.update(dict.fromkeys(self.heads[o].parameters(), runs_with_o))
        runs_with_loss = has_ens.any(dim=1)
        if self.shared_head:
            stepping.update(dict.fromkeys(self.heads[0].parameters(), runs_with_loss))
        if self.learn_boost_rate:
            stepping[self.boost_rate] = runs_with_loss
        return Step(loss, stepping, active, phase="rectify")

    # ---------------------------------------------------------------------------------- prediction

    @torch.no_grad()
    def predict(self, data: RunGroup, batch: Batch) -> Predictions:
        unimodal = torch.stack([self.learner(m, data, batch) for m in range(self.n_modalities)], dim=1)
        present = data.present_at(batch.idx, batch.valid).permute(0, 2, 1).float()  # [R, M, n]
        return Predictions(unimodal, self.boost_rate.view(-1, 1, 1) * fuse(unimodal, present))
