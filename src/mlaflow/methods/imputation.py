"""What the imputation baselines of the missing-modality experiment share (ae, cra, mmin, if_mmin; paper
Table 2, as GCNet's baseline code `zeroQiaoba/GCNet/baseline-mmin` adapts them to utterance-level features):

- Zero-filled inputs: a modality missing for a sample enters its encoder as a zero vector (standardised
  features, so "zero" is the training mean), and the encoder's output for it (encoder(0), not 0) is what the
  imputation network completes. Masked cells are never read (`RunGroup.inputs` zero-fills them).
- Artificial dropout of observed modalities (`artificial_drop`): the reconstruction losses of the reference
  code compare the reconstruction of a MISSING modality with that modality's true features (AE, CRA) or
  with a teacher's embedding of them (MMIN, IF-MMIN). mlaflow never reads a masked cell, so where the true
  value is not observable the loss is computed instead on observed cells that are masked on purpose: in each
  training mini-batch, a sample with at least two modalities present has, with probability `drop_rate`, one of
  its present modalities (uniformly chosen) zero-filled as if missing; the reconstruction loss runs over these
  dropped-but-observed cells, whose features are known. The classifier is trained on the same (dropped)
  inputs, which also exposes it to more missing-modality patterns. The draws come from each run's generator,
  only in the runs taking the step, so stacked runs equal runs one at a time.
- Stacked building blocks: `ResidualAE` (the reference's `ResidualAE`, with its transition layer, and the
  invariant-feature-conditioned variant of IF-MMIN's `autoencoder_2.ResidualAE`), `SimpleAE` (its
  `SimpleFcAE`), and `Teacher` (the early-fusion teacher of MMIN / IF-MMIN, trained inside the student's first
  epoch (a pretraining phase of the training loop), with its own optimiser of the shared settings, for `teacher_epochs` epochs, train.epochs
  unless set).
- Prediction: the whole network on the zero-filled inputs; fused logits zero where nothing is present.
  Unimodal logits of modality m: the same network with every other modality treated as missing (zero-filled).
- Simplifications against the reference code: no gradient-norm clipping, no dropout inside the
  autoencoders (the reference's AEs use none either), linear classifiers (the reference's `FcClassifier`
  has two hidden layers of 128), reconstruction errors averaged over the cells they count (the reference sums
  the per-cell errors over the batch, which ties the loss weight to the batch size).
- Exact speed-ups (the same numbers, within float rounding, as the plain computation; tested):
  (1) the frozen teacher's embeddings and invariant features of every training row are computed once, after
  its training (`tabulate_teacher`), and looked up per batch; (2) without dropout, a training batch's encoders
  run only on the cells fed to them plus one zero row per run, whose output encoder(0) fills the other cells
  (`encode_kept`; the saving grows with the missing rate, none at 0; the bench masks about half the cells);
  (3) predict runs the encoders once, and the network after them once on every row (fused)
  and, for modality m's unimodal logits, only on the rows holding m and another modality (a row without m
  gets the all-zero input's logits, computed once; a row with m alone its fused logits); (4) `FastLinear`:
  the stacked linear layer with a backward that writes the weight gradient in the weight's layout (no
  transposed copy), and in-place activations.
- Cost (15 stacked runs, 1200 train rows, dims [512, 1024, 1024], 15 epochs, one thread, with per-epoch
  prediction; measured on a shared 2-core machine, so +-10%; bench/bench_methods.py
  measures every method): late_fusion 12.2-14.5 s
  (13.1 s mean); ae 26.9 s (2.0x), cra 39.6 s (3.0x), mmin 50.2 s (3.8x, teacher included; 46.3 s, 3.5x,
  with teacher_epochs 10), if_mmin 42.6 s (3.3x). Before these speed-ups (3 epochs): ae 2.4x, cra 3.7x,
  mmin 5.5-6.3x, if_mmin 6.0-6.7x. What remains is the reference's architecture, near the floor of its
  arithmetic: cra's two [256, 128] blocks and 384 x 384 transition (kept: GCNet's CRA runs use them) on
  every row, and its per-modality decoders, whose parameters (as many as the encoders') the shared
  optimiser updates each step (the optimiser is a quarter of cra's time); mmin's student alone (forward and
  backward residual AEs, each with a transition) costs about 2.8x late fusion and its teacher about 1x.
  Glibc's trimming of freed memory costs every method 10-15% (MALLOC_TRIM_THRESHOLD_ /
  MALLOC_MMAP_THRESHOLD_ set high remove it), the ratios unchanged.
"""

