"""What the correlation-based missing-modality baselines share (cca.py, dcca.py, dccae.py), following GCNet's
baseline code (zeroQiaoba/GCNet, baseline-cca/{cca,dcca,dccae,util}.py).

- Mean imputation (GCNet's `padmeanV1`): a masked (sample, modality) cell is replaced by the mean of that
  modality's features over the samples where it is present. GCNet takes that mean over the train, validation
  AND test rows (transductive); mlaflow takes it over each run's present TRAINING rows only, on the
  standardised features (so it is ~0, but computed, not assumed). The masked cell itself is never read.
- `train_pca`: the input guard of DCCA / DCCAE (`input_components`; not in GCNet): per run and modality, the
  mean and top principal directions of the standardised features over the run's training rows where that
  modality is present. See dcca.py.
- Pairs: (audio, visual), (audio, text), (visual, text), in GCNet's order. The rows a pair is fitted on are the
  run's training rows with at least one modality present, the missing cells imputed (as GCNet: imputed rows
  are not dropped from the CCA fit).
- `linear_cca`: GCNet's closed-form regularised CCA (`CCA.fit`), batched over runs: covariances with 1/(N-1),
  Sigma_aa + r I, Sigma_aa^{-1/2} by eigendecomposition, T = Sigma_aa^{-1/2} Sigma_ab Sigma_bb^{-1/2}, its SVD,
  W_a = Sigma_aa^{-1/2} U_k, W_b = Sigma_bb^{-1/2} V_k; projections (x - mean) W. float64.
- `canonical_correlation`: GCNet's DCCA `pairloss` (Andrew et al. 2013), differentiable, per run over the
  rows of a batch: sum over the top k of sqrt(eig(T'T + r I)), with r added to both covariances too. The
  covariance root inverse is replaced by the Cholesky factor (T changes by orthogonal factors only, so its
  singular values, the canonical correlations, are the same), and the eigenvalues of T'T by the singular
  values of T (sqrt(s^2 + r)): the gradient of singular values alone is stable where the reference's
  eigenvector gradients blow up on near-equal eigenvalues. The reference's eps filter on small eigenvalues
  is not needed (every eigenvalue is >= r).
- `StackedBatchNorm` / `StackedMLP`: GCNet's `MLP` (Linear-BatchNorm-ReLU blocks, a last Linear) with batch
  statistics per run over that run's real rows only (padding and other runs never enter them), running
  statistics per run updated only in runs that take the step (momentum 0.1, unbiased variance, as torch's
  BatchNorm1d). The running statistics are parameters without gradient (the optimiser skips them) so that
  the trainer's best-epoch restore, which copies parameters, restores them with the weights.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from mlaflow.methods.base import Batch, Method, Predictions, RunGroup, StackedLinear


def pairs_of(n_modalities: int) -> list[tuple[int, int]]:
    """(A, V), (A, L), (V, L) for three modalities: GCNet's order."""
    return [(a, b) for a in range(n_modalities) for b in range(a + 1, n_modalities)]


@torch.no_grad()
def train_fill(data: RunGroup) -> list[torch.Tensor]:
    """Per modality [R, d]: mean of the standardised features over each run's present training rows (0 if none)."""
    rows = data.rows("train")
    batch = data.padded(rows)
    present = data.present_at(batch.idx, batch.valid)  # [R, n, M]
    out = []
    for m in range(data.n_modalities):
        x = data.inputs(m, batch.idx, batch.valid)  # masked cells are 0
        on = present[..., m : m + 1].float()
        out.append((x * on).sum(1) / on.sum(1).clamp(min=1))
    return out


@torch.no_grad()
def train_pca(data: RunGroup, widths: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per modality m (mean [R, d], projection [R, d, widths[m]]): PCA of the standardised features over each
    run's training rows where that modality is present (masked cells never enter; validation and test rows
    never do). The projection's columns are the top principal directions, sign-fixed (largest-magnitude entry
    positive) so that the fit is reproducible; a run with n <= widths[m] such rows has only n - 1
    directions (none if n < 2), the missing columns are zero. float64 fit, stored in the features' dtype."""
    batch = data.padded(data.rows("train"))
    present = data.present_at(batch.idx, batch.valid)  # [R, n, M]
    out = []
    for m, width in enumerate(widths):
        x = data.inputs(m, batch.idx, batch.valid)  # masked cells are 0 (and dropped below)
        R, _, d = x.shape
        mean = torch.zeros(R, d, dtype=torch.float64, device=x.device)
        projection = torch.zeros(R, d, width, dtype=torch.float64, device=x.device)
        for run in range(R):
            xr = x[run][present[run, :, m]].double()
            n = xr.shape[0]
            if n == 0:
                continue
            mean[run] = xr.mean(0)
            q = min(width, d, n - 1)
            if q < 1:
                continue
            _, _, vh = torch.linalg.svd(xr - mean[run], full_matrices=False)
            v = vh[:q].T  # [d, q]
            sign = torch.sign(v.gather(0, v.abs().argmax(0, keepdim=True)))
            projection[run, :, :q] = v * sign
        out.append((mean.to(x.dtype), projection.to(x.dtype)))
    return out


