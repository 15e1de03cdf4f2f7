"""TATE: Tag-Assisted Transformer Encoder (Zeng, Liu, Zhou; "Tag-Assisted Multimodal Sentiment Analysis under
Uncertain Missing Modalities", SIGIR 2022), following the reference code JaydenZeng/TATE (iemocap/network.py,
iemocap/train.py, module.py), adapted to utterance-level features (one token per modality, as GCNet's
baselines; the reference encodes sequences with one self-attention block per modality first).

Network (per run, everything stacked over runs):
- The shared encoders of `Method` (A.3.2) give h_m [s]; a masked cell's embedding is 0 (its features are
  never read).
- Common space with pairwise shared matrices, as the reference's wei_va, wei_vt, wei_ta: one matrix per pair
  of modalities (s -> k, k = s // (M - 1)); modality m's token is the concatenation of its M - 1 pair
  projections (d_c = (M - 1) k = s for M = 3). A missing modality's token is 0.
- Missing tag: the M-bit vector "modality m is missing" (the reference's one-hot of which single modality
  is missing, generalised to any pattern), appended to every token: D = d_c + M.
- Encoder: one transformer layer over the M tokens (4 heads; Q/K/V of width d_c so that the heads divide it,
  an output projection back to D; residual + layer norm; feed-forward of width D, not the reference's 4D, to
  keep within the cost budget; residual + layer norm). Dropout (train.dropout) after attention and
  feed-forward.
- The reference's SigmoidAtt pooling over tokens; classifier Linear(D, s) -> Linear(s, C) (the reference's
  bias-free dense then W_l, b_l).
- Decoder: one transformer layer on the encoder's tokens and a linear map to d_c, reconstructing the complete
  common-space tokens (the teacher's, of the complete input: the "complete embeddings").

Loss = CE + 0.1 * (recon + tag + KL), the reference's weights (its 0.1 * l2 on the classifier is left to the
shared weight decay):
- tag: mean absolute error between the tag and sigmoid of the pooled output's last M dimensions;
- KL: symmetric KL between softmax (over features) of the student's and the teacher's encoder tokens,
  averaged over tokens (the reference's kl_loss1 + kl_loss2);
- recon: the same symmetric KL between the decoder's tokens and the target tokens (the reference compares
  the decoder's output with the softmax of its input tokens; here the target is the complete embedding).
Losses are means over samples (the reference sums CE and KL over the batch and averages the tag loss).

Teacher (the reference's pre-trained `saved-model`, the same network trained on complete data): a second
network of the same architecture (own encoders, no decoder), trained before the first epoch (a pretraining
phase of the training loop) for `teacher_epochs` epochs of cross-entropy with its own optimiser, using the
shared optimiser's settings and the step schedule (before the one training loop it kept the first epoch's lr;
with teacher_epochs below train.lr_step_epochs the two are the same). Its parameters are saved with the method's but never step afterwards.
`teacher_epochs` defaults to 5, not train.epochs: the reference pre-trains its teacher separately, with no
stated budget, and a full 15-epoch teacher would put TATE above the cost budget of the missing-modality
baselines (bench/bench_methods.py). The student's predict evaluates the fused and the M
unimodal variants in one stacked pass.

Privilege, option `privileged`:
- true (default, as the reference): the teacher is trained on, and gives its KL targets from, the COMPLETE
  training features (RunGroup.complete_inputs), and the reconstruction targets are the teacher's common-space
  tokens of the complete training features. The student's inputs are the observed cells only.
  Results must be flagged: masked training cells are read.
- false: no masked cell is ever read. The teacher is trained on the observed training cells (with their real
  tags). At every student step, each training sample with two or more observed modalities loses one of them
  (chosen uniformly, with probability 0.5, from its run's generator): the student sees the remaining cells;
  the KL targets are the teacher's tokens of all observed cells; the reconstruction targets are the teacher's
  common-space tokens of the observed cells, and the reconstruction loss runs over observed tokens only.
Validation/test never use either: the student sees the observed cells with their real tags.
Unimodal logits of modality m: the student's output with every other modality treated as missing (tag set).
embeddings(): the student's common-space token of each modality (without the tag), 0 where it is absent.
"""

from __future__ import annotations

import itertools
import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mlaflow.methods.base import (
    Batch,
    Method,
    ModalityEncoder,
    Phase,
    Predictions,
    RunGroup,
    StackedDropout,
    StackedLinear,
    Step,
    masked_cross_entropy,
)
from mlaflow.methods.space import LogRange

