"""CPM-Net: Cross Partial Multi-view Networks (Zhang, Han, Fu, Zhou, Hu, Zhu; NeurIPS 2019 / TPAMI 2020),
following the reference code hanmenghan/CPM_Nets (util/model.py, util/classfiy.py) as GCNet runs it on
IEMOCAP (zeroQiaoba/GCNet baseline-cpmnet/: linear decoders `layer_size = [[d_m]]`, learning rates
[0.001, 0.01], run_cpmnetsub*.sh: lsd_dim 128, lamb 1, 30 training and 300 test epochs).

The model has no encoder: every training sample i has a free latent vector h_i (`lsd_dim`, 128), and one
linear decoder per view maps it to the view's (standardised) features, x_m ~ W_m h + b_m.
- Reconstruction loss on the OBSERVED views only: sum_m p_im ||x_im - W_m h_i - b_m||^2 (sum over
  dimensions, as the reference; averaged over samples instead of summed, which Adam does not see).
- Classification loss, parameter-free, on latent similarities (the reference's `classification_loss`):
  F_ic = mean over the run's other training samples j of class c of h_i . h_j; with theta_i = 1 if
  argmax_c F_ic != y_i, loss_i = relu(theta_i + max_c F_ic - F_iy_i). It is 0 when the true class has the
  largest mean similarity. Classes absent from a run's training rows are left out of the max.
- Training alternates, as the reference's `train`, 5 full-batch Adam steps of the decoders on the
  reconstruction loss (lr `net_lr`, 0.001) and 5 full-batch Adam steps of the training latents on
  reconstruction + `lamb` * classification (lr `latent_lr`, 0.01). One mlaflow epoch runs `inner_epochs`
  (2) such reference epochs, so train.epochs = 15 gives the reference's 30.
- Prediction (the reference's `classfiy.ave`): a sample's latent is fitted by reconstruction of its observed
  views alone, decoders frozen; its logits are the mean similarities to each class's training latents,
  h . mean_{j in class c} h_j (the class prototypes). Unimodal logits of modality m: the latent fitted from
  modality m alone (zero, hence logits 0, where m is absent). Fused logits are 0 where nothing is present.

Where mlaflow differs from the reference, and why:
- Own optimisers: CPM-Net's decoders and latents are trained by two Adam optimisers of their own, with the
  reference's learning rates (lr schedule of the shared optimiser not applied); the shared optimiser (and
  the unused shared encoders of `Method`) never step. Full-batch steps over each run's training rows: the
  trainer's batch size is not used.
- Test/validation latents: the reference runs 300 x 5 Adam steps (lr 0.001) from a random init on the test
  latents. mlaflow predicts on validation and test after EVERY epoch, so the fit must be cheap: it is
  `test_steps` (100) steps of full-batch gradient descent from zero with step size 1 / (2 lambda_max) of
  each sample's quadratic (the largest step that never overshoots), computed exactly in closed form in the
  eigenbasis of G = sum_m p_m W_m^T W_m (one eigendecomposition per run and presence pattern), so its cost
  does not depend on `test_steps`. Gradient descent from zero stops early along the weakly determined
  directions, as the reference's short Adam fit does; it is deterministic (no random init).
- Training uses the exact quadratic form of the linear-decoder loss (sufficient statistics H^T H and X^T H
  for the decoder steps, whose gradient 2 (A K - P) / n is written out; W^T W and X W for the latent steps),
  which gives the same loss and gradients as decoding every sample, at a fraction of the cost.
- The latents of the training rows are a [R, N, lsd] tensor (all corpus rows; only the run's training rows
  move), kept outside the module's parameters: the trainer's best-epoch checkpoint saves the decoders and the
  class prototypes (a frozen parameter [R, C, lsd], recomputed after every epoch), which is all that
  prediction needs.
- Decoders initialised as the reference (Xavier uniform weights, zero biases), per run from its generator;
  the training latents likewise (Xavier uniform over [n_train, lsd]), drawn on the first epoch.
- embeddings(): modality m's representation is the latent fitted from modality m alone (the same lsd for
  every modality; zero where m is absent). No privilege: nothing reads a masked cell.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from mlaflow.methods.base import Batch, Method, Predictions, RunGroup, Step
from mlaflow.methods.optim import StackedOptimizer
from mlaflow.methods.space import LogRange

REFERENCE_STEPS = 5  # network steps, then latent steps, per reference epoch (CPMNets.train's step=[5, 5])


def cpm_classification_loss(
    h: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, n_classes: int
) -> torch.Tensor:
    """The reference's classification loss per run: h [R, n, k], labels [R, n], valid [R, n] -> [R].

    Mean over the valid samples of relu(theta_i + max_c F_ic - F_iy_i), F_ic the mean dot product of h_i with
    the other valid samples of class c, theta_i = 1 if argmax_c F_ic != y_i."""
    onehot = nn.functional.one_hot(labels, n_classes).to(h.dtype) * valid.unsqueeze(-1)  # [R, n, C]
    sums = onehot.transpose(1, 2) @ h  # [R, C, k]
    counts = onehot.sum(dim=1)  # [R, C]
    self_sim = (h * h).sum(dim=-1, keepdim=True)  # [R, n, 1]
    sim = h @ sums.transpose(1, 2) - onehot * self_sim  # leave i out
    mean = sim / (counts.unsqueeze(1) - onehot).clamp(min=1)
    mean = torch.where(counts.unsqueeze(1) > 0, mean, torch.full_like(mean, -1e9))  # absent classes
    best, predicted = mean.max(dim=-1)
    true = mean.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    theta = (predicted != labels).to(h.dtype)
    loss = torch.relu(theta + best - true) * valid
    return loss.sum(dim=1) / valid.sum(dim=1).clamp(min=1)


def _xavier(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    bound = math.sqrt(6.0 / (shape[0] + shape[1]))
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


class CPMNet(Method):
    name = "cpm_net"
    # its own two Adam optimisers: their learning rates are searched instead of the shared optimiser's
    uses_shared_optimizer = False
    search_space: ClassVar[dict] = {
        "net_lr": LogRange(2e-4, 5e-3),
        "latent_lr": LogRange(2e-3, 5e-2),
        "lamb": LogRange(0.1, 10.0),
    }

    def __init__(self, input_dims, n_classes, train_cfg, method_cfg, generators):
        super().__init__(input_dims, n_classes, train_cfg, method_cfg, generators)
        options = method_cfg
        self.lsd = options["lsd_dim"]
        self.lamb, self.inner_epochs = options["lamb"], options["inner_epochs"]
        self.net_lr, self.latent_lr, self.test_steps = (
            options["net_lr"],
            options["latent_lr"],
            options["test_steps"],
        )
        self.generators = generators
        # decoder m: weight [R, d_m, lsd], bias [R, d_m] (x ~ W h + b)
        self.dec_weight = nn.ParameterList(
            nn.Parameter(torch.stack([_xavier((d, self.lsd), g) for g in generators]))
            for d in self.input_dims
        )
        self.dec_bias = nn.ParameterList(nn.Parameter(torch.zeros(self.n_runs, d)) for d in self.input_dims)
        self.prototypes = nn.Parameter(torch.zeros(self.n_runs, n_classes, self.lsd), requires_grad=False)
        self.latents: torch.Tensor | None = None  # [R, N, lsd], the training latents (see the docstring)
        self._net_opt: StackedOptimizer | None = None
        self._latent_opt: StackedOptimizer | None = None

    # ------------------------------------------------------------------------------------------ training

    def _start(self, data: RunGroup, rows: list[torch.Tensor]) -> None:
        n = len(data.labels)
        latents = torch.zeros(self.n_runs, n, self.lsd, device=data.device)
        for r, (run_rows, g) in enumerate(zip(rows, self.generators)):
            latents[r, run_rows] = _xavier((len(run_rows), self.lsd), g).to(data.device)
        self.latents = latents.requires_grad_(True)
        adam = {"optimizer": "adam", "momentum": 0.0, "weight_decay": 0.0}
        self._net_opt = StackedOptimizer(
            [*self.dec_weight, *self.dec_bias], {**adam, "lr": self.net_lr}, self.n_runs
        )
        self._latent_opt = StackedOptimizer([self.latents], {**adam, "lr": self.latent_lr}, self.n_runs)

    def training_steps(self, data: RunGroup, batch_size: int, epoch: int):
        """`inner_epochs` reference epochs of full-batch steps with CPM-Net's own optimisers: 5 decoder steps
        (gradient written out), then 5 latent steps; the epoch's loss is the mean of each reference epoch's last
        latent loss."""
        rows = data.rows("train")
        if self.latents is None:
            self._start(data, rows)
        batch = data.padded(rows)  # full batch [R, n]
        active = batch.valid.any(dim=1)
        count = batch.valid.sum(dim=1).clamp(min=1).to(self.latents.dtype)  # [R]
        present = data.present_at(batch.idx, batch.valid).to(self.latents.dtype)  # [R, n, M]
        xs = [data.inputs(m, batch.idx, batch.valid) for m in range(self.n_modalities)]
        runs = torch.arange(self.n_runs, device=data.device).unsqueeze(1)
        decoder_params = [*self.dec_weight, *self.dec_bias]
        net_steps = dict.fromkeys(decoder_params, active)
        latent_steps = {self.latents: active}
        for _ in range(self.inner_epochs):
            # --- decoders (latents fixed): loss_m = tr(A K A^T) - 2 tr(A^T P) + const, A = [W_m, b_m],
            #     K = sum_i p_im h~_i h~_i^T, P = sum_i p_im x_im h~_i^T, h~ = [h, 1]
            with torch.no_grad():
                h = self.latents[runs, batch.idx]
                h_aug = torch.cat([h, torch.ones_like(h[..., :1])], dim=-1)  # [R, n, k+1]
                stats = []
                for m, x in enumerate(xs):
                    ph = h_aug * present[..., m : m + 1]
                    stats.append((h_aug.transpose(1, 2) @ ph, x.transpose(1, 2) @ ph))
            for _ in range(REFERENCE_STEPS):  # the gradient 2 (A K - P) / n of that loss, written out
                with torch.no_grad():
                    for m, (K, P) in enumerate(stats):
                        # [R, d, k+1]
                        A = torch.cat([self.dec_weight[m], self.dec_bias[m].unsqueeze(-1)], dim=-1)
                        grad = 2 * (A @ K - P) / count.view(-1, 1, 1)
                        self.dec_weight[m].grad, self.dec_bias[m].grad = (
                            grad[..., :-1].contiguous(),
                            grad[..., -1].contiguous(),
                        )
                yield Step(None, net_steps, active, optimizer=self._net_opt, record=False)
            # --- latents (decoders fixed): recon_i = sum_m p_m (h^T G_m h - 2 c_m . h + e_m)
            with torch.no_grad():
                G = [w.transpose(1, 2) @ w for w in self.dec_weight]  # [R, k, k]
                centred = [
                    (x - b.unsqueeze(1)) * present[..., m : m + 1]
                    for m, (x, b) in enumerate(zip(xs, self.dec_bias))
                ]
                c = [z @ w for z, w in zip(centred, self.dec_weight)]  # [R, n, k]
                e = sum((z * z).sum(dim=(1, 2)) for z in centred)  # [R]
            for step in range(REFERENCE_STEPS):
                h = self.latents[runs, batch.idx]
                recon = e.clone()
                for m in range(self.n_modalities):
                    recon = (
                        recon
                        + (present[..., m] * ((h @ G[m]) * h).sum(-1)).sum(1)
                        - 2 * (c[m] * h).sum(dim=(1, 2))
                    )
                cls = cpm_classification_loss(h, batch.labels, batch.valid, self.n_classes)
                loss = recon / count + self.lamb * cls
                yield Step(
                    loss, latent_steps, active, optimizer=self._latent_opt, record=step == REFERENCE_STEPS - 1
                )
        self._update_prototypes(batch, runs)

    @torch.no_grad()
    def _update_prototypes(self, batch: Batch, runs: torch.Tensor) -> None:
        h = self.latents[runs, batch.idx]
        onehot = nn.functional.one_hot(batch.labels, self.n_classes).to(h.dtype) * batch.valid.unsqueeze(-1)
        self.prototypes.copy_(onehot.transpose(1, 2) @ h / onehot.sum(dim=1).clamp(min=1).unsqueeze(-1))

    # ---------------------------------------------------------------------------------------- prediction

    @torch.no_grad()
    def fit_latents(self, data: RunGroup, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents fitted by reconstruction alone (decoders frozen): fused [R, n, k] from every present view,
        unimodal [R, M, n, k] from view m alone (0 where m is absent). `test_steps` steps of gradient descent
        from zero with step 1 / (2 lambda_max), in closed form: h_t = U diag((1 - (1 - l / l_max)^t) / l) U^T c
        with G = U diag(l) U^T the sample's presence pattern's sum of W_m^T W_m, c = sum_m p_m W_m^T (x_m - b_m)."""
        present = data.present_at(batch.idx, batch.valid)  # [R, n, M]
        M = self.n_modalities
        # [R, M, n, k]
        c = torch.stack(
            [
                (
                    (data.inputs(m, batch.idx, batch.valid) - self.dec_bias[m].unsqueeze(1))
                    * present[..., m : m + 1]
                )
                @ self.dec_weight[m]
                for m in range(M)
            ],
            dim=1,
        )
        G = torch.stack([w.transpose(1, 2) @ w for w in self.dec_weight], dim=1).double()  # [R, M, k, k]
        patterns = list(range(1, 2**M))
        bits = torch.tensor(
            [[(p >> m) & 1 for m in range(M)] for p in patterns], dtype=G.dtype, device=G.device
        )
        G_pattern = torch.einsum("pm,rmij->rpij", bits, G)  # [R, P, k, k]
        lam, U = torch.linalg.eigh(G_pattern)
        lam = lam.clamp(min=0)
        lam_max = lam[..., -1:].clamp(min=1e-12)
        safe = torch.where(lam > 1e-12 * lam_max, lam, torch.ones_like(lam))
        # limit l -> 0: t / l_max
        gain = torch.where(
            lam > 1e-12 * lam_max,
            (1 - (1 - lam / lam_max) ** self.test_steps) / safe,
            self.test_steps / lam_max * torch.ones_like(lam),
        )
        filters = ((U * gain.unsqueeze(-2)) @ U.transpose(-1, -2)).to(c.dtype)  # [R, P, k, k]
        code = (present.long() * (2 ** torch.arange(M, device=present.device))).sum(-1)  # [R, n] pattern id
        fused = torch.zeros_like(c[:, 0])
        c_all = c.sum(dim=1)
        for i, p in enumerate(patterns):
            on = (code == p).unsqueeze(-1)
            fused = torch.where(on, c_all @ filters[:, i], fused)
        unimodal = torch.stack(
            [(c[:, m] @ filters[:, patterns.index(2**m)]) * present[..., m : m + 1] for m in range(M)], dim=1
        )
        return fused, unimodal

    @torch.no_grad()
    def predict(self, data: RunGroup, batch: Batch) -> Predictions:
        fused_h, unimodal_h = self.fit_latents(data, batch)
        proto = self.prototypes.transpose(1, 2)  # [R, k, C]
        fused = (fused_h @ proto).masked_fill(
            ~data.present_at(batch.idx, batch.valid).any(-1, keepdim=True), 0.0
        )
        return Predictions(unimodal_h @ proto.unsqueeze(1), fused)

    @torch.no_grad()
    def embeddings(self, data: RunGroup, batch: Batch) -> torch.Tensor:
        """Modality m's latent fitted from modality m alone [R, M, n, lsd] (0 where m is absent)."""
        return self.fit_latents(data, batch)[1]