from __future__ import annotations

import itertools

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
    StackedLinear,
    Step,
    masked_cross_entropy,
)

# ------------------------------------------------------------------------------------------------ pieces


def artificial_drop(
    present: torch.Tensor, rate: float, generators: list[torch.Generator], active: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """present [R, B, M] -> (kept, dropped) [R, B, M]: in each active run, each sample with >= 2 modalities
    present loses one of them (uniformly among its present ones) with probability `rate`. Each active run draws
    B + B * M uniforms from its own generator (none when rate is 0 or the run is inactive)."""
    _R, B, M = present.shape
    if rate <= 0.0:
        return present, torch.zeros_like(present)
    u, score = [], []
    for g, on in zip(generators, active.tolist()):
        if on:
            u.append(torch.rand(B, generator=g))
            score.append(torch.rand(B, M, generator=g))
        else:
            u.append(torch.ones(B))
            score.append(torch.zeros(B, M))
    u, score = torch.stack(u).to(present.device), torch.stack(score).to(present.device)
    eligible = (present.sum(-1) >= 2) & (u < rate)  # [R, B]
    choice = score.masked_fill(~present, -1.0).argmax(-1)  # a present modality
    dropped = F.one_hot(choice, M).bool() & eligible.unsqueeze(-1)
    return present & ~dropped, dropped


def compact(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mask [R, B] -> (positions [R, K], valid [R, K]): each run's True positions first, K = max count."""
    k = int(mask.sum(1).max()) if mask.numel() else 0
    order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices[:, :k]
    return order, mask.gather(1, order)


def gather_rows(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x [R, B, d], positions [R, K] -> [R, K, d]."""
    return x.gather(1, positions.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def masked_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean squared error per run: pred, target [R, ..., d], weight [R, ...] (which cells count) -> [R]: the
    mean over the counted cells of the per-dimension mean squared error (0 where none counts)."""
    per_cell = ((pred - target) ** 2).mean(-1) * weight
    dims = tuple(range(1, per_cell.dim()))
    return per_cell.sum(dims) / weight.sum(dims).clamp(min=1)


def safe_norm(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last axis, exactly 0 (and with a zero gradient) at 0."""
    sq = (x**2).sum(-1)
    return torch.where(sq > 0, sq.clamp(min=1e-30).sqrt(), torch.zeros_like(sq))


def cmd(x1: torch.Tensor, x2: torch.Tensor, mask: torch.Tensor, moments: int = 5) -> torch.Tensor:
    """Central moment discrepancy (Zellinger et al. 2017, the reference's `CMD`, without its bound scaling):
    x1, x2 [R, B, s] over the rows where mask [R, B] -> [R]: ||E x1 - E x2|| + sum_{k=2..K} ||c_k(x1) - c_k(x2)||,
    c_k the k-th central moment per dimension. 0 for runs without rows."""
    w = (mask.float() / mask.sum(1, keepdim=True).clamp(min=1)).unsqueeze(-1)  # [R, B, 1]
    m1, m2 = (x1 * w).sum(1, keepdim=True), (x2 * w).sum(1, keepdim=True)
    out = safe_norm((m1 - m2).squeeze(1))
    s1, s2 = x1 - m1, x2 - m2
    for k in range(2, moments + 1):
        out = out + safe_norm(((s1**k) * w).sum(1) - ((s2**k) * w).sum(1))
    return out


class _StackedLinearFunction(torch.autograd.Function):
    """StackedLinear's product with a backward that writes the weight gradient [R, out, in] directly (autograd's
    own goes through the transposed weight and then copies the gradient back into the weight's layout)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        gx = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        gw = torch.bmm(grad.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        gb = grad.sum(1) if ctx.needs_input_grad[2] else None
        return gx, gw, gb


class FastLinear(StackedLinear):
    """`StackedLinear` (same parameters, initialisation and numbers) with a cheaper backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _StackedLinearFunction.apply(x, self.weight, self.bias)


def fast_linears(module: nn.Module) -> None:
    """Turn every StackedLinear inside module (e.g. the shared `ModalityEncoder`s) into a FastLinear, and its
    ReLUs in-place (they follow FastLinears, which do not keep their outputs for the backward pass)."""
    for sub in module.modules():
        if type(sub) is StackedLinear:
            sub.__class__ = FastLinear
        elif isinstance(sub, (nn.ReLU, nn.LeakyReLU)):
            sub.inplace = True


def mlp(
    dims: list[int], activation: type[nn.Module], generators, last: type[nn.Module] | None = None
) -> nn.Sequential:
    """Stacked linear layers (FastLinear) dims[0] -> ... -> dims[-1], `activation` between them, `last` after
    the last (both applied in place to the linear outputs)."""
    layers = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        layers.append(FastLinear(a, b, generators))
        if i < len(dims) - 2:
            layers.append(activation(inplace=True))
        elif last is not None:
            layers.append(last(inplace=True))
    return nn.Sequential(*layers)


class SimpleAE(nn.Module):
    """The reference's `SimpleFcAE` (layers [256, 128]): encoder Linear+LeakyReLU per layer, decoder back with
    LeakyReLU, the last layer with ReLU. x [R, B, d] -> (reconstruction [R, B, d], latent [R, B, layers[-1]])."""

    def __init__(self, input_dim: int, layers: list[int], generators):
        super().__init__()
        self.encoder = mlp([input_dim, *layers], nn.LeakyReLU, generators, last=nn.LeakyReLU)
        self.decoder = mlp([*layers[::-1], input_dim], nn.LeakyReLU, generators, last=nn.ReLU)

    def forward(self, x):
        latent = self.encoder(x)
        return self.decoder(latent), latent


class ResidualAE(nn.Module):
    """The reference's `ResidualAE`: n_blocks encoder/decoder pairs (encoder dims [d, *layers], LeakyReLU
    between, none after the last; decoder mirrored with ReLU), then a transition Linear-ReLU-Linear (d, d).

    Unconditioned (MMIN, CRA): x_in = x, x_out = 0; per block x_in += x_out, x_out = dec(enc(x_in)); the output
    is transition(x_in + x_out). Conditioned on the invariant features `shared` (IF-MMIN's `autoencoder_2`):
    x_out = x; per block x_in = x_out + shared, x_out = dec(enc(x_in)); the output is transition(x_out).
    Returns (reconstruction [R, B, d], the blocks' latents concatenated [R, B, n_blocks * layers[-1]])."""

    def __init__(self, input_dim: int, layers: list[int], n_blocks: int, generators):
        super().__init__()
        self.encoders = nn.ModuleList(
            mlp([input_dim, *layers], nn.LeakyReLU, generators) for _ in range(n_blocks)
        )
        self.decoders = nn.ModuleList(
            mlp([*layers[::-1], input_dim], nn.ReLU, generators) for _ in range(n_blocks)
        )
        self.transition = mlp([input_dim, input_dim, input_dim], nn.ReLU, generators)

    def forward(self, x: torch.Tensor, shared: torch.Tensor | None = None):
        latents = []
        if shared is None:
            x_in, x_out = x, torch.zeros_like(x)
            for enc, dec in zip(self.encoders, self.decoders):
                x_in = x_in + x_out
                latents.append(enc(x_in))
                x_out = dec(latents[-1])
            return self.transition(x_in + x_out), torch.cat(latents, -1)
        x_out = x
        for enc, dec in zip(self.encoders, self.decoders):
            latents.append(enc(x_out + shared))
            x_out = dec(latents[-1])
        return self.transition(x_out), torch.cat(latents, -1)


def per_slot(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a stacked module to x [R, a, b, d] (flattened to [R, a*b, d] and back)."""
    R, a, b, _ = x.shape
    y = module(x.reshape(R, a * b, -1))
    return y.view(R, a, b, -1)


# ------------------------------------------------------------------------------------------ the method base


class ImputationMethod(Method):
    """Base: one training loop; subclasses define `batch_loss` and `logits`. `reconstruction_curve`: per epoch,
    each run's mean reconstruction error (the unweighted reconstruction term of the loss)."""

    def __init__(self, input_dims, n_classes, train_cfg, generators):
        super().__init__(input_dims, n_classes, train_cfg, {}, generators)
        fast_linears(self.encoders)
        self.generators = generators
        self.dropout = train_cfg["dropout"]
        self.reconstruction_curve: list[torch.Tensor] = []

    def encode_kept(self, m: int, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Encoder m on x [R, B, d] zero-filled outside keep [R, B] -> [R, B, s]. Without dropout the encoder runs
        on the kept rows only (compacted) and on one zero row per run, whose output (encoder(0)) fills the other
        rows: the same numbers and gradients as encoding every zero-filled row. With dropout (a mask per row,
        drawn for the whole padded batch) every row is encoded."""
        enc = self.encoders[m]
        if self.dropout > 0.0 or x.is_cuda:
            # on a GPU every row: a shape that depends on the data would wait for the device at every step
            return enc(x.masked_fill(~keep.unsqueeze(-1), 0.0))
        R, B, d = x.shape
        positions, ok = compact(keep)
        K = positions.shape[1]
        out = enc(torch.cat([gather_rows(x, positions), x.new_zeros(R, 1, d)], dim=1))  # [R, K + 1, s]
        zero = out[:, K:]
        s = out.shape[-1]
        out = torch.where(ok.unsqueeze(-1), out[:, :K], zero)
        return zero.expand(R, B, s).scatter(1, positions.unsqueeze(-1).expand(-1, -1, s), out)

    def network_on(self, data: RunGroup, batch: Batch, kept: torch.Tensor):
        """(inputs, h): the present cells' inputs [R, B, d_m] per modality (masked cells 0), and the encoder
        outputs h [R, B, M*s] of the inputs zero-filled outside `kept` [R, B, M] (the modalities fed)."""
        xs = [data.inputs(m, batch.idx, batch.valid) for m in range(self.n_modalities)]
        h = [self.encode_kept(m, x, kept[..., m]) for m, x in enumerate(xs)]
        return xs, torch.cat(h, dim=-1)

    def logits_from_h(self, h: torch.Tensor) -> torch.Tensor:
        """Logits [R, n, C] of the network after the encoders, from their outputs h [R, n, M*s]."""
        raise NotImplementedError

    def logits(self, data: RunGroup, batch: Batch, kept: torch.Tensor) -> torch.Tensor:
        return self.logits_from_h(self.network_on(data, batch, kept)[1])

    def batch_loss(self, data: RunGroup, batch: Batch, present: torch.Tensor, active: torch.Tensor):
        """(loss [R], stepping: {parameter: runs [R]}, reconstruction error [R]) of one training mini-batch."""
        raise NotImplementedError

    def training_steps(self, data: RunGroup, batch_size: int, epoch: int):
        recon_sum = torch.zeros(self.n_runs, device=data.device)
        n_batches = torch.zeros(self.n_runs, device=data.device)
        for batch in data.shuffled_batches(data.rows("train"), batch_size):
            active = batch.valid.any(dim=1)  # [R]
            self.set_active_runs(active)
            present = data.present_at(batch.idx, batch.valid)  # [R, B, M]
            loss, stepping, reconstruction = self.batch_loss(data, batch, present, active)
            yield Step(loss, stepping, active)
            recon_sum += reconstruction.detach() * active
            n_batches += active
        self.reconstruction_curve.append(recon_sum / n_batches.clamp(min=1))

    def student_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("teacher.")]

    @torch.no_grad()
    def predict(self, data: RunGroup, batch: Batch) -> Predictions:
        """Each encoder runs once per row (and once on a zero row); the rest of the network runs on every row
        for the fused logits, and for modality m's unimodal logits only on the rows where m and another modality
        are present: a row without m has every modality zero-filled, so its logits are those of the all-zero
        input (computed once per run), and a row with m alone has the fused logits. The same numbers as running
        the whole network M + 1 times on every row."""
        present = data.present_at(batch.idx, batch.valid)  # [R, n, M]
        R, _n, M = present.shape
        xs = [data.inputs(m, batch.idx, batch.valid) for m in range(M)]
        full = torch.stack([enc(x) for enc, x in zip(self.encoders, xs)], dim=2)  # [R, n, M, s]
        zero = torch.stack([enc(x.new_zeros(R, 1, x.shape[-1])) for enc, x in zip(self.encoders, xs)], dim=2)
        s = full.shape[-1]
        fused = self.logits_from_h(torch.where(present.unsqueeze(-1), full, zero).flatten(2))
        fused = fused.masked_fill(~present.any(-1, keepdim=True), 0.0)
        nothing = self.logits_from_h(zero.flatten(2))  # [R, 1, C]
        C = nothing.shape[-1]
        alone = present.sum(-1, keepdim=True) == 1  # [R, n, 1]
        unimodal = []
        for m in range(M):
            # rows with m and another modality: the network on m alone; rows with m alone: the fused logits
            positions, ok = compact(present[..., m] & ~alone[..., 0])
            only_m = zero.expand(R, positions.shape[1], M, s).clone()
            only_m[:, :, m] = gather_rows(full[:, :, m], positions)
            base = torch.where(alone & present[..., m : m + 1], fused, nothing)
            sub = torch.where(
                ok.unsqueeze(-1), self.logits_from_h(only_m.flatten(2)), gather_rows(base, positions)
            )
            unimodal.append(base.scatter(1, positions.unsqueeze(-1).expand(-1, -1, C), sub))
        return Predictions(torch.stack(unimodal, dim=1), fused)


# --------------------------------------------------------------------------------------------- the teacher


class Teacher(nn.Module):
    """Early-fusion teacher of MMIN (the reference's `UttFusionModel`: encoders, concatenation, classifier) and,
    with `shared=True`, of IF-MMIN (`UttSharedModel`: a shared encoder Linear-LeakyReLU-Linear-LeakyReLU (s, s)
    applied to every modality's embedding, the classifier on [embeddings, shared features], and a CMD loss
    between the modalities' shared features, averaged over the modality pairs). Linear classifiers."""

    def __init__(self, input_dims, n_classes, train_cfg, generators, shared: bool, moments: int = 5):
        super().__init__()
        s = train_cfg["hidden_dim"]
        self.encoders = nn.ModuleList(
            ModalityEncoder(d, s, train_cfg["dropout"], generators) for d in input_dims
        )
        self.shared = mlp([s, s, s], nn.LeakyReLU, generators, last=nn.LeakyReLU) if shared else None
        width = len(input_dims) * s * (2 if shared else 1)
        self.head = FastLinear(width, n_classes, generators)
        fast_linears(self.encoders)
        self.moments = moments

    def embed(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """[R, B, d_m] per modality -> [R, M, B, s]."""
        return torch.stack([enc(x) for enc, x in zip(self.encoders, xs)], dim=1)

    def invariant(self, h: torch.Tensor) -> torch.Tensor:
        """Shared (invariant) features [R, M, B, s] of the embeddings h [R, M, B, s]."""
        return per_slot(self.shared, h)

    def loss(self, xs: list[torch.Tensor], labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = self.embed(xs)  # [R, M, B, s]
        feats = [h[:, m] for m in range(h.shape[1])]
        if self.shared is None:
            return masked_cross_entropy(self.head(torch.cat(feats, -1)), labels, valid)
        inv = self.invariant(h)
        logits = self.head(torch.cat(feats + [inv[:, m] for m in range(h.shape[1])], -1))
        pairs = [(a, b) for a in range(h.shape[1]) for b in range(a + 1, h.shape[1])]
        discrepancy = sum(cmd(inv[:, a], inv[:, b], valid, self.moments) for a, b in pairs) / max(
            1, len(pairs)
        )
        return masked_cross_entropy(logits, labels, valid) + discrepancy


class TeacherStudent(ImputationMethod):
    """Base of MMIN and IF-MMIN: a teacher trained first (a pretraining phase, before the first epoch), then the student
    (encoders initialised from the teacher's) with targets from the frozen teacher.

    teacher_data "complete" (the reference's, a PRIVILEGE): the teacher trains on every training row with all
    its modalities, read through `RunGroup.complete_inputs`, and the student's target embeddings of the
    training-time missing cells come from those complete features. "observed": the teacher trains on the
    training rows that have every modality observed (a run without such rows trains it on all its training
    rows, zero-filled), never reading a masked cell; the student then learns to reconstruct artificially
    dropped observed cells (`artificial_drop`), its targets the teacher's embeddings of the observed features;
    truly missing cells count in no reconstruction loss."""

    shared_teacher = False

    @classmethod
    def privilege(cls, options: dict) -> str | None:
        if options.get("teacher_data") == "complete":
            return "its teacher is trained on complete training data (masked cells included)"
        return None

    def __init__(self, input_dims, n_classes, train_cfg, options, generators):
        super().__init__(input_dims, n_classes, train_cfg, generators)
        self.teacher_data, self.drop_rate = options["teacher_data"], options["drop_rate"]
        self.teacher_epochs = options["teacher_epochs"] or train_cfg["epochs"]
        self.teacher = Teacher(self.input_dims, n_classes, train_cfg, generators, shared=self.shared_teacher)
        self.teacher_losses: list[torch.Tensor] = []

    def teacher_inputs(self, data: RunGroup, batch: Batch) -> list[torch.Tensor]:
        read = data.complete_inputs if self.teacher_data == "complete" else data.inputs
        return [read(m, batch.idx, batch.valid) for m in range(self.n_modalities)]

    def teacher_rows(self, data: RunGroup) -> list[torch.Tensor]:
        rows = data.rows("train")
        if self.teacher_data == "complete":
            return rows
        out = []
        for r, rows_r in enumerate(rows):
            complete = rows_r[data.host_present[r, rows_r].all(dim=1)]
            out.append(complete if len(complete) else rows_r)
        return out

    def pretraining(self, data: RunGroup, batch_size: int) -> list[Phase]:
        """The teacher, trained first for `teacher_epochs` epochs (train.epochs unless set; the trainer's optimiser
        settings and step schedule, its own optimiser state), then frozen: the student's encoders start from its
        own, and its outputs on the training rows are tabulated (`tabulate_teacher`)."""
        rows = self.teacher_rows(data)

        def steps(data: RunGroup, batch_size: int, epoch: int):
            for batch in data.shuffled_batches(rows, batch_size):
                active = batch.valid.any(dim=1)
                self.set_active_runs(active)
                loss = self.teacher.loss(self.teacher_inputs(data, batch), batch.labels, batch.valid)
                yield Step(loss, dict.fromkeys(self.teacher.parameters(), active), active)

        def finish(losses: list[torch.Tensor]) -> None:
            self.teacher_losses.extend(losses)
            for p in self.teacher.parameters():
                p.grad = None
            self.teacher.requires_grad_(False)
            self.encoders.load_state_dict(self.teacher.encoders.state_dict())
            if self.shared_teacher:
                self.shared.load_state_dict(self.teacher.shared.state_dict())
            self.tabulate_teacher(data)

        self.teacher.train()
        return [Phase("teacher", list(self.teacher.parameters()), self.teacher_epochs, steps, finish)]

    @torch.no_grad()
    def tabulate_teacher(self, data: RunGroup, chunk: int = 256) -> None:
        """Once the teacher is frozen: its embeddings (and invariant features) of every training row of every run
        (of the inputs `teacher_inputs` reads), and of the zero input, so that the student's batches look them
        up instead of re-running the teacher (same numbers)."""
        self.teacher.eval()
        rows = data.rows("train")
        R = self.n_runs
        position = torch.full((R, len(data.labels)), -1, dtype=torch.long, device=data.device)
        for r, rows_r in enumerate(rows):
            position[r, rows_r] = torch.arange(len(rows_r), device=data.device)
        everything = data.padded(rows)
        source, invariant = [], []
        for start in range(0, everything.idx.shape[1], chunk):
            part = Batch(
                everything.idx[:, start : start + chunk],
                everything.valid[:, start : start + chunk],
                everything.labels[:, start : start + chunk],
            )
            h = self.teacher.embed(self.teacher_inputs(data, part))  # [R, M, b, s]
            source.append(h.permute(0, 2, 1, 3).flatten(2))  # [R, b, M*s]
            if self.shared_teacher:
                invariant.append(self.teacher.invariant(h).permute(0, 2, 1, 3).flatten(2))
        zero = self.teacher.embed([torch.zeros(R, 1, d, device=data.device) for d in self.input_dims])
        zero_inv = self.teacher.invariant(zero) if self.shared_teacher else None
        self._table = (
            position,
            torch.cat(source, 1),
            torch.cat(invariant, 1) if invariant else None,
            zero,
            zero_inv,
        )

    @torch.no_grad()
    def teacher_embeddings(self, data: RunGroup, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The frozen teacher's embeddings [R, M, B, s] of the batch's `teacher_inputs` and (IF-MMIN) their
        invariant features [R, M, B, s] (else None): looked up in the table `tabulate_teacher` built when every
        row of the batch is in it, computed otherwise. Padding rows: the teacher's outputs for the zero input."""
        table = getattr(self, "_table", None)
        if table is not None:
            position, source, invariant, zero, zero_inv = table
            runs = torch.arange(self.n_runs, device=batch.idx.device).unsqueeze(1)
            at = position[runs, batch.idx]  # [R, B]
            if bool((at >= 0)[batch.valid].all()):
                at = at.clamp(min=0)
                R, B = at.shape
                mask = batch.valid.view(R, 1, B, 1)

                def look_up(values, fill):
                    out = gather_rows(values, at).view(R, B, self.n_modalities, -1).permute(0, 2, 1, 3)
                    return torch.where(mask, out, fill)

                return look_up(source, zero), (
                    look_up(invariant, zero_inv) if invariant is not None else None
                )
        self.teacher.eval()
        source = self.teacher.embed(self.teacher_inputs(data, batch))
        return source, (self.teacher.invariant(source) if self.shared_teacher else None)

    @torch.no_grad()
    def teacher_targets(self, data: RunGroup, batch: Batch, present: torch.Tensor, kept: torch.Tensor):
        """(target [R, B, M, s], counted [R, B, M], teacher embeddings of the source inputs [R, M, B, s]).
        target: the reference's T_embds, the teacher's embedding of the 'reverse' input (the missing modalities'
        features, the kept ones zero-filled: teacher encoder(0) in their slots); counted: the slots whose
        target is known (all with teacher_data complete; not the truly missing ones with observed)."""
        source, _ = self.teacher_embeddings(data, batch)  # [R, M, B, s]
        R = batch.idx.shape[0]
        table = getattr(self, "_table", None)
        if table is not None:
            zero = table[3]
        else:
            self.teacher.eval()
            zero = self.teacher.embed([torch.zeros(R, 1, d, device=data.device) for d in self.input_dims])
        target = torch.where(kept.permute(0, 2, 1).unsqueeze(-1), zero, source)  # [R, M, B, s]
        counted = batch.valid.unsqueeze(-1).expand_as(present)
        if self.teacher_data == "observed":
            counted = counted & present
        return target.permute(0, 2, 1, 3), counted, source

    def kept_for_training(self, present: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        if self.teacher_data == "complete":
            return present  # the truly missing cells are reconstructed (privileged targets)
        return artificial_drop(present, self.drop_rate, self.generators, active)[0]


# ------------------------------------------------------------------------------------ AE and CRA (features)


class FeatureReconstruction(ImputationMethod):
    """Base of AE and CRA (the reference's `mmin_AE_model` / `mmin_CRA_model`): zero-filled inputs -> encoders
    -> concatenation h (M*s) -> autoencoder -> reconstruction (M*s) -> linear classifier; one decoder per
    modality maps the reconstruction back to that modality's (standardised) features, and the reconstruction
    loss compares it with the true features of the missing cells only, here the artificially dropped
    observed cells (see the module docstring). Decoder m: Linear(M*s, s)-ReLU-Linear(s, d_m) (the reference's
    has two hidden layers of 128); it runs on the dropped cells only, and steps only in the runs whose
    batch has such a cell. loss = CE + reconstruction_weight * mean over the dropped cells of their feature
    MSE. Subclasses define `build_autoencoder` (x [R, B, M*s] -> (reconstruction, latent))."""

    def __init__(self, input_dims, n_classes, train_cfg, method_cfg, generators):
        super().__init__(input_dims, n_classes, train_cfg, generators)
        options = method_cfg
        self.drop_rate, self.reconstruction_weight = options["drop_rate"], options["reconstruction_weight"]
        width = self.n_modalities * self.hidden_dim
        self.autoencoder = self.build_autoencoder(width, options, generators)
        self.decoders = nn.ModuleList(
            mlp([width, self.hidden_dim, d], nn.ReLU, generators) for d in self.input_dims
        )
        self.head = FastLinear(width, n_classes, generators)

    def build_autoencoder(self, width: int, options: dict, generators) -> nn.Module:
        raise NotImplementedError

    def reconstruct(self, data: RunGroup, batch: Batch, kept: torch.Tensor):
        xs, h = self.network_on(data, batch, kept)
        return xs, self.autoencoder(h)[0]

    def logits_from_h(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.autoencoder(h)[0])

    def reconstruction_error(self, xs: list[torch.Tensor], recon: torch.Tensor, dropped: torch.Tensor):
        """(mean feature MSE over the dropped cells [R], runs in which decoder m was used {m: [R]})."""
        total = torch.zeros(self.n_runs, device=recon.device)
        count = torch.zeros(self.n_runs, device=recon.device)
        used = {}
        for m, decoder in enumerate(self.decoders):
            positions, ok = compact(dropped[..., m])
            if positions.shape[1] == 0:
                continue
            error = ((decoder(gather_rows(recon, positions)) - gather_rows(xs[m], positions)) ** 2).mean(-1)
            total = total + (error * ok).sum(1)
            count = count + ok.sum(1)
            used[m] = dropped[..., m].any(1)
        return total / count.clamp(min=1), used

    def batch_loss(self, data, batch, present, active):
        kept, dropped = artificial_drop(present, self.drop_rate, self.generators, active)
        xs, recon = self.reconstruct(data, batch, kept)
        ce = masked_cross_entropy(self.head(recon), batch.labels, present.any(-1))
        error, used = self.reconstruction_error(xs, recon, dropped)
        stepping = {p: active for name, p in self.named_parameters() if not name.startswith("decoders.")}
        for m, runs in used.items():
            stepping.update(dict.fromkeys(self.decoders[m].parameters(), runs))
        return ce + self.reconstruction_weight * error, stepping, error
