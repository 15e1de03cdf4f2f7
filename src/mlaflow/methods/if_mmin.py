"""IF-MMIN: Invariant-Feature Missing Modality Imagination Network (Zuo, Liu, Zhuo, et al., ICASSP 2023), a
missing-modality baseline of paper Table 2, following its reference code `ZhuoYulang/IF-MMIN`
(models/IFMMIN_model.py, utt_shared_model.py as the teacher, networks/shared.py, networks/autoencoder_2.py,
utils/functions.py's CMD) with GCNet's utterance-level adaptation of MMIN (fully connected encoders).
Shared parts in imputation.py (`TeacherStudent`, `Teacher`, `ResidualAE`, `cmd`).

- Teacher (a pretraining phase of the training loop, for `teacher_epochs` epochs, null: train.epochs, then
  frozen, its outputs on the training rows tabulated; see mmin.py):
  encoders, a shared encoder (Linear-LeakyReLU-Linear-LeakyReLU, s -> s, applied to every modality's
  embedding), a linear classifier on [embeddings, shared features] (2 * 384); loss = CE + the central moment
  discrepancy (K = 5 moments) between the shared features of every pair of modalities, averaged over pairs.
- Student: encoders and shared encoder initialised from the teacher's; the invariant features inv (the
  shared encoder on each zero-filled modality's embedding, concatenated, 384) condition the residual
  autoencoder (`n_blocks` blocks of [256, 128, 64]; x_out = h; per block x_in = x_out + inv, x_out =
  decoder(encoder(x_in)); reconstruction = transition(x_out)); linear classifier on the blocks' latents.
  loss = CE + reconstruction_weight (1) * MSE(teacher target, reconstruction) + invariant_weight (1) *
  MSE(teacher's invariant features of the complete input, student's invariant features of the masked input).
  No cycle loss.
- Teacher target: as MMIN's (the teacher's embedding of the "reverse" input). The "complete input" of the
  invariant loss is, with teacher_data complete, the complete training features.
- PRIVILEGE, option `teacher_data` (as in mmin.py): `complete` (default, the reference's) reads the masked
  training cells for the teacher, the reconstruction targets and the invariant targets; `observed` never
  does: the teacher trains on the fully observed training rows, the student on observed cells dropped on
  purpose (`drop_rate`), and the invariant target is the teacher's on the observed (pre-drop) input.
- The CMD is the reference's (norms of moment differences, no scaling by the feature range). `n_blocks`:
  the reference uses 5; lower by default for cost (option). Other simplifications: see imputation.py.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from mlaflow.methods.base import masked_cross_entropy
from mlaflow.methods.imputation import FastLinear, ResidualAE, TeacherStudent, masked_mse, mlp, per_slot
from mlaflow.methods.space import LogRange

AE_LAYERS = [256, 128, 64]


class IFMMIN(TeacherStudent):
    name = "if_mmin"
    search_space: ClassVar[dict] = {
        "reconstruction_weight": LogRange(0.1, 10.0),
        "invariant_weight": LogRange(0.1, 10.0),
    }
    shared_teacher = True

    def __init__(self, input_dims, n_classes, train_cfg, method_cfg, generators):
        options = method_cfg
        super().__init__(input_dims, n_classes, train_cfg, options, generators)
        self.reconstruction_weight = options["reconstruction_weight"]
        self.invariant_weight = options["invariant_weight"]
        s = self.hidden_dim
        self.shared = mlp([s, s, s], nn.LeakyReLU, generators, last=nn.LeakyReLU)
        self.autoencoder = ResidualAE(self.n_modalities * s, AE_LAYERS, options["n_blocks"], generators)
        self.head = FastLinear(AE_LAYERS[-1] * options["n_blocks"], n_classes, generators)

    def student(self, h):
        """(reconstruction [R, B, M*s], latents, invariant features [R, B, M, s]) of the encoder outputs h."""
        R, B, _ = h.shape
        inv = per_slot(self.shared, h.view(R, B, self.n_modalities, -1))
        recon, latent = self.autoencoder(h, inv.reshape(R, B, -1))
        return recon, latent, inv

    def logits_from_h(self, h):
        return self.head(self.student(h)[1])

    def batch_loss(self, data, batch, present, active):
        kept = self.kept_for_training(present, active)
        recon, latent, inv = self.student(self.network_on(data, batch, kept)[1])
        rows = present.any(-1)
        ce = masked_cross_entropy(self.head(latent), batch.labels, rows)
        target, counted, _ = self.teacher_targets(data, batch, present, kept)
        R, B, M, s = target.shape
        error = masked_mse(recon.view(R, B, M, s), target, counted)
        inv_target = self.teacher_embeddings(data, batch)[1].permute(0, 2, 1, 3)  # [R, B, M, s]
        invariant = masked_mse(inv.flatten(2), inv_target.flatten(2), rows)
        loss = ce + self.reconstruction_weight * error + self.invariant_weight * invariant
        return loss, dict.fromkeys(self.student_parameters(), active), error
