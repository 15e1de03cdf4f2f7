"""MMIN: Missing Modality Imagination Network (Zhao, Li, Jin, ACL 2021), the missing-modality baseline of
paper Table 2 as GCNet's baseline code adapts it to utterance-level features (`zeroQiaoba/GCNet`,
baseline-mmin/models/mmin_model.py with utt_fusion_model.py as the teacher and networks/autoencoder.py's
`ResidualAE`). Shared parts in imputation.py (`TeacherStudent`, `Teacher`, `ResidualAE`).

- Teacher: an early-fusion classifier (encoders, concatenation, linear classifier) trained before the first
  epoch, as a pretraining phase of the training loop, for `teacher_epochs` epochs (null: train.epochs, as the
  reference, which trains the teacher as a model of its own) with the trainer's optimiser settings and lr schedule (its own optimiser state),
  then frozen; its embeddings of the training rows are then computed once and looked up by the student.
  The teacher costs about as much as a late-fusion training; a smaller `teacher_epochs` trades its
  convergence for time (see imputation.py for the figures).
- Student: encoders initialised from the teacher's; zero-filled inputs -> encoders -> concatenation h (384)
  -> residual autoencoder of `n_blocks` blocks of layers [256, 128, 64] (x_in += x_out per block, the
  reference's transition layer on the output) -> reconstruction (384); linear classifier on the blocks'
  concatenated latents (64 * n_blocks). A backward residual AE of the same shape maps the reconstruction
  back to h (cycle). loss = CE + reconstruction_weight (4) * MSE(teacher target, reconstruction)
  + cycle_weight (2) * MSE(h detached, backward(reconstruction)).
- Teacher target (the reference's T_embds): the teacher's embedding of the "reverse" input, i.e. of the
  missing modalities' features with the present ones zero-filled, so a present modality's slot has target
  teacher_encoder(0) and a missing one's teacher_encoder(its features).
- PRIVILEGE, option `teacher_data`: `complete` (default, GCNet's and MMIN's): the teacher trains on complete
  training data (`RunGroup.complete_inputs`: the masked training cells are read) and the missing training
  cells' targets are the teacher's embeddings of their true features; the report must flag the row.
  `observed` removes the privilege: the teacher trains on the training rows with every modality observed
  (all training rows, zero-filled, in a run that has none), and the student learns on observed cells
  dropped on purpose (`drop_rate`, see imputation.py), whose targets are known; truly missing cells enter
  no reconstruction loss. `drop_rate` is used with `observed` only.
- `n_blocks`: the reference uses 5; the default here is 1 to limit the cost (each block adds about a third
  of a late fusion's cost; figures in imputation.py); it is an option. Other simplifications: see
  imputation.py.
"""

from __future__ import annotations

from typing import ClassVar

from mlaflow.methods.base import masked_cross_entropy
from mlaflow.methods.imputation import FastLinear, ResidualAE, TeacherStudent, masked_mse
from mlaflow.methods.space import LogRange

AE_LAYERS = [256, 128, 64]


class MMIN(TeacherStudent):
    name = "mmin"
    search_space: ClassVar[dict] = {
        "reconstruction_weight": LogRange(0.2, 20.0),
        "cycle_weight": LogRange(0.1, 10.0),
    }

    def __init__(self, input_dims, n_classes, train_cfg, method_cfg, generators):
        options = method_cfg
        super().__init__(input_dims, n_classes, train_cfg, options, generators)
        self.reconstruction_weight, self.cycle_weight = (
            options["reconstruction_weight"],
            options["cycle_weight"],
        )
        width = self.n_modalities * self.hidden_dim
        self.autoencoder = ResidualAE(width, AE_LAYERS, options["n_blocks"], generators)
        self.cycle = ResidualAE(width, AE_LAYERS, options["n_blocks"], generators)
        self.head = FastLinear(AE_LAYERS[-1] * options["n_blocks"], n_classes, generators)

    def logits_from_h(self, h):
        return self.head(self.autoencoder(h)[1])

    def batch_loss(self, data, batch, present, active):
        kept = self.kept_for_training(present, active)
        _, h = self.network_on(data, batch, kept)
        recon, latent = self.autoencoder(h)
        rows = present.any(-1)
        ce = masked_cross_entropy(self.head(latent), batch.labels, rows)
        target, counted, _ = self.teacher_targets(data, batch, present, kept)
        R, B, M, s = target.shape
        error = masked_mse(recon.view(R, B, M, s), target, counted)
        cycle = masked_mse(self.cycle(recon)[0], h.detach(), rows)
        loss = ce + self.reconstruction_weight * error + self.cycle_weight * cycle
        return loss, dict.fromkeys(self.student_parameters(), active), error