DROP_PROBABILITY = 0.5  # privileged false: chance that a sample with >= 2 observed modalities loses one


class StackedLayerNorm(nn.Module):
    """Layer norm over the last axis with per-run gain and bias: x [R, ..., D]."""

    def __init__(self, dim: int, n_runs: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n_runs, dim))
        self.bias = nn.Parameter(torch.zeros(n_runs, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        y = F.layer_norm(x, x.shape[-1:], eps=1e-8)
        return y * self.weight.view(shape) + self.bias.view(shape)


class TokenLayer(nn.Module):
    """One transformer layer over T tokens: x [R, B, T, D] -> [R, B, T, D], post-norm as the reference's
    multihead_attention + ff."""

    def __init__(self, dim: int, att_dim: int, heads: int, dropout: float, generators):
        super().__init__()
        R = len(generators)
        self.heads, self.head_dim = heads, att_dim // heads
        self.q, self.k, self.v = (StackedLinear(dim, att_dim, generators) for _ in range(3))
        self.out = StackedLinear(att_dim, dim, generators)
        self.ff1, self.ff2 = StackedLinear(dim, dim, generators), StackedLinear(dim, dim, generators)
        self.norm1, self.norm2 = StackedLayerNorm(dim, R), StackedLayerNorm(dim, R)
        self.drop1, self.drop2 = StackedDropout(dropout, generators), StackedDropout(dropout, generators)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        R, B, T, D = x.shape
        flat = x.reshape(R, B * T, D)
        split = lambda z: z.view(R, B, T, self.heads, self.head_dim)  # noqa: E731
        q, k, v = split(self.q(flat)), split(self.k(flat)), split(self.v(flat))
        scores = torch.einsum("rbthd,rbuhd->rbhtu", q, k) / math.sqrt(self.head_dim)
        att = torch.einsum("rbhtu,rbuhd->rbthd", scores.softmax(dim=-1), v).reshape(R, B * T, -1)
        y = self.norm1(flat + self.drop1(self.out(att)))
        y = self.norm2(y + self.drop2(self.ff2(torch.relu(self.ff1(y)))))
        return y.view(R, B, T, D)


class TateCore(nn.Module):
    """Common-space projection, tag, encoder layer, pooling and classifier (teacher and student share it)."""

    def __init__(
        self, n_modalities: int, hidden: int, n_classes: int, heads: int, dropout: float, generators
    ):
        super().__init__()
        M = n_modalities
        self.pairs = list(itertools.combinations(range(M), 2))
        self.pair_dim = hidden // max(1, M - 1)
        self.common_dim = self.pair_dim * (M - 1)
        self.dim = self.common_dim + M
        att_dim = heads * max(1, self.common_dim // heads)
        self.shared = nn.ModuleList(StackedLinear(hidden, self.pair_dim, generators) for _ in self.pairs)
        self.encoder = TokenLayer(self.dim, att_dim, heads, dropout, generators)
        self.pool_u = StackedLinear(self.dim, self.dim, generators)
        self.pool_m = StackedLinear(self.dim, self.dim, generators)
        self.pool_r = StackedLinear(self.dim, 1, generators)
        self.head1 = StackedLinear(self.dim, hidden, generators)
        self.head2 = StackedLinear(hidden, n_classes, generators)

    def common(self, h: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Tokens in the common space [R, B, M, d_c] from embeddings h [R, M, B, s]; 0 where absent."""
        tokens = []
        for m in range(h.shape[1]):
            parts = [self.shared[i](h[:, m]) for i, pair in enumerate(self.pairs) if m in pair]
            tokens.append(torch.cat(parts, dim=-1))
        return torch.stack(tokens, dim=2) * present.unsqueeze(-1)

    def forward(self, common: torch.Tensor, present: torch.Tensor):
        """-> encoder tokens [R, B, M, D], pooled [R, B, D], logits [R, B, C]."""
        tag = (~present).to(common.dtype)  # [R, B, M]
        tokens = torch.cat([common, tag.unsqueeze(2).expand(-1, -1, common.shape[2], -1)], dim=-1)
        enc = self.encoder(tokens)
        R, B, T, D = enc.shape
        flat = enc.reshape(R, B * T, D)
        score = self.pool_r(self.pool_u(flat) * torch.sigmoid(self.pool_m(flat))).view(R, B, T)
        pooled = (score.softmax(dim=-1).unsqueeze(-1) * enc).sum(dim=2)
        return enc, pooled, self.head2(self.head1(pooled))


def symmetric_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KL(p_a || p_b) + KL(p_b || p_a) of softmaxes over the last axis: [..., D] -> [...]."""
    la, lb = a.log_softmax(dim=-1), b.log_softmax(dim=-1)
    return ((la.exp() - lb.exp()) * (la - lb)).sum(dim=-1)


def masked_mean(values: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    """values, on [R, B, ...] -> per-run mean of values over the True entries [R]."""
    on = on.to(values.dtype)
    return (values * on).flatten(1).sum(1) / on.flatten(1).sum(1).clamp(min=1)


class TATE(Method):
    name = "tate"
    search_space: ClassVar[dict] = {"aux_weight": LogRange(0.01, 1.0)}

    @classmethod
    def privilege(cls, options: dict) -> str | None:
        if options.get("privileged") is True:
            return "its reconstruction targets and teacher see complete training data (masked cells included)"
        return None

    def __init__(self, input_dims, n_classes, train_cfg, method_cfg, generators):
        super().__init__(input_dims, n_classes, train_cfg, method_cfg, generators)
        options = method_cfg
        self.privileged, self.teacher_epochs = bool(options["privileged"]), options["teacher_epochs"]
        self.aux_weight = options["aux_weight"]
        self.generators = generators
        s, M, dropout = self.hidden_dim, self.n_modalities, train_cfg["dropout"]
        self.core = TateCore(M, s, n_classes, options["heads"], dropout, generators)
        self.decoder = TokenLayer(
            self.core.dim,
            self.core.encoder.heads * self.core.encoder.head_dim,
            options["heads"],
            dropout,
            generators,
        )
        self.decoder_out = StackedLinear(self.core.dim, self.core.common_dim, generators)
        self.teacher_encoders = nn.ModuleList(
            ModalityEncoder(d, s, dropout, generators) for d in self.input_dims
        )
        self.teacher = TateCore(M, s, n_classes, options["heads"], dropout, generators)

    # --------------------------------------------------------------------------------------- embeddings

    @staticmethod
    def _embed(
        encoders, data: RunGroup, batch: Batch, present: torch.Tensor, complete: bool = False
    ) -> torch.Tensor:
        read = data.complete_inputs if complete else data.inputs
        h = torch.stack([enc(read(m, batch.idx, batch.valid)) for m, enc in enumerate(encoders)], dim=1)
        return h.masked_fill(~present.permute(0, 2, 1).unsqueeze(-1), 0.0)

    def _teacher_view(self, data: RunGroup, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """What the teacher sees: (embeddings [R, M, B, s], present [R, B, M])."""
        if self.privileged:
            present = batch.valid.unsqueeze(-1).expand(-1, -1, self.n_modalities)
            return self._embed(self.teacher_encoders, data, batch, present, complete=True), present
        present = data.present_at(batch.idx, batch.valid)
        return self._embed(self.teacher_encoders, data, batch, present), present

    def _set_active(self, modules, active: torch.Tensor) -> None:
        flags = active.tolist()
        for module in modules:
            for sub in module.modules():
                if isinstance(sub, StackedDropout):
                    sub.active = flags

    # --------------------------------------------------------------------------------------- training

    def pretraining(self, data: RunGroup, batch_size: int) -> list[Phase]:
        """The teacher: `teacher_epochs` epochs of cross-entropy (the trainer's optimiser settings and schedule,
        its own optimiser state), then frozen."""

        def steps(data: RunGroup, batch_size: int, epoch: int):
            for batch in data.shuffled_batches(data.rows("train"), batch_size):
                active = batch.valid.any(dim=1)
                self._set_active([self.teacher_encoders, self.teacher], active)
                h, present = self._teacher_view(data, batch)
                _, _, logits = self.teacher(self.teacher.common(h, present), present)
                loss = masked_cross_entropy(logits, batch.labels, present.any(dim=-1))
                stepping = dict.fromkeys(self.teacher.parameters(), active)
                runs_with = present.any(dim=1)  # [R, M]
                for m, enc in enumerate(self.teacher_encoders):
                    stepping.update(dict.fromkeys(enc.parameters(), runs_with[:, m]))
                yield Step(loss, stepping, active)

        def finish(losses: list[torch.Tensor]) -> None:
            self.teacher_encoders.eval(), self.teacher.eval()

        self.teacher_encoders.train(), self.teacher.train()
        return [
            Phase(
                "teacher",
                [*self.teacher_encoders.parameters(), *self.teacher.parameters()],
                self.teacher_epochs,
                steps,
                finish,
            )
        ]

    def _drop_one(self, present: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """privileged false: each sample with >= 2 present modalities loses one (probability 0.5), drawn from its
        run's generator (fixed-shape draws, only in runs taking the step)."""
        _R, B, M = present.shape
        out = present.clone()
        for r, (g, on) in enumerate(zip(self.generators, active.tolist())):
            if not on:
                continue
            coin, pick = torch.rand(B, generator=g), torch.rand(B, M, generator=g)
            eligible = (present[r].sum(-1) >= 2) & (coin.to(present.device) < DROP_PROBABILITY)
            choice = pick.to(present.device).masked_fill(~present[r], -1.0).argmax(-1)
            out[r, torch.arange(B, device=present.device)[eligible], choice[eligible]] = False
        return out

    def training_steps(self, data: RunGroup, batch_size: int, epoch: int):
        self.teacher_encoders.eval(), self.teacher.eval()  # the trainer's method.train() must not reach them
        return super().training_steps(data, batch_size, epoch)

    def set_active_runs(self, active: torch.Tensor) -> None:
        self._set_active([self.encoders, self.core, self.decoder, self.decoder_out], active)

    def batch_step(self, data: RunGroup, batch: Batch, observed: torch.Tensor, active: torch.Tensor) -> Step:
        with torch.no_grad():  # teacher tokens (KL targets) and common tokens (reconstruction targets)
            h_t, present_t = self._teacher_view(data, batch)
            target = self.teacher.common(h_t, present_t)
            teacher_tokens, _, _ = self.teacher(target, present_t)
        seen = observed if self.privileged else self._drop_one(observed, active)
        target_on = present_t
        h = self._embed(self.encoders, data, batch, seen)
        tokens, pooled, logits = self.core(self.core.common(h, seen), seen)
        recon_tokens = self.decoder_out(self.decoder(tokens).flatten(1, 2)).view(*target.shape)
        has_any = seen.any(dim=-1)  # [R, B]
        ce = masked_cross_entropy(logits, batch.labels, has_any)
        tag = (~seen).to(pooled.dtype)
        tag_loss = masked_mean(
            (torch.sigmoid(pooled[..., -self.n_modalities :]) - tag).abs().mean(-1), has_any
        )
        kl = masked_mean(symmetric_kl(tokens, teacher_tokens).mean(-1), has_any & present_t.any(-1))
        recon = masked_mean(symmetric_kl(recon_tokens, target), target_on & has_any.unsqueeze(-1))
        loss = ce + self.aux_weight * (recon + tag_loss + kl)
        stepping = {
            p: active for module in (self.core, self.decoder, self.decoder_out) for p in module.parameters()
        }
        runs_with = seen.any(dim=1)
        for m, enc in enumerate(self.encoders):
            stepping.update(dict.fromkeys(enc.parameters(), runs_with[:, m]))
        return Step(loss, stepping, active)

    # ------------------------------------------------------------------------------------- prediction

    def _logits(self, data: RunGroup, batch: Batch, h: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        _, _, logits = self.core(self.core.common(h, present), present)
        return logits.masked_fill(~present.any(dim=-1, keepdim=True), 0.0)

    @torch.no_grad()
    def predict(self, data: RunGroup, batch: Batch) -> Predictions:
        present = data.present_at(batch.idx, batch.valid)
        h = self._embed(self.encoders, data, batch, present)
        variants = [present]  # all present modalities, then each one alone
        for m in range(self.n_modalities):
            only = torch.zeros_like(present)
            only[..., m] = present[..., m]
            variants.append(only)
        stacked = torch.cat(variants, dim=1)  # one pass over [R, (M + 1) n] samples
        h_all = torch.cat([h * v.permute(0, 2, 1).unsqueeze(-1) for v in variants], dim=2)
        logits = self._logits(data, batch, h_all, stacked).view(
            self.n_runs, len(variants), -1, self.n_classes
        )
        return Predictions(logits[:, 1:], logits[:, 0])

    @torch.no_grad()
    def embeddings(self, data: RunGroup, batch: Batch) -> torch.Tensor:
        """Each modality's common-space token [R, M, n, d_c] (0 where absent)."""
        present = data.present_at(batch.idx, batch.valid)
        return self.core.common(self._embed(self.encoders, data, batch, present), present).permute(0, 2, 1, 3)
