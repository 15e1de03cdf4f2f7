"""Training and evaluation of one run (method x missing rate x seed x fold), and of a group of runs in one
process (one Snakemake job covers all seeds and folds of a method and missing rate).

Model selection is on the validation split only: after every epoch the fused validation accuracy is measured
and the best epoch's weights are evaluated once on the test split.
"""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import numpy as np
import torch

from mlaflow.data.folds import fold_indices
from mlaflow.data.masks import read_mask
from mlaflow.devices import resolve_device
from mlaflow.io import write_json
from mlaflow.methods import build_method
from mlaflow.methods.base import Method, make_optimizer
from mlaflow.params import MODALITIES, RUN_SECTIONS, params_hash
from mlaflow.provenance import git_commit
from mlaflow.train.data import Corpus
from mlaflow.train.metrics import classification_metrics

log = logging.getLogger(__name__)


def standardize(features: list[torch.Tensor], present: torch.Tensor, train_idx: torch.Tensor) -> list[torch.Tensor]:
    """Z-score each modality with the mean and std of its present training rows; masked cells become 0."""
    out = []
    for m, x in enumerate(features):
        rows = train_idx[present[train_idx, m]]
        ref = x[rows] if len(rows) > 1 else x[train_idx]
        mean, std = ref.mean(dim=0), ref.std(dim=0).clamp(min=1e-6)
        out.append(((x - mean) / std) * present[:, m : m + 1])
    return out


def evaluate(method: Method, features: list[torch.Tensor], present: torch.Tensor, labels: torch.Tensor,
             prior_class: int, n_classes: int) -> dict:
    """Fused and per-modality metrics of `method` on one split.

    Samples with no modality present are predicted as `prior_class` (the training split's majority class) and
    count in the fused metrics. Per-modality accuracy is measured on the samples where that modality is present.
    """
    method.eval()
    pred = method.predict(features, present)
    fused = pred.fused_logits.argmax(dim=1)
    fused = torch.where(pred.has_any, fused, torch.full_like(fused, prior_class))
    result = classification_metrics(labels, fused, n_classes)
    result["per_modality_accuracy"] = {
        m: classification_metrics(labels[present[:, i]], pred.unimodal_logits[i][present[:, i]].argmax(1),
                                  n_classes)["accuracy"]
        for i, m in enumerate(MODALITIES[: present.shape[1]])
    }
    result["n"] = int(len(labels))
    result["share_all_missing"] = float((~pred.has_any).float().mean()) if len(labels) else 0.0
    return result


def train_run(method_name: str, corpus: Corpus, present_all: np.ndarray, split: dict[str, np.ndarray],
              params: dict, seed: int) -> dict:
    """Train one run; return its metrics record (without provenance)."""
    train_cfg = params["train"]
    device = resolve_device(train_cfg["device"], "train.device")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)

    present = torch.from_numpy(present_all)
    idx = {role: torch.from_numpy(rows) for role, rows in split.items()}
    features = corpus.features
    if train_cfg["standardize"]:
        features = standardize(features, present, idx["train"])
    else:
        features = [x * present[:, m : m + 1] for m, x in enumerate(features)]

    def take(role):
        rows = idx[role]
        return [x[rows].to(device) for x in features], present[rows].to(device), corpus.labels[rows].to(device)

    train, val, test = take("train"), take("val"), take("test")
    n_classes = len(corpus.class_names)
    train_labels_seen = train[2][train[1].any(dim=1)]
    prior_class = int(torch.bincount(train_labels_seen, minlength=n_classes).argmax())

    method = build_method(method_name, corpus.input_dims, n_classes, params).to(device)
    optimizer = make_optimizer(method.parameters(), train_cfg)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, train_cfg["lr_step_epochs"], train_cfg["lr_gamma"])

    best_acc, best_epoch, best_state, curve, losses = -1.0, -1, None, [], []
    started = time.perf_counter()
    for epoch in range(train_cfg["epochs"]):
        method.train()
        losses.append(method.fit_epoch(*train, optimizer, train_cfg["batch_size"], generator)["loss"])
        scheduler.step()
        val_acc = evaluate(method, *val, prior_class, n_classes)["accuracy"]
        curve.append(val_acc)
        if val_acc > best_acc:
            best_acc, best_epoch, best_state = val_acc, epoch, copy.deepcopy(method.state_dict())
    train_seconds = time.perf_counter() - started

    method.load_state_dict(best_state)
    test_metrics = evaluate(method, *test, prior_class, n_classes)
    return {
        "metrics": test_metrics,
        "validation": {"accuracy": best_acc, "best_epoch": best_epoch, "accuracy_curve": curve},
        "train_loss_curve": losses,
        "n_train": int(len(idx["train"])), "n_val": int(len(idx["val"])), "n_test": int(len(idx["test"])),
        "prior_class": corpus.class_names[prior_class],
        "device": str(device),
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / train_cfg["epochs"],
    }


def train_group(method_name: str, missing_rate: float, corpus: Corpus, folds_table, masks_path: str | Path,
                outputs: dict[tuple[int, int], str | Path], params: dict) -> None:
    """Train every (seed, fold) run of one method and missing rate; write one metrics JSON per run."""
    torch.set_num_threads(params["train"]["threads"])
    run_hash = params_hash(params, RUN_SECTIONS)
    commit = git_commit()
    for (seed, fold), out_path in sorted(outputs.items()):
        present = read_mask(masks_path, seed, corpus.utterance_ids)
        record = train_run(method_name, corpus, present, fold_indices(folds_table, fold), params,
                           seed=seed * 1000 + fold)
        record.update(method=method_name, missing_rate=missing_rate, seed=seed, fold=fold,
                      mask_protocol=params["masks"]["protocol"], all_missing=params["masks"]["all_missing"],
                      method_params=params["method_params"].get(method_name, {}),
                      params_hash=run_hash, git_commit=commit,
                      encoders={m: {k: corpus.feature_attrs[m].get(k) for k in ("encoder", "pretrained", "model_source")}
                                for m in MODALITIES})
        write_json(out_path, record)
        log.info("%s rate=%.2f seed=%d fold=%d: test acc %.4f (val %.4f at epoch %d, %.1fs)", method_name,
                 missing_rate, seed, fold, record["metrics"]["accuracy"], record["validation"]["accuracy"],
                 record["validation"]["best_epoch"], record["train_seconds"])
