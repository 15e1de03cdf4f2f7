"""Classification metrics of the emotion-recognition literature, from a confusion matrix.

accuracy (WA, weighted accuracy: overall accuracy, Table 2's figure), unweighted_accuracy (UA: mean recall over
classes), macro_f1 and weighted_f1 (F1 averaged over classes, unweighted and by class support).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, n_classes: int) -> torch.Tensor:
    """[C, C] counts, rows true class, columns predicted class."""
    return torch.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def classification_metrics(y_true: torch.Tensor, y_pred: torch.Tensor, n_classes: int) -> dict[str, float]:
    if len(y_true) == 0:
        return {
            "accuracy": float("nan"),
            "unweighted_accuracy": float("nan"),
            "macro_f1": float("nan"),
            "weighted_f1": float("nan"),
        }
    cm = confusion_matrix(y_true, y_pred, n_classes).double()
    support, predicted, correct = cm.sum(1), cm.sum(0), cm.diag()
    has_support = support > 0
    recall = correct / support.clamp(min=1)
    precision = correct / predicted.clamp(min=1)
    f1 = torch.where(
        precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(recall)
    )
    return {
        "accuracy": float(correct.sum() / support.sum()),
        "unweighted_accuracy": float(recall[has_support].mean()),
        "macro_f1": float(f1[has_support].mean()),
        "weighted_f1": float((f1 * support).sum() / support.sum()),
    }


def modality_gap(h_a: torch.Tensor, h_b: torch.Tensor) -> float:
    """Liang et al. 2022 ("Mind the gap"): the distance between the centroids of the L2-normalised embeddings
    of two modalities, h_a and h_b [n, s] of the same n samples."""
    return float(
        torch.linalg.vector_norm(F.normalize(h_a, dim=-1).mean(0) - F.normalize(h_b, dim=-1).mean(0))
    )


def projection_2d(embeddings: list[torch.Tensor], n_points: int) -> list[list[list[float]]]:
    """The first n_points L2-normalised embeddings of each modality projected on the two principal axes of
    all of them together (for the modality-gap figure). embeddings: per modality [n, s]."""
    normed = [F.normalize(h[:n_points], dim=-1) for h in embeddings]
    stacked = torch.cat(normed)
    centre = stacked.mean(0)
    _, _, v = torch.linalg.svd(stacked - centre, full_matrices=False)
    return [((h - centre) @ v[:2].T).round(decimals=4).tolist() for h in normed]
