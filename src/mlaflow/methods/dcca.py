"""Deep CCA baseline of the missing-modality experiment (paper Table 2; Andrew, Arora, Bilmes, Livescu,
ICML 2013), following GCNet's baseline code (zeroQiaoba/GCNet, baseline-cca/dcca.py, util.py `padmeanV1`):
missing views mean-imputed, one MLP per modality [d, h, h, h, k] (Linear-BatchNorm-ReLU blocks, a last
Linear), trained to maximise the sum over the pairs (A, V), (A, L), (V, L) of the top-k canonical correlations
of their outputs (regulariser r = `regularization`, 1e-3 in the reference); a linear classifier on the three
concatenated k-d outputs. Shared pieces (imputation, the correlation objective, the per-run BatchNorm MLP) in
correlation.py; dccae.py extends this class.

Choices and differences from the reference:
- Imputation statistics from each run's present TRAINING rows only (GCNet: train + validation + test rows).
- Input guard (not in GCNet's reference, which feeds the raw features to the networks: a deviation):
  `input_components` (default 8; null: none, the inputs as they are) reduces each modality's standardised
  inputs by PCA before its network, [d, h, h, h, k] becoming [q, h, h, h, k], q = min(input_components, d).
  Why: at 512-1024 input dimensions with ~1,200 training rows the networks find spurious correlations between
  the modalities (directions of noise that correlate on the training rows alone: with d close to n any
  target is fitted) and the classifier on their outputs collapses to the majority class (~30% accuracy).
  The PCA (a mean and a projection [d, q] per run and modality, buffers with the run axis) is fitted once,
  where the imputation values are computed (the first epoch), on each run's TRAINING rows where that modality
  is present only (validation, test rows and masked cells never enter it: correlation.train_pca), and applied
  wherever the networks see an input: the imputed inputs of the DCCA phase, the present cells and the
  imputed value at evaluation (masked cells are imputed, or replaced by the imputed value's output, as
  without the guard). A run with fewer than q + 1 present training rows of a modality gets zero columns for
  the directions it lacks (the simpler choice: no error, the networks see constant zeros there).
- Every epoch has two phases, both with the shared optimiser (train.optimizer, lr, momentum, weight decay):
  (1) the DCCA loss (minus the summed correlations; DCCAE adds its reconstruction term) on shuffled batches
  of `corr_batch_size` training rows (rows with at least one modality present, missing cells imputed), the
  networks only; (2) the classifier, on train.batch_size mini-batches of the networks' outputs in eval mode
  (BatchNorm running statistics) and without gradient, cross-entropy, the classifier only. This is GCNet's
  pipeline (train DCCA, then extract eval-mode features and fit the classifier on them) interleaved per epoch
  so that the trainer can select the epoch; the classifier never changes the networks.
  GCNet trains 100 epochs with Adam (lr 1e-3, weight decay 5e-4, batch 1024); mlaflow uses train.epochs of
  the shared optimiser. `corr_batch_size` default 256: the covariances are only k x k, and with ~1200 training
  rows GCNet's 1024 would give two steps per epoch (its batch of 1024 on ~4000 rows gives four).
- GCNet's linear SVM (C = 0.01) is replaced by a linear softmax classifier (StackedLinear on the 3k outputs).
- The reference network for text reuses the visual network (`z3 = self.model2(x3)`, a bug): here every
  modality has its own network.
- `components` (k) default 10 (GCNet sweeps 2..20 and keeps its best on the test session), `hidden_dim` (h)
  default 128 (GCNet: 256 for DCCA, 1024 for DCCAE) to keep the cost near the other baselines' (one CPU
  thread, 15 stacked runs); both are options.
- The correlation is computed with Cholesky whitening and singular values (same value as the reference's
  eigendecomposition of T'T + r I; stabler gradient): see correlation.canonical_correlation. A run's DCCA step
  needs at least two rows in its batch (else it takes no step).
- BatchNorm statistics are per run (StackedBatchNorm), so stacked runs equal runs one at a time.
- Unimodal logits of modality m: the classifier with every other modality imputed (the network's output for
  the imputed value). Fused logits are zero for samples with no modality present.
- embeddings(): each modality's network output (k-d, eval mode); the output for the imputed value where masked.
- The shared per-modality encoders of `Method` are not used (removed).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from mlaflow.methods.base import Batch, RunGroup, StackedLinear, Step, masked_cross_entropy
from mlaflow.methods.correlation import (
    ProjectionClassifier,
    StackedMLP,
    arrange_blocks,
    canonical_correlation,
    imputed,
    pairs_of,
    train_fill,
    train_pca,
)
from mlaflow.methods.space import Choice, IntRange, LogRange


class DCCA(ProjectionClassifier):
    name = "dcca"
    # the PCA width is searched: how much of each modality the correlation may use (see the guard above)
    search_space: ClassVar[dict] = {
        "input_components": Choice((4, 8, 16, 32, 64)),
        "components": IntRange(2, 20),
        "regularization": LogRange(1e-4, 1e-1),
    }

    def __init__(self, input_dims, n_classes, train_cfg, method_cfg, generators):
        super().__init__(input_dims, n_classes, train_cfg, method_cfg, generators)
        opts = method_cfg
        self.k, self.h, self.r = (
            int(opts["components"]),
            int(opts["hidden_dim"]),
            float(opts["regularization"]),
        )
        self.corr_batch_size = int(opts["corr_batch_size"])
        self.encoders = nn.ModuleList()  # not used: the DCCA networks replace them
        self.pairs = pairs_of(self.n_modalities)
        # null: no PCA guard; absent (options built by hand; validated params carry the default 8) likewise
        q = opts.get("input_components")
        self.input_components = None if q is None else int(q)
        # each network's input width: q = min(input_components, d) with the guard (known before the fit)
        self.net_dims = [d if q is None else min(self.input_components, d) for d in self.input_dims]
        self.nets = nn.ModuleList(
            StackedMLP([d, self.h, self.h, self.h, self.k], generators) for d in self.net_dims
        )
        self.build_extra(opts, generators)
        self.classifier = StackedLinear(self.n_modalities * self.k, n_classes, generators)
        for m, d in enumerate(self.input_dims):
            self.register_buffer(f"fill_{m}", torch.zeros(self.n_runs, d))  # imputation value (train rows)
            if self.input_components is not None:  # the PCA guard (train rows), fitted with the fill
                self.register_buffer(f"pca_mean_{m}", torch.zeros(self.n_runs, d))
                self.register_buffer(f"pca_projection_{m}", torch.zeros(self.n_runs, d, self.net_dims[m]))
        self.filled = False
        self.last_correlation: torch.Tensor | None = None  # [R] mean summed correlations of the last epoch

    def build_extra(self, opts: dict, generators: list[torch.Generator]) -> None:
        """Extra modules of a subclass (DCCAE's decoders)."""

    def extra_loss(
        self, xs: list[torch.Tensor], hs: list[torch.Tensor], present: torch.Tensor
    ) -> torch.Tensor:
        """Extra term [R] of the DCCA-phase loss (DCCAE's reconstruction); xs: the networks' inputs (imputed,
        then PCA-reduced with the guard), hs: their outputs."""
        return torch.zeros(present.shape[0], device=present.device)

    def representation_modules(self) -> list[nn.Module]:
        return list(self.nets)

    def fill(self, m: int) -> torch.Tensor:
        return getattr(self, f"fill_{m}")

    def reduced(self, m: int, x: torch.Tensor) -> torch.Tensor:
        """What modality m's network sees of its standardised inputs x [R, B, d]: their PCA projection
        [R, B, q] with the guard, x itself without. x must hold no masked cell's value (imputed, or zeros)."""
        if self.input_components is None:
            return x
        mean, projection = self.pca(m)
        return (x - mean.unsqueeze(1)) @ projection

    def pca(self, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Modality m's PCA guard: mean [R, d] and projection [R, d, q] (zeros until the first epoch)."""
        return getattr(self, f"pca_mean_{m}"), getattr(self, f"pca_projection_{m}")

    def set_rows(self, rows: torch.Tensor | None) -> None:
        for module in self.representation_modules():
            module.set_rows(rows)

    def training_steps(self, data: RunGroup, batch_size: int, epoch: int):
        """Two phases per epoch: (1) the DCCA objective, networks only; (2) the classifier on the networks'
        eval-mode outputs, without gradient to them."""
        if not self.filled:
            for m, f in enumerate(train_fill(data)):
                self.fill(m).copy_(f)
            if self.input_components is not None:
                for m, fitted in enumerate(train_pca(data, self.net_dims)):
                    for buffer, value in zip(self.pca(m), fitted):
                        buffer.copy_(value)
            self.filled = True
        R = self.n_runs
        rows = data.rows("train")
        corr_sum, dcca_steps = torch.zeros(R), torch.zeros(R)
        for batch in data.shuffled_batches(rows, self.corr_batch_size):
            active = batch.valid.sum(dim=1) >= 2  # a correlation needs two rows
            if not bool(active.any()):
                continue
            present = data.present_at(batch.idx, batch.valid)
            self.set_rows(batch.valid)
            xs = [
                self.reduced(m, imputed(data, m, batch, self.fill(m), present))
                for m in range(self.n_modalities)
            ]
            hs = [net(x) for net, x in zip(self.nets, xs)]
            corr = sum(
                canonical_correlation(hs[a], hs[b], batch.valid, self.k, self.r) for a, b in self.pairs
            )
            loss = -corr + self.extra_loss(xs, hs, present)
            stepping = {p: active for module in self.representation_modules() for p in module.parameters()}
            yield Step(loss * active, stepping, active, phase="correlation")
            corr_sum += (corr.detach() * active).cpu()
            dcca_steps += active.cpu()
        self.set_rows(None)
        self.last_correlation = corr_sum / dcca_steps.clamp(min=1)
        for module in self.representation_modules():
            module.eval()
        for batch in data.shuffled_batches(rows, batch_size):
            active = batch.valid.any(dim=1)
            present = data.present_at(batch.idx, batch.valid)
            with torch.no_grad():
                z, c = self.projections(data, batch)
            logits = self.classifier(arrange_blocks(z, c, present))
            loss = masked_cross_entropy(logits, batch.labels, present.any(dim=-1))
            yield Step(loss, dict.fromkeys(self.classifier.parameters(), active), active, phase="classifier")
        for module in self.representation_modules():
            module.train(self.training)

    @torch.no_grad()
    def projections(self, data: RunGroup, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per modality the network's output z [R, M, B, k] (masked cells: the output for zeros, meaningless,
        replaced by c) and its output for the imputed value c [R, M, 1, k], both through the PCA guard if on.
        Call in eval mode."""
        z = torch.stack(
            [net(self.reduced(m, data.inputs(m, batch.idx, batch.valid))) for m, net in enumerate(self.nets)],
            1,
        )
        c = torch.stack(
            [net(self.reduced(m, self.fill(m).unsqueeze(1))) for m, net in enumerate(self.nets)], 1
        )
        return z, c
