"""GCNet: Graph Completion Network for incomplete multimodal learning in conversation (Lian, Chen, Sun, Liu, Tao,
IEEE TPAMI 2023), following the reference code zeroQiaoba/GCNet (gcnet/model.py, graph.py, loss.py,
train_gcnet.py; read at 8cce4a0). The repository that supplies the paper's missing-modality baselines.

GCNet reads whole conversations: an utterance's prediction uses the utterances around it. The manifest's `dialog`,
`turn` and `speaker` columns give the order (mlaflow.train.data.Conversations); a corpus without conversations
cannot run it, and the workflow says so (mlaflow.pipeline.experiments) instead of training it there.

Per utterance, as the reference (model.py `GraphModel`):
1. Input: the modalities' features concatenated (audio, visual, text in the corpus's order), a masked cell zeros;
   the mask itself is not an input. Here standardised like every method's inputs (the reference feeds raw
   features).
2. A bidirectional LSTM over each dialog (`hidden_dim` per direction) gives H [L, 2 * hidden_dim].
3. Two graph branches with their own weights over the same edges, every pair of utterances of a dialog at most
   `window` turns apart (the reference's windowp = windowf; the self-loop included; never across dialogs):
   temporal relations (past, now, future) and speaker relations (target speaker x source speaker). Each branch:
   RGCN (per relation the mean of W_r x_j, plus W_0 x_i + b) -> GraphConv (the sum over the window of W_rel h_j,
   plus b + W_root h_i), no activation between; then [H, graph output] -> a bidirectional LSTM (width
   2 * hidden_dim + graph_dim) -> ReLU(linear). The two branches are added.
4. Heads: a linear classifier, and one linear layer reconstructing every modality's features.
Loss (loss.py): the cross-entropy of the utterances, plus `reconstruction_weight` (reference: 1) times the
squared error of the reconstructed cells, each modality's divided by its width, summed, over the utterances.

Which cells are reconstructed (`privileged`):
- true (the reference): the training utterances' MASKED cells, against their complete features. The method then
  sees what the mask hides from every other method: the report flags its rows, as MMIN's and TATE's.
- false: observed cells dropped on purpose (a training utterance with >= 2 modalities loses one with probability
  `drop_rate`, drawn from the run's generator), reconstructed against their observed values.

Choices and deviations, each for the setting here (frozen utterance features, stacked runs, one training budget):
- The LSTMs are written out (`StackedLSTM`, nn.LSTM's equations and initialisation) so that R runs stack: every
  parameter has a leading run axis. Padding is skipped, as packed sequences do: the reference runs its LSTMs over
  the padding of shorter dialogs, so its outputs depend on which dialogs share a batch. One layer per LSTM (the
  reference two) and no dropout (the reference 0.5 between layers; no method here uses dropout, A.3.2): the cost
  of 15 stacked runs on 2 CPU cores.
- Widths: hidden_dim 32, graph_dim 16 (the reference's README 200 and hidden // 2; its sweep 50 to 200), window 2
  (its README): the first LSTM reads every modality's features (2560 wide on the IEMOCAP look-alike) for 15
  stacked runs, the cost of the whole method on 2 CPU cores.
- Batches: `dialogs_per_batch` dialogs (the reference 32 of ~120 training dialogs, 4 steps an epoch; here 4 of
  24, 6 steps). The loss rows are the run's training utterances with a modality present; the other utterances of
  a training dialog (the validation rows) are context only, their labels never read.
- The reference's reconstruction loss flattens its padding mask in another order than its outputs (loss.py,
  batch-major against time-major), which misaligns it when a batch has several dialogs; here it is aligned.
- The reference selects epochs on the test set (its validation loader is the test loader) and redraws masks every
  epoch; here the workflow's masks and validation-based selection, as for every method.
- Unimodal predictions (the report's per-modality accuracy): the network with the other modalities masked.
- Embeddings (the modality gap): each modality's share of the first LSTM's gate inputs (its block of the input
  weight times its features), both directions.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
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
    masked_cross_entropy,
)
from mlaflow.methods.space import IntRange, LogRange

EVAL_DIALOGS = 64  # dialogs per forward pass at evaluation (memory: runs x dialogs x turns^2 x relations)


class DeferredPredictions(Predictions):
    """The fused logits now, the unimodal ones (one more pass over the dialogs per modality) when first read: the
    per-epoch validation and test curves read only the fused prediction."""

    def __init__(self, fused_logits: torch.Tensor, unimodal: Callable[[], torch.Tensor]):
        self.fused_logits = fused_logits
        self._unimodal = unimodal

    @functools.cached_property
    def unimodal_logits(self) -> torch.Tensor:
        return self._unimodal()


def stacked_uniform(shape: tuple[int, ...], bound: float, generators: list[torch.Generator]) -> nn.Parameter:
    """A parameter [R, *shape], uniform in +-bound, run r's slice from run r's generator."""
    return nn.Parameter(
        torch.stack([torch.empty(shape).uniform_(-bound, bound, generator=g) for g in generators])
    )


class StackedLSTM(nn.Module):
    """One bidirectional LSTM layer for R stacked runs: x [R, B, L, d], valid [R, B, L] -> [R, B, L, 2H].

    nn.LSTM's equations (gates i, f, g, o) and initialisation (uniform +-1/sqrt(H); the two biases drawn apart and
    added), with its weights stored for `x @ W`: w_ih [R, d, 8H] holds both directions' input weights side by
    side (forward then backward, each nn.LSTM's weight_ih transposed), w_hh [R, 2, H, 4H]. Padding is skipped:
    the state does not move there (the backward direction starts at each sequence's last real step, as with
    packed sequences) and the output there is 0."""

    def __init__(self, in_dim: int, hidden: int, generators: list[torch.Generator]):
        super().__init__()
        bound = 1.0 / math.sqrt(hidden)
        self.hidden = hidden
        self.w_ih = stacked_uniform((in_dim, 8 * hidden), bound, generators)
        self.w_hh = stacked_uniform((2, hidden, 4 * hidden), bound, generators)
        b_ih = stacked_uniform((8 * hidden,), bound, generators)
        b_hh = stacked_uniform((8 * hidden,), bound, generators)
        self.bias = nn.Parameter((b_ih + b_hh).detach())

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        R, B, L, d = x.shape
        # W_ih x + b of every step and both directions in one matmul: [R, B, L, 8H]
        pre = torch.baddbmm(self.bias.unsqueeze(1), x.reshape(R, B * L, d), self.w_ih).view(R, B, L, -1)
        on = valid.unsqueeze(-1)
        directions = []
        for k, steps in ((0, range(L)), (1, range(L - 1, -1, -1))):
            h = x.new_zeros(R, B, self.hidden)
            c = x.new_zeros(R, B, self.hidden)
            # one slice per step (unbind: its backward is one stack, where indexing pre[..., t] would add a
            # zero-filled copy of all of pre per step)
            pre_steps = pre[..., 4 * self.hidden * k : 4 * self.hidden * (k + 1)].unbind(dim=2)
            w_hh = self.w_hh[:, k]  # [R, H, 4H]
            out = [None] * L
            for t in steps:
                gates = torch.baddbmm(pre_steps[t], h, w_hh)
                i, f, g, o = gates.chunk(4, dim=-1)
                c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h_next = torch.sigmoid(o) * torch.tanh(c_next)
                here = on[:, :, t]
                c = torch.where(here, c_next, c)
                h = torch.where(here, h_next, h)
                out[t] = h_next * here
            directions.append(torch.stack(out, dim=2))
        return torch.cat(directions, dim=-1)


class GraphBranch(nn.Module):
    """One of GCNet's two graph branches (model.py `GraphNetwork`): RGCN over `n_relations` relations -> GraphConv
    -> [input, graph output] -> bidirectional LSTM -> ReLU(linear). x [R, B, L, d] -> [R, B, L, d + graph_dim]."""

    def __init__(self, in_dim: int, graph_dim: int, n_relations: int, generators: list[torch.Generator]):
        super().__init__()
        self.root = StackedLinear(in_dim, graph_dim, generators)  # RGCN's W_0 x_i + b
        self.relation_weight = stacked_uniform(
            (n_relations, graph_dim, in_dim), 1.0 / math.sqrt(in_dim), generators
        )
        self.conv_neighbours = StackedLinear(graph_dim, graph_dim, generators)  # GraphConv's W_rel, b
        self.conv_root = stacked_uniform((graph_dim, graph_dim), 1.0 / math.sqrt(graph_dim), generators)
        out_dim = in_dim + graph_dim
        self.lstm = StackedLSTM(out_dim, out_dim, generators)
        self.out = StackedLinear(2 * out_dim, out_dim, generators)

    def forward(self, x: torch.Tensor, relations: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """relations [R, B, K, L, L] bool: relation k holds from source j to target i (row i, column j)."""
        R, B, L, d = x.shape
        h1 = self.root(x.reshape(R, B * L, d)).view(R, B, L, -1)
        messages = torch.einsum("rbjd,rkgd->rbkjg", x, self.relation_weight)  # W_r x_j
        per_relation = relations.float()
        mean = per_relation / per_relation.sum(dim=-1, keepdim=True).clamp(min=1)
        h1 = h1 + torch.einsum("rbkij,rbkjg->rbig", mean, messages)
        window = relations.any(dim=2).float()  # every edge, whatever its relation
        summed = (window @ h1).reshape(R, B * L, -1)
        h2 = self.conv_neighbours(summed).view(R, B, L, -1) + torch.einsum(
            "rblg,rhg->rblh", h1, self.conv_root
        )
        z = self.lstm(torch.cat([x, h2], dim=-1), valid)
        return torch.relu(self.out(z.reshape(R, B * L, -1))).view(R, B, L, -1)


class GCNet(Method):
    name = "gcnet"
    needs_conversations = True
    unimodal_rule = ("GCNet", "with the other modalities masked")
    search_space: ClassVar[dict] = {
        "window": IntRange(1, 4),  # the reference's sweep (run_gcnet.sh)
        "reconstruction_weight": LogRange(0.1, 10.0),
    }

    @classmethod
    def privilege(cls, options: dict) -> str | None:
        if options.get("privileged") is True:
            return "its reconstruction targets are the complete training features (masked cells included)"
        return None

    def __init__(self, input_dims, n_classes, train_cfg, method_cfg, generators):
        super().__init__(input_dims, n_classes, train_cfg, method_cfg, generators)
        options = method_cfg
        self.encoders = nn.ModuleList()  # GCNet's own networks read the concatenated features
        self.hidden = options["hidden_dim"]
        self.window = options["window"]
        self.dialogs_per_batch = options["dialogs_per_batch"]
        self.privileged = bool(options["privileged"])
        self.drop_rate = options["drop_rate"]
        self.reconstruction_weight = options["reconstruction_weight"]
        self.n_speakers = options["n_speakers"]  # relations of the speaker graph: n_speakers^2
        self.generators = generators
        total = sum(self.input_dims)
        self.lstm = StackedLSTM(total, self.hidden, generators)
        graph_dim = options["graph_dim"]
        self.temporal = GraphBranch(2 * self.hidden, graph_dim, 3, generators)
        self.speaker = GraphBranch(2 * self.hidden, graph_dim, self.n_speakers**2, generators)
        width = 2 * self.hidden + graph_dim
        self.classifier = StackedLinear(width, n_classes, generators)
        self.reconstruction = StackedLinear(width, total, generators)
        self.offsets = [0, *torch.tensor(self.input_dims).cumsum(0).tolist()]
        self._cache: dict = {}

    # ------------------------------------------------------------------------------------- the dialogs

    def _conversations(self, data: RunGroup):
        conversations = data.conversations
        if conversations is None:
            raise ParamsError(
                "missing_suite.methods",
                "gcnet reads conversations, and this corpus has none (no dialog column in its manifest)",
                "remove gcnet from the methods, or use a corpus kind with conversations (IEMOCAP)",
            )
        if conversations.n_speakers > self.n_speakers:
            raise ParamsError(
                "method_params.gcnet.n_speakers",
                f"the corpus has dialogs of {conversations.n_speakers} speakers, the graph has relations for "
                f"{self.n_speakers}",
                f"set method_params.gcnet.n_speakers: {conversations.n_speakers}",
            )
        key = id(conversations)
        if key not in self._cache:  # on the device once
            self._cache = {
                key: (
                    conversations.dialogs.to(data.device),
                    conversations.speaker.to(data.device),
                    conversations.dialog,
                )
            }
        return self._cache[key]

    def _relations(self, rows: torch.Tensor, valid: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """relations [R, B, 3 + S^2, L, L]: the temporal ones (past, now, future), then the speaker ones (target
        speaker x source speaker), each within `window` turns and between real utterances."""
        L = rows.shape[-1]
        position = torch.arange(L, device=rows.device)
        offset = position.view(1, L) - position.view(L, 1)  # j - i, [L(i), L(j)]
        window = (offset.abs() <= self.window) & valid.unsqueeze(-1) & valid.unsqueeze(-2)  # [R, B, L, L]
        temporal = torch.stack([offset < 0, offset == 0, offset > 0]).view(1, 1, 3, L, L)
        spk = speaker[rows]  # [R, B, L]
        pair = spk.unsqueeze(-1) * self.n_speakers + spk.unsqueeze(-2)  # target i, source j
        kinds = torch.arange(self.n_speakers**2, device=rows.device).view(1, 1, -1, 1, 1)
        speakers = pair.unsqueeze(2) == kinds
        return torch.cat([temporal & window.unsqueeze(2), speakers & window.unsqueeze(2)], dim=2)

    def _forward(self, x: torch.Tensor, rows: torch.Tensor, valid: torch.Tensor, speaker: torch.Tensor):
        """x [R, B, L, D] (masked cells zero) -> logits [R, B, L, C], reconstruction [R, B, L, D]."""
        relations = self._relations(rows, valid, speaker)
        h = self.lstm(x, valid)
        z = self.temporal(h, relations[:, :, :3], valid) + self.speaker(h, relations[:, :, 3:], valid)
        R, B, L, w = z.shape
        flat = z.reshape(R, B * L, w)
        return self.classifier(flat).view(R, B, L, -1), self.reconstruction(flat).view(R, B, L, -1)

    def _inputs(self, data: RunGroup, idx: torch.Tensor, valid: torch.Tensor, present: torch.Tensor):
        """The concatenated standardised features [R, n, D] of rows idx [R, n], zero where `present` [R, n, M]
        is False."""
        return torch.cat(
            [
                data.inputs(m, idx, valid).masked_fill(~present[..., m : m + 1], 0.0)
                for m in range(self.n_modalities)
            ],
            dim=-1,
        )

    def _dialog_rows(self, dialogs: torch.Tensor, chosen: torch.Tensor):
        """rows [R, B, L] of the chosen dialogs [R, B] (-1: none), valid [R, B, L], and the clamped rows."""
        rows = dialogs[chosen.clamp(min=0)]
        valid = (rows >= 0) & (chosen >= 0).unsqueeze(-1)
        return rows.clamp(min=0), valid

    # ------------------------------------------------------------------------------------- training

    def training_steps(self, data: RunGroup, batch_size: int, epoch: int):
        """Per run, its training dialogs (those with a training utterance) shuffled by its own generator, in
        batches of `dialogs_per_batch`, aligned by position as RunGroup.shuffled_batches aligns rows."""
        dialogs, speaker, host_dialog = self._conversations(data)
        train_rows = data.rows("train")
        is_train = torch.zeros(data.n_runs, len(data.labels), dtype=torch.bool)
        per_run = []
        for r, (rows, g) in enumerate(zip(train_rows, data.generators)):
            is_train[r, rows] = True
            own = host_dialog[rows].unique()
            per_run.append(own[torch.randperm(len(own), generator=g)].split(self.dialogs_per_batch))
        is_train = is_train.to(data.device)
        for j in range(max(len(batches) for batches in per_run)):
            chosen = torch.full((data.n_runs, self.dialogs_per_batch), -1, dtype=torch.long)
            for r, batches in enumerate(per_run):
                if j < len(batches):
                    chosen[r, : len(batches[j])] = batches[j]
            active = (chosen >= 0).any(dim=1).to(data.device)
            self.set_active_runs(active)
            yield self._train_step(data, dialogs, speaker, is_train, chosen.to(data.device), active)

    def _train_step(self, data, dialogs, speaker, is_train, chosen, active) -> Step:
        rows, valid = self._dialog_rows(dialogs, chosen)
        R, B, L = rows.shape
        idx, flat_valid = rows.view(R, B * L), valid.view(R, B * L)
        present = data.present_at(idx, flat_valid)  # [R, n, M]
        runs = torch.arange(R, device=idx.device).unsqueeze(1)
        loss_rows = is_train[runs, idx] & flat_valid & present.any(dim=-1)
        if self.privileged:
            shown = present
            targets = loss_rows.unsqueeze(-1) & ~present & flat_valid.unsqueeze(-1)  # the masked cells
            truth = torch.cat(
                [data.complete_inputs(m, idx, flat_valid) for m in range(self.n_modalities)], dim=-1
            )
        else:
            dropped = self._drop(present, loss_rows, active)
            shown, targets = present & ~dropped, dropped
            truth = self._inputs(data, idx, flat_valid, present)
        x = self._inputs(data, idx, flat_valid, shown)
        logits, reconstruction = self._forward(x.view(R, B, L, -1), rows, valid, speaker)
        loss = masked_cross_entropy(logits.view(R, B * L, -1), data.labels[idx], loss_rows)
        error = (reconstruction.view(R, B * L, -1) - truth) ** 2
        per_cell = torch.stack(
            [
                error[..., a:b].mean(dim=-1)  # the squared error over the modality's width / d_m
                for a, b in zip(self.offsets[:-1], self.offsets[1:])
            ],
            dim=-1,
        )
        recon = (per_cell * targets).sum(dim=(1, 2)) / loss_rows.sum(dim=1).clamp(min=1)
        loss = loss + self.reconstruction_weight * recon
        return Step(loss, dict.fromkeys(self.parameters(), active), active)

    def _drop(self, present: torch.Tensor, loss_rows: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Cells dropped on purpose [R, n, M] (privileged false): a loss row with >= 2 modalities loses one,
        chosen uniformly among its present ones, with probability drop_rate; drawn from the run's generator
        (runs without a batch draw nothing)."""
        dropped = torch.zeros_like(present)
        n = present.shape[1]
        for r, (g, on) in enumerate(zip(self.generators, active.tolist())):
            if not on:
                continue
            lose = torch.rand(n, generator=g) < self.drop_rate
            scores = torch.rand(n, self.n_modalities, generator=g).to(present.device)
            scores = scores.masked_fill(~present[r], -1.0)
            which = scores.argmax(dim=-1)
            eligible = lose.to(present.device) & loss_rows[r] & (present[r].sum(dim=-1) >= 2)
            dropped[r, torch.arange(n, device=present.device), which] = eligible
        return dropped

    # ------------------------------------------------------------------------------------- evaluation

    def _node_logits(self, data: RunGroup, batch: Batch, only: int | None) -> torch.Tensor:
        """Logits [R, n, C] of the batch's rows, from a pass over the dialogs that hold them: with every present
        modality (only None) or with modality `only` alone."""
        dialogs, speaker, host_dialog = self._conversations(data)
        idx, valid = batch.idx.cpu(), batch.valid.cpu()
        needed = [host_dialog[idx[r][valid[r]]].unique() for r in range(data.n_runs)]  # each run its own
        R, N, C = data.n_runs, len(data.labels), self.n_classes
        out = torch.zeros(R, N, C, device=data.device)
        runs = torch.arange(R, device=data.device).unsqueeze(1)
        for start in range(0, max(len(d) for d in needed), EVAL_DIALOGS):
            chosen = torch.full((R, EVAL_DIALOGS), -1, dtype=torch.long)
            for r, own in enumerate(needed):
                part = own[start : start + EVAL_DIALOGS]
                chosen[r, : len(part)] = part
            chosen = chosen[:, : int((chosen >= 0).sum(dim=1).max())].to(data.device)
            rows, valid = self._dialog_rows(dialogs, chosen)
            _, B, L = rows.shape
            idx, flat_valid = rows.reshape(R, B * L), valid.reshape(R, B * L)
            shown = data.present_at(idx, flat_valid)
            if only is not None:
                shown = shown & (torch.arange(self.n_modalities, device=shown.device) == only)
            x = self._inputs(data, idx, flat_valid, shown).view(R, B, L, -1)
            logits = self._forward(x, rows, valid, speaker)[0].reshape(R, B * L, C)
            out[runs.expand_as(idx)[flat_valid], idx[flat_valid]] = logits[flat_valid]
        return out[runs, batch.idx]

    @torch.no_grad()
    def predict(self, data: RunGroup, batch: Batch) -> Predictions:
        present = data.present_at(batch.idx, batch.valid)
        fused = self._node_logits(data, batch, None).masked_fill(~present.any(dim=-1, keepdim=True), 0.0)

        @torch.no_grad()
        def unimodal() -> torch.Tensor:
            return torch.stack([self._node_logits(data, batch, m) for m in range(self.n_modalities)], dim=1)

        return DeferredPredictions(fused, unimodal)

    @torch.no_grad()
    def embeddings(self, data: RunGroup, batch: Batch) -> torch.Tensor:
        """Each modality's share of the first LSTM's gate inputs, both directions: [R, M, n, 8 * hidden_dim]."""
        blocks = zip(self.offsets[:-1], self.offsets[1:])
        return torch.stack(
            [
                torch.bmm(data.inputs(m, batch.idx, batch.valid), self.lstm.w_ih[:, a:b])
                for m, (a, b) in enumerate(blocks)
            ],
            dim=1,
        )
