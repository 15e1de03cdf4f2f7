"""What every method shares: stacked runs, the per-modality encoder of A.3.2, and the interface the trainer
calls.

Every method trains R independent runs at once (R = 1 for a single run): each parameter has a leading run
axis, and every layer is a batched matmul over it (`StackedLinear`). Runs never mix: each has its own
initialisation, shuffling and dropout drawn from its own `torch.Generator`, its own mask, split and
standardisation, and the optimiser updates a run only at the steps where that run really takes a step. So R
runs stacked give the same numbers (within float tolerance) as R runs one after another, only faster.

How a method is trained (one loop for all, `mlaflow.train.loop`) is described in `Method`.

A method sees the data through `RunGroup`, which gathers mini-batches of every run from the shared feature
tensors (features stay in memory, once, whatever R is). With `train.masked_input: skip` (default) a masked
(sample, modality) cell is never read: methods select present rows before encoding, and `RunGroup.inputs`
zero-fills masked cells as a safeguard. With `zero_fill` (the released MLA code's way) the method is not told:
it sees every modality as present, and a masked cell's raw features are zeros.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mlaflow.errors import ParamsError

# ----------------------------------------------------------------------------------------- stacked layers


class StackedLinear(nn.Module):
    """R independent linear layers: x [R, B, in] -> [R, B, out]. Weight [R, out, in] as nn.Linear's, per run.

    Initialised like nn.Linear (uniform in +-1/sqrt(in)), each run from its own generator."""

    def __init__(self, in_dim: int, out_dim: int, generators: list[torch.Generator]):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        weight, bias = [], []
        for g in generators:
            weight.append(torch.empty(out_dim, in_dim).uniform_(-bound, bound, generator=g))
            bias.append(torch.empty(out_dim).uniform_(-bound, bound, generator=g))
        self.weight = nn.Parameter(torch.stack(weight))
        self.bias = nn.Parameter(torch.stack(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


class StackedDropout(nn.Module):
    """Dropout whose mask for run r comes from run r's generator, so stacking does not change any run."""

    def __init__(self, p: float, generators: list[torch.Generator]):
        super().__init__()
        self.p, self.generators = p, generators
        self.active: list[bool] | None = (
            None  # runs taking this step (set by the method); others draw nothing
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        active = self.active if self.active is not None else [True] * len(self.generators)
        keep = torch.stack(
            [
                torch.rand(x.shape[1:], generator=g) >= self.p
                if on
                else torch.ones(x.shape[1:], dtype=torch.bool)
                for g, on in zip(self.generators, active)
            ]
        )
        return x * keep.to(x.device) / (1.0 - self.p)


class ModalityEncoder(nn.Sequential):
    """Three fully connected layers of width `hidden_dim` (A.3.2), as in GCNet's utterance-level baselines."""

    uses_rows = False  # computes every row (padding and masked cells included); callers mask its output

    def __init__(self, input_dim: int, hidden_dim: int, dropout: float, generators: list[torch.Generator]):
        super().__init__(
            StackedLinear(input_dim, hidden_dim, generators),
            nn.ReLU(),
            StackedDropout(dropout, generators),
            StackedLinear(hidden_dim, hidden_dim, generators),
            nn.ReLU(),
            StackedDropout(dropout, generators),
            StackedLinear(hidden_dim, hidden_dim, generators),
        )

    def forward(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """x [R, B, d] -> [R, B, hidden_dim]; `rows` is not read (the encoder protocol of `build_encoder`)."""
        return super().forward(x)

    def modulated_parameters(self) -> list[nn.Parameter]:
        """What OGM-GE modulates: the weight matrices (the reference's conv kernels have no linear analogue
        closer than these; biases are left alone)."""
        return [layer.weight for layer in self if isinstance(layer, StackedLinear)]


ENCODER_KINDS = ("mlp", "resnet18")  # train.encoder


def build_encoder(
    input_shape: tuple[int, ...], train_cfg: dict, generators: list[torch.Generator]
) -> nn.Module:
    """The encoder of one modality for R stacked runs, as `train.encoder` says: `mlp` (A.3.2's three fully
    connected layers on frozen features, width train.hidden_dim) or `resnet18` (trained end to end from the
    prepared inputs of shape `input_shape`; mlaflow.methods.resnet). Either maps x [R, B, d] and the rows to
    compute, rows [R, B] (or None: all), to [R, B, output width]; `uses_rows` says whether it reads them."""
    kind = train_cfg.get("encoder", "mlp")
    if kind == "mlp":
        return ModalityEncoder(
            math.prod(input_shape), train_cfg["hidden_dim"], train_cfg["dropout"], generators
        )
    if kind == "resnet18":
        if len(input_shape) < 3:
            raise ParamsError(
                "train.encoder",
                f"resnet18 trains from prepared inputs, but this modality's store holds {input_shape[0]}-d "
                "features (no input_shape)",
                "extract the inputs with features.audio.encoder: fbank_spectrogram and features.visual.encoder: "
                "frames, or use train.encoder: mlp",
            )
        from mlaflow.methods.resnet import StackedResNetEncoder

        return StackedResNetEncoder(
            input_shape, train_cfg["resnet_width"], generators, amp=train_cfg.get("amp", True)
        )
    raise ParamsError("train.encoder", f"unknown encoder {kind!r}", f"use one of {list(ENCODER_KINDS)}")


# ------------------------------------------------------------------------------------------------- data


@dataclass
class Batch:
    """One mini-batch of every run: rows idx [R, B] (padding where valid is False) and their labels [R, B]."""

    idx: torch.Tensor
    valid: torch.Tensor
    labels: torch.Tensor


class RunGroup:
    """The data of R runs that share one corpus: features [N, d_m] per modality (shared), and per run its
    mask [R, N, M], its split (row indices per role), standardisation statistics and generator.

    `observed` is the real mask; `present` is what the method is told: the same tensor with
    masked_input="skip", all True with "zero_fill" (masked cells then read as raw zeros)."""

    def __init__(
        self,
        features: list[torch.Tensor],
        labels: torch.Tensor,
        present: torch.Tensor,
        splits: list[dict[str, torch.Tensor]],
        generators: list[torch.Generator],
        standardize: bool,
        masked_input: str = "skip",
        conversations=None,
    ):
        self.features, self.labels, self.observed = features, labels, present
        self.zero_fill = masked_input == "zero_fill"
        self.present = torch.ones_like(present) if self.zero_fill else present
        self.splits, self.generators = splits, generators
        # where each row sits in its dialog (mlaflow.train.data.Conversations; None: no conversations), for the
        # methods that read the dialog (GCNet)
        self.conversations = conversations
        self.n_runs, self.n_modalities = present.shape[0], present.shape[2]
        self.device = labels.device
        # the masks and splits on the host too: batches are assembled there and sent to the device whole (one copy
        # per batch, not one small operation per run on the device)
        self.host_present = self.present.cpu()
        self.host_splits = [{role: rows.cpu() for role, rows in split.items()} for split in splits]
        self._rows: dict[tuple[str, str], list[torch.Tensor]] = {}
        self.mean, self.std = [], []  # per modality [R, d]: statistics of each run's present training rows
        for m, x in enumerate(features):
            means, stds = [], []
            for r, split in enumerate(splits):
                rows = split["train"][present[r, split["train"], m]]
                ref = x[rows] if len(rows) > 1 else x[split["train"]]
                if standardize:
                    means.append(ref.mean(0))
                    stds.append(ref.std(0).clamp(min=1e-6))
                else:
                    means.append(torch.zeros(x.shape[1], device=x.device))
                    stds.append(torch.ones(x.shape[1], device=x.device))
            self.mean.append(torch.stack(means))
            self.std.append(torch.stack(stds))

    def with_observed(self, observed: torch.Tensor) -> RunGroup:
        """The same runs (features, splits, standardisation) under another real mask [R, N, M] (the test-time
        shift)."""
        other = copy.copy(self)
        other.observed = observed
        other.present = torch.ones_like(observed) if self.zero_fill else observed
        other.host_present, other._rows = other.present.cpu(), {}
        return other

    def present_at(self, idx: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """present [R, B, M] (what the method is told) of the rows idx [R, B] (False at padding)."""
        runs = torch.arange(self.n_runs, device=idx.device).unsqueeze(1)
        return self.present[runs, idx] & valid.unsqueeze(-1)

    def observed_at(self, idx: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The real mask [R, B, M] of the rows idx [R, B] (False at padding)."""
        runs = torch.arange(self.n_runs, device=idx.device).unsqueeze(1)
        return self.observed[runs, idx] & valid.unsqueeze(-1)

    def inputs(self, m: int, idx: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Standardised features of modality m at rows idx [R, B] -> [R, B, d]. Cells not present to the method
        and padding are 0; with zero_fill, masked cells are raw zeros before standardisation."""
        raw = self.features[m][idx]
        if self.zero_fill:
            raw = raw.masked_fill(~self.observed_at(idx, valid)[..., m : m + 1], 0.0)
        x = (raw - self.mean[m].unsqueeze(1)) / self.std[m].unsqueeze(1)
        return x.masked_fill(~self.present_at(idx, valid)[..., m : m + 1], 0.0)

    def complete_inputs(self, m: int, idx: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Standardised features of modality m at rows idx [R, B] -> [R, B, d], masked cells INCLUDED (padding 0).

        A privilege: only for the teachers that the missing-modality methods' reference code trains on complete
        training data (MMIN, IF-MMIN, TATE), each behind an option the report flags. Never for evaluation."""
        x = (self.features[m][idx] - self.mean[m].unsqueeze(1)) / self.std[m].unsqueeze(1)
        return x.masked_fill(~valid.unsqueeze(-1), 0.0)

    def rows(self, role: str, where: str = "any") -> list[torch.Tensor]:
        """Per run, the rows of a split (host tensors); `where="any"`: only those with a modality present."""
        if (role, where) not in self._rows:
            out = []
            for r, split in enumerate(self.host_splits):
                rows = split[role]
                out.append(rows[self.host_present[r, rows].any(dim=1)] if where == "any" else rows)
            self._rows[role, where] = out
        return self._rows[role, where]

    def padded(self, rows: list[torch.Tensor], size: int | None = None) -> Batch:
        """Stack per-run row lists of different lengths into idx [R, n] with a validity mask; n is `size` if
        given (training batches are always padded to the batch size, so that a run draws the same dropout
        masks whether it is stacked with others or alone), else the longest list. Assembled on the host."""
        n_max = size or max(1, max(len(r) for r in rows))
        idx = torch.zeros(self.n_runs, n_max, dtype=torch.long)
        valid = torch.zeros(self.n_runs, n_max, dtype=torch.bool)
        for r, run_rows in enumerate(rows):
            idx[r, : len(run_rows)] = run_rows.cpu()
            valid[r, : len(run_rows)] = True
        idx, valid = idx.to(self.device), valid.to(self.device)
        return Batch(idx, valid, self.labels[idx])

    def shuffled_batches(self, rows: list[torch.Tensor], batch_size: int) -> list[Batch]:
        """One epoch of shuffled mini-batches per run (each run shuffled by its own generator), aligned by
        position: batch j holds run r's j-th batch, or nothing for runs that have fewer batches."""
        per_run = [
            rows_r[torch.randperm(len(rows_r), generator=g).to(rows_r.device)].split(batch_size)
            for rows_r, g in zip(rows, self.generators)
        ]  # host tensors when `rows` are (RunGroup.rows): the batch is assembled there
        n_batches = max(len(b) for b in per_run)
        empty = rows[0][:0]
        return [
            self.padded([b[j] if j < len(b) else empty for b in per_run], batch_size)
            for j in range(n_batches)
        ]


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the True entries of mask, per run: logits [R, B, C] -> [R] (0 where none)."""
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
    count = mask.sum(dim=1)
    return (ce * mask).sum(dim=1) / count.clamp(min=1)


# ------------------------------------------------------------------------------------------ the interface


@dataclass
class Step:
    """One optimiser step of the training loop.

    loss: per-run loss [R] to backpropagate (None: the method has set the gradients itself);
    stepping: parameter -> runs [R] that update it at this step (the others keep their values and state);
    active: runs [R] that took the step, for the loss bookkeeping;
    phase: the epoch's loss is the sum over phases of each phase's mean step loss (DCCA has two);
    optimizer: a method's own optimiser for this step (CPM-Net), else the loop's;
    record: whether the step's loss counts in the epoch's loss;
    context: what the method's `after_backward` needs."""

    loss: torch.Tensor | None
    stepping: dict
    active: torch.Tensor
    phase: str = "train"
    optimizer: object | None = None
    record: bool = True
    context: dict = field(default_factory=dict)


@dataclass
class Phase:
    """Training before the main epochs (a teacher), run by the same loop: `epochs` epochs of `steps(data,
    batch_size, epoch)` with a fresh optimiser over `parameters` (the trainer's optimiser settings and lr
    schedule, its own state), then `finish(per-epoch losses)`."""

    name: str
    parameters: list
    epochs: int
    steps: Callable[[RunGroup, int, int], Iterator[Step]]
    finish: Callable[[list[torch.Tensor]], None]


@dataclass
class Predictions:
    """Outputs of `Method.predict` on padded rows [R, n].

    unimodal_logits: [R, M, n, C], each modality's own prediction (meaningful where it is present).
    fused_logits: [R, n, C], the method's multimodal prediction; zeros where no modality is present.
    """

    unimodal_logits: torch.Tensor
    fused_logits: torch.Tensor


class Method(nn.Module):
    """Interface of a training method over R stacked runs, driven by the one training loop
    (`mlaflow.train.loop.train_epoch`).

    A method says what is its own and nothing else:
    - `batch_step(data, batch, present, active) -> Step`: the per-run loss of one training mini-batch and which
      runs update which parameters. The default `training_steps` calls it on each shuffled mini-batch of the
      training rows; a method with another schedule of steps (MLA's alternation, DCCA's two phases, CPM-Net's
      full-batch steps with its own optimisers) overrides `training_steps` itself.
    - `after_backward(step)`: a hook between the backward pass and the optimiser step (MLA's head-gradient
      projection, OGM-GE's gradient modulation); `after_step(step)`: one after the optimiser step (MLA's
      projection of the step taken, `head_update: project_step`).
    - `pretraining(data, batch_size) -> [Phase]`: training that comes before the first epoch (a teacher), which
      the same loop runs with its own optimiser.
    - `predict`, `embeddings`, `fusion_variants`: evaluation.
    The loop owns epochs, the learning-rate schedule, zero_grad / backward / optimiser steps and the loss
    bookkeeping; `epochs_trained` counts the epochs it has run."""

    name = "base"
    # the tuning stage's search space of the method's own options (mlaflow/methods/space.py); the shared optimiser's
    # lr and weight decay are searched too unless the method trains with its own optimisers only
    search_space: ClassVar[dict] = {}
    uses_shared_optimizer: ClassVar[bool] = True
    # What the rest of the workflow knows of a method, read through the registry (methods.method_class).
    # Options (`method_params.<name>.<key>`) whose value names one of the corpus's modalities: checked
    # against the corpus where the method runs (`check_options`); default: the corpus kind's strongest one.
    modality_options: ClassVar[tuple[str, ...]] = ()
    # options giving a weight per modality name; default: the corpus kind's fixed weights (equal weights for a
    # kind without)
    modality_weight_options: ClassVar[tuple[str, ...]] = ()
    # trained end to end through one fusion layer: the methods whose weak modality the paper calls lazy (the
    # report's laziness comparison)
    joint_training: ClassVar[bool] = False
    # (who, how): how the report's Table 1 says the method's unimodal prediction is made (section 4.1.1), e.g.
    # ("MLA", "the shared head on one encoder"); None: not described
    unimodal_rule: ClassVar[tuple[str, str] | None] = None
    # trains with any encoder of `build_encoder` (train.encoder: resnet18, end to end): every encoder call goes
    # through `encode`; False: frozen features and its own networks only
    end_to_end: ClassVar[bool] = False
    # reads the conversation each utterance belongs to (GCNet): runs only on a corpus kind with conversations
    needs_conversations: ClassVar[bool] = False

    @classmethod
    def check_options(cls, options: dict, modalities: list[str], variants: list[dict] = ()) -> None:
        """Raise ParamsError where the method's options (`method_params.<name>`, validated by the schema) do
        not fit the corpus's modalities; run at parse time for every method that runs. `variants`: the
        method's overrides in other experiments (the fidelity variants)."""
        for key in cls.modality_options:
            if options[key] not in modalities:
                raise ParamsError(
                    f"method_params.{cls.name}.{key}",
                    f"{options[key]!r} is not a modality of the corpus",
                    f"use one of {modalities}",
                )

    @classmethod
    def privilege(cls, options: dict) -> str | None:
        """What the method sees under `options` that the others do not (a masked training cell), in the clause
        the report flags its rows with; None: nothing."""
        return None

    def __init__(
        self,
        input_dims: dict[str, int | tuple[int, ...]] | list[int | tuple[int, ...]],
        n_classes: int,
        train_cfg: dict,
        method_cfg: dict,
        generators: list[torch.Generator],
    ):
        """input_dims: each modality's feature width, or the shape of its prepared inputs (a store's
        `input_shape`, for `train.encoder: resnet18`), as {modality name: dim or shape} in the corpus's order (a
        method whose options name a modality needs the names), or as a list."""
        super().__init__()
        self.modalities = list(input_dims) if isinstance(input_dims, dict) else None
        dims = list(input_dims.values()) if isinstance(input_dims, dict) else list(input_dims)
        self.input_shapes = [tuple(d) if isinstance(d, (tuple, list)) else (int(d),) for d in dims]
        self.input_dims = [math.prod(shape) for shape in self.input_shapes]
        self.n_modalities = len(self.input_dims)
        self.n_runs = len(generators)
        self.n_classes = n_classes
        self.epochs_trained = 0
        if train_cfg.get("encoder", "mlp") != "mlp" and not self.end_to_end:
            from mlaflow.methods import METHODS, method_class  # the registry imports no method module itself

            end_to_end = [name for name in METHODS if method_class(name).end_to_end]
            raise ParamsError(
                "train.encoder",
                f"{train_cfg['encoder']}: {self.name} trains on frozen features only",
                f"use train.encoder: mlp for it (end to end: {', '.join(end_to_end)})",
            )
        self.encoders = nn.ModuleList(
            build_encoder(shape, train_cfg, generators) for shape in self.input_shapes
        )
        # the embedding width: train.hidden_dim (MLP encoders) or the ResNet's output (8 x train.resnet_width)
        self.hidden_dim = getattr(self.encoders[0], "output_dim", train_cfg["hidden_dim"])

    def encode(self, m: int, data: RunGroup, batch: Batch) -> torch.Tensor:
        """Encoder m's output [R, B, s] on the batch's rows. An encoder that reads `rows` (a ResNet) computes
        only the rows present to the method, so its batch statistics see no padding and no masked cell."""
        encoder = self.encoders[m]
        rows = data.present_at(batch.idx, batch.valid)[..., m] if encoder.uses_rows else None
        return encoder(data.inputs(m, batch.idx, batch.valid), rows)

    def modality_index(self, key: str, name: str) -> int:
        """The index of the modality an option (`method_params.<method>.<key>`) names."""
        if self.modalities is None:
            raise ParamsError(
                f"method_params.{self.name}.{key}",
                "names a modality, but the method was built without modality names",
                "build it with input_dims as {modality: dim}",
            )
        if name not in self.modalities:
            raise ParamsError(
                f"method_params.{self.name}.{key}",
                f"unknown modality {name!r}",
                f"use one of {self.modalities}",
            )
        return self.modalities.index(name)

    def weights_by_modality(self, key: str, weights: dict[str, float]) -> list[float] | None:
        """An option that gives a number per modality name (`method_params.<method>.<key>`), in modality order;
        names that are not the corpus's are not used; None when a modality of the corpus has no weight."""
        if self.modalities is None:
            raise ParamsError(
                f"method_params.{self.name}.{key}",
                "gives weights by modality name, but the method was built without modality names",
                "build it with input_dims as {modality: dim}",
            )
        if not set(self.modalities) <= set(weights):
            return None
        return [weights[m] for m in self.modalities]

    def training_steps(self, data: RunGroup, batch_size: int, epoch: int) -> Iterator[Step]:
        """One epoch's optimiser steps (default: one per shuffled mini-batch of the training rows). A step's
        forward pass runs when the loop asks for it, after the previous step's update."""
        for batch in data.shuffled_batches(data.rows("train"), batch_size):
            active = batch.valid.any(dim=1)  # [R]
            self.set_active_runs(active)
            yield self.batch_step(data, batch, data.present_at(batch.idx, batch.valid), active)

    def batch_step(self, data: RunGroup, batch: Batch, present: torch.Tensor, active: torch.Tensor) -> Step:
        """The step of one training mini-batch; present [R, B, M], active [R] (runs with a batch)."""
        raise NotImplementedError

    def after_backward(self, step: Step) -> None:
        """Hook between the backward pass and the optimiser step (nothing by default)."""

    def after_step(self, step: Step) -> None:
        """Hook after the optimiser step (nothing by default)."""

    def pretraining(self, data: RunGroup, batch_size: int) -> list[Phase]:
        """Phases trained before the first epoch (none by default)."""
        return []

    def set_active_runs(self, active: torch.Tensor) -> None:
        """Tell the dropout layers which runs take the coming step (only those draw random numbers). Without
        dropout nothing draws, and the mask is not read (on a GPU, reading it waits for the device)."""
        if not hasattr(self, "_dropouts"):  # the model's layers do not change once it is built
            self._dropouts = [m for m in self.modules() if isinstance(m, StackedDropout) and m.p > 0]
        dropouts = self._dropouts
        if dropouts:
            flags = active.tolist()
            for module in dropouts:
                module.active = flags

    @torch.no_grad()
    def predict(self, data: RunGroup, batch: Batch) -> Predictions:
        raise NotImplementedError

    @torch.no_grad()
    def embeddings(self, data: RunGroup, batch: Batch) -> torch.Tensor:
        """Each modality's encoder output [R, M, n, s]: the representations the modality gap is measured on."""
        return torch.stack([self.encode(m, data, batch) for m in range(self.n_modalities)], dim=1)

    def fusion_variants(self, predictions: Predictions, present: torch.Tensor) -> dict[str, torch.Tensor]:
        """Fused logits [R, n, C] under other test-time fusion rules of this method, by rule name (none here).
        The trainer records each rule's validation and test curves, so one training measures them all."""
        return {}


def fuse(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Eq. 6: y_hat = sum_m lambda_m f_m(x_m). logits [..., M, B, C], weights [..., M, B] -> [..., B, C].

    Terms with zero weight are dropped rather than multiplied, so a masked modality's output (whatever it is,
    even NaN) cannot reach the fused prediction."""
    weighted = (weights.unsqueeze(-1) * logits).masked_fill((weights == 0).unsqueeze(-1), 0.0)
    return weighted.sum(dim=-3)