def imputed(data: RunGroup, m: int, batch: Batch, fill: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Standardised features of modality m [R, B, d], cells not present (present: [R, B, M]) replaced by the
    run's fill [R, d]. Masked cells are never read (data.inputs zero-fills them)."""
    x = data.inputs(m, batch.idx, batch.valid)
    return torch.where(present[..., m : m + 1], x, fill.unsqueeze(1).to(x.dtype))


def arrange_blocks(z: torch.Tensor, c: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Classifier input [R, B, M * s] from each modality's projection z [R, M, B, s] where it is present
    (present: [R, B, M]) and the projection of its imputed value c [R, M, 1, s] where it is not."""
    on = present.permute(0, 2, 1).unsqueeze(-1)  # [R, M, B, 1]
    return torch.where(on, z, c).permute(0, 2, 1, 3).flatten(2)


# ------------------------------------------------------------------------------------------ linear CCA


def _root_inverse(sigma: torch.Tensor) -> torch.Tensor:
    d, v = torch.linalg.eigh(sigma)
    return (v * d.clamp(min=1e-12).rsqrt().unsqueeze(-2)) @ v.transpose(-1, -2)


@torch.no_grad()
def linear_cca(
    xs: list[torch.Tensor], on: torch.Tensor, k: int, r: float, pairs: list[tuple[int, int]]
) -> tuple[list[torch.Tensor], dict[tuple[int, int], tuple], torch.Tensor]:
    """GCNet's `CCA.fit` for every pair, for every run.

    xs: per modality [R, n, d_m] (imputed); on: [R, n] rows to fit on. Returns the per-modality means [R, d_m],
    per pair (a, b) the projections (W_a [R, d_a, k], W_b [R, d_b, k]), and the canonical correlations
    [R, P, k] (singular values of T; zero-padded where k exceeds a pair's dimensions). One run at a time
    (memory), float64."""
    R = on.shape[0]
    means = [torch.zeros(R, x.shape[-1], dtype=torch.float64, device=x.device) for x in xs]
    weights = {p: ([], []) for p in pairs}
    corrs = []
    for run in range(R):
        rows = on[run]
        n = int(rows.sum())
        centred = []
        for m, x in enumerate(xs):
            xr = x[run][rows].double()
            mu = xr.mean(0) if n else torch.zeros(x.shape[-1], dtype=torch.float64, device=x.device)
            means[m][run] = mu
            centred.append(xr - mu)
        scale = 1.0 / max(n - 1, 1)
        eye = [torch.eye(c.shape[1], dtype=torch.float64, device=c.device) for c in centred]
        root_inv = [_root_inverse(scale * c.T @ c + r * e) for c, e in zip(centred, eye)]
        run_corr = []
        for a, b in pairs:
            t = root_inv[a] @ (scale * centred[a].T @ centred[b]) @ root_inv[b]
            u, s, vh = torch.linalg.svd(t, full_matrices=False)
            pad = k - min(k, len(s))  # fewer dimensions than components: zero columns
            weights[(a, b)][0].append(F.pad(root_inv[a] @ u[:, :k], (0, pad)))
            weights[(a, b)][1].append(F.pad(root_inv[b] @ vh[:k].T, (0, pad)))
            run_corr.append(F.pad(s[:k], (0, pad)))
        corrs.append(torch.stack(run_corr))
    out = {p: (torch.stack(wa), torch.stack(wb)) for p, (wa, wb) in weights.items()}
    return means, out, torch.stack(corrs)


# ----------------------------------------------------------------------------------- deep CCA objective


def canonical_correlation(
    h1: torch.Tensor, h2: torch.Tensor, on: torch.Tensor, k: int, r: float
) -> torch.Tensor:
    """Sum of the top-k canonical correlations of h1 [R, B, o1] and h2 [R, B, o2] over the rows on [R, B],
    per run -> [R] (GCNet's `pairloss`, negated). Computed in float64."""
    w = on.double().unsqueeze(-1)
    n = w.sum(1, keepdim=True)  # [R, 1, 1]
    h1, h2 = h1.double(), h2.double()
    c1 = (h1 - (h1 * w).sum(1, keepdim=True) / n.clamp(min=1)) * w
    c2 = (h2 - (h2 * w).sum(1, keepdim=True) / n.clamp(min=1)) * w
    scale = 1.0 / (n - 1).clamp(min=1)
    e1 = torch.eye(h1.shape[-1], dtype=torch.float64, device=h1.device)
    e2 = torch.eye(h2.shape[-1], dtype=torch.float64, device=h1.device)
    s11 = scale * c1.transpose(1, 2) @ c1 + r * e1
    s22 = scale * c2.transpose(1, 2) @ c2 + r * e2
    s12 = scale * c1.transpose(1, 2) @ c2
    l1, l2 = torch.linalg.cholesky(s11), torch.linalg.cholesky(s22)
    # T' = L1^-1 S12 L2^-T: same singular values as Sigma11^-1/2 Sigma12 Sigma22^-1/2
    t = torch.linalg.solve_triangular(l1, s12, upper=False)
    t = torch.linalg.solve_triangular(l2, t.transpose(1, 2), upper=False).transpose(1, 2)
    s = torch.linalg.svdvals(t)  # descending
    return torch.sqrt(s[:, :k] ** 2 + r).sum(-1).float()


# --------------------------------------------------------------------------------- stacked MLP with BN


class StackedBatchNorm(nn.Module):
    """BatchNorm1d for R stacked runs: x [R, B, c]; statistics per run over the rows set in `rows` [R, B]."""

    def __init__(self, channels: int, n_runs: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(n_runs, channels))
        self.bias = nn.Parameter(torch.zeros(n_runs, channels))
        self.running_mean = nn.Parameter(torch.zeros(n_runs, channels), requires_grad=False)
        self.running_var = nn.Parameter(torch.ones(n_runs, channels), requires_grad=False)
        self.rows: torch.Tensor | None = None  # [R, B]: the rows of the batch (set by the method)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            rows = (
                self.rows
                if self.rows is not None
                else torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
            )
            w = rows.to(x.dtype).unsqueeze(-1)
            n = w.sum(1)  # [R, 1]
            mean = (x * w).sum(1) / n.clamp(min=1)
            var = ((x - mean.unsqueeze(1)) ** 2 * w).sum(1) / n.clamp(min=1)  # biased, to normalise
            with torch.no_grad():
                stepping = n >= 2  # [R, 1]
                unbiased = var * n / (n - 1).clamp(min=1)
                m = self.momentum
                self.running_mean.copy_(
                    torch.where(stepping, (1 - m) * self.running_mean + m * mean, self.running_mean)
                )
                self.running_var.copy_(
                    torch.where(stepping, (1 - m) * self.running_var + m * unbiased, self.running_var)
                )
        else:
            mean, var = self.running_mean, self.running_var
        x = (x - mean.unsqueeze(1)) * torch.rsqrt(var.unsqueeze(1) + self.eps)
        return x * self.weight.unsqueeze(1) + self.bias.unsqueeze(1)


class StackedMLP(nn.Sequential):
    """GCNet's `MLP(chan)`: (Linear, BatchNorm, ReLU) for every hidden width, then a last Linear."""

    def __init__(self, widths: list[int], generators: list[torch.Generator]):
        layers = []
        for cin, cout in itertools.pairwise(widths[:-1]):  # the last layer is added below, without BN
            layers += [
                StackedLinear(cin, cout, generators),
                StackedBatchNorm(cout, len(generators)),
                nn.ReLU(),
            ]
        layers.append(StackedLinear(widths[-2], widths[-1], generators))
        super().__init__(*layers)

    def set_rows(self, rows: torch.Tensor | None) -> None:
        for layer in self:
            if isinstance(layer, StackedBatchNorm):
                layer.rows = rows


def observed_mse(reconstruction: torch.Tensor, x: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    """Mean squared error per run over the rows on [R, B] (observed cells only) -> [R] (0 where none)."""
    err = F.mse_loss(reconstruction, x, reduction="none").mean(-1)
    return (err * on).sum(1) / on.sum(1).clamp(min=1)


class ProjectionClassifier(Method):
    """What CCA and DCCA share after training: a linear classifier on the per-modality projections (masked cells
    take the projection of the training mean), unimodal predictions with every other modality imputed, and the
    projections as the modality-gap embeddings. Subclasses define `projections(data, batch)` -> (z [R, M, n, k'],
    c [R, M, 1, k']: the projection of the imputed value) and `self.classifier`."""

    @torch.no_grad()
    def predict(self, data: RunGroup, batch: Batch) -> Predictions:
        present = data.present_at(batch.idx, batch.valid)
        z, c = self.projections(data, batch)
        fused = self.classifier(arrange_blocks(z, c, present)).masked_fill(
            ~present.any(-1, keepdim=True), 0.0
        )
        unimodal = []
        for m in range(self.n_modalities):
            only_m = torch.zeros_like(present)
            only_m[..., m] = present[..., m]
            unimodal.append(self.classifier(arrange_blocks(z, c, only_m)))
        return Predictions(torch.stack(unimodal, 1), fused)

    @torch.no_grad()
    def embeddings(self, data: RunGroup, batch: Batch) -> torch.Tensor:
        """Each modality's own projections [R, M, n, k'] (the imputed value's where masked)."""
        z, c = self.projections(data, batch)
        on = data.present_at(batch.idx, batch.valid).permute(0, 2, 1).unsqueeze(-1)
        return torch.where(on, z, c)
