"""What the joint-fusion baselines of appendix A.2 share (sum, concat, FiLM, BiGated, OGM-GE): the modality
encoders feed one fusion layer, trained end to end on the cross-entropy of the fused prediction.

- Embeddings: h_m [R, B, s] is encoder m's output. A masked (sample, modality) cell gets h_m = 0, set after
  the encoder with masked_fill: neither the cell's features nor the encoder's biases reach the fusion layer,
  and no gradient flows back through the cell. The fusion layer then runs unchanged on the zero-filled
  embeddings (sum leaves the masked term out altogether, see sum_fusion.py).
- Training: one loss per step, the fused cross-entropy over the batch's samples with a modality present.
  Encoder m takes an optimiser step only in the runs whose batch has m present somewhere (otherwise its
  gradient is zero, and no step means no momentum drift and no weight decay, as in late fusion); the fusion
  layers step in every run that has a batch. Subclasses may change the encoder gradients before the step
  (`modify_gradients`, used by OGM-GE).
- Unimodal evaluation (section 4.1.1, "deactivate" the other modalities): modality m's prediction is the
  network's fused output with every other modality treated as missing. Sum and concat override this with
  the protocol 4.1.1 gives them (`unimodal`).
- Predictions: fused logits are zero for samples with no modality present (the trainer predicts its prior).
"""

from __future__ import annotations

import torch

from mlaflow.methods.base import Batch, Method, Predictions, RunGroup, Step, masked_cross_entropy


class JointFusion(Method):
    """Base of the joint-fusion methods. Subclasses define `fuse` (and may override `unimodal`,
    `modify_gradients`)."""

    joint_training = True
    end_to_end = True
    unimodal_rule = ("fusion methods", "with the other modalities deactivated")

    def embed(self, data: RunGroup, batch: Batch, present: torch.Tensor) -> torch.Tensor:
        """Encoder outputs h [R, M, B, s], zero where the modality is masked (present: [R, B, M])."""
        h = torch.stack([self.encode(m, data, batch) for m in range(self.n_modalities)], dim=1)
        return h.masked_fill(~present.permute(0, 2, 1).unsqueeze(-1), 0.0)

    def fuse(self, h: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Fused logits [R, B, C] from zero-filled embeddings h [R, M, B, s] and present [R, B, M]."""
        raise NotImplementedError

    def unimodal(self, h: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Per-modality logits [R, M, B, C]: the fused network with every other modality deactivated."""
        out = []
        for m in range(self.n_modalities):
            only_m = torch.zeros_like(present)
            only_m[..., m] = present[..., m]
            out.append(self.fuse(h.masked_fill(~only_m.permute(0, 2, 1).unsqueeze(-1), 0.0), only_m))
        return torch.stack(out, dim=1)

    def modify_gradients(
        self, h: torch.Tensor, present: torch.Tensor, labels: torch.Tensor, encoder_steps: torch.Tensor
    ) -> None:
        """Hook between backward and the optimiser step; encoder_steps [R, M]: runs where encoder m steps."""

    def fusion_parameters(self) -> list[torch.nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("encoders.")]

    def batch_step(self, data: RunGroup, batch: Batch, present: torch.Tensor, active: torch.Tensor) -> Step:
        h = self.embed(data, batch, present)
        loss = masked_cross_entropy(self.fuse(h, present), batch.labels, present.any(dim=-1))
        encoder_steps = present.any(dim=1)  # [R, M]
        stepping = dict.fromkeys(self.fusion_parameters(), active)
        for m, encoder in enumerate(self.encoders):
            stepping.update(dict.fromkeys(encoder.parameters(), encoder_steps[:, m]))
        return Step(
            loss,
            stepping,
            active,
            context={
                "h": h.detach(),
                "present": present,
                "labels": batch.labels,
                "encoder_steps": encoder_steps,
            },
        )

    def after_backward(self, step: Step) -> None:
        c = step.context
        self.modify_gradients(c["h"], c["present"], c["labels"], c["encoder_steps"])

    @torch.no_grad()
    def predict(self, data: RunGroup, batch: Batch) -> Predictions:
        present = data.present_at(batch.idx, batch.valid)
        h = self.embed(data, batch, present)
        fused = self.fuse(h, present).masked_fill(~present.any(dim=-1, keepdim=True), 0.0)
        return Predictions(self.unimodal(h, present), fused)
