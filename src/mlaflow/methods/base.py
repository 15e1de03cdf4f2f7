"""What every method shares: the per-modality encoder of A.3.2 and the interface the trainer calls.

A method sees, per split, the features of every modality as a list of tensors `features[m]` [N, d_m] (masked
cells zero-filled) and the mask `present` [N, M] (bool). It never looks at a masked cell: methods select the
present rows of a modality before encoding, or give masked cells zero weight.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mlaflow.params import MODALITIES


class ModalityEncoder(nn.Sequential):
    """Three fully connected layers of width `hidden_dim` (A.3.2), as in GCNet's utterance-level baselines."""

    def __init__(self, input_dim: int, hidden_dim: int = 128, dropout: float = 0.0):
        super().__init__(
            nn.Linear(input_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
        )


@dataclass
class Predictions:
    """Outputs of `Method.predict` on one split.

    unimodal_logits: [M, N, C], each modality's prediction (meaningful where that modality is present).
    fused_logits: [N, C], the method's multimodal prediction; rows with no modality present are zeros and
        `has_any` is False there (the trainer predicts them from the training prior).
    """

    unimodal_logits: torch.Tensor
    fused_logits: torch.Tensor
    has_any: torch.Tensor


class Method(nn.Module):
    """Interface of a training method. Subclasses define `fit_epoch` and `predict`."""

    name = "base"

    def __init__(self, input_dims: list[int], n_classes: int, train_cfg: dict, method_cfg: dict):
        super().__init__()
        self.input_dims = list(input_dims)
        self.n_modalities = len(input_dims)
        self.n_classes = n_classes
        self.hidden_dim = train_cfg["hidden_dim"]
        self.encoders = nn.ModuleList(
            ModalityEncoder(d, train_cfg["hidden_dim"], train_cfg["dropout"]) for d in input_dims)

    def fit_epoch(self, features: list[torch.Tensor], present: torch.Tensor, labels: torch.Tensor,
                  optimizer: torch.optim.Optimizer, batch_size: int, generator: torch.Generator) -> dict:
        """Train for one epoch; return a dict of floats (e.g. mean loss) for the log."""
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, features: list[torch.Tensor], present: torch.Tensor) -> Predictions:
        raise NotImplementedError


def fuse(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Eq. 6: y_hat_r = sum_m lambda_{m,r} f_m(x_{m,r}). logits [M, B, C], weights [M, B] -> [B, C].

    Terms with zero weight are dropped rather than multiplied, so a masked modality's output (whatever it is,
    even NaN) cannot reach the fused prediction."""
    weighted = (weights.unsqueeze(-1) * logits).masked_fill((weights == 0).unsqueeze(-1), 0.0)
    return weighted.sum(dim=0)


def make_optimizer(parameters, train_cfg: dict) -> torch.optim.Optimizer:
    if train_cfg["optimizer"] == "sgd":
        return torch.optim.SGD(parameters, lr=train_cfg["lr"], momentum=train_cfg["momentum"],
                               weight_decay=train_cfg["weight_decay"], foreach=True)
    return torch.optim.Adam(parameters, lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"], foreach=True)


def batches(indices: torch.Tensor, batch_size: int, generator: torch.Generator):
    """Shuffled mini-batches of `indices` (the last one may be smaller)."""
    order = indices[torch.randperm(len(indices), generator=generator)]
    return order.split(batch_size)


def modality_names(n: int) -> tuple[str, ...]:
    return MODALITIES[:n]
