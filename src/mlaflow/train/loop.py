"""The one training loop, and the evaluation of runs (method x missing rate x seed x fold).

`train_epoch` is the only place where epochs run: it runs a method's pretraining phases before the first epoch
(a teacher, with its own optimiser), then the epoch's steps (`Method.training_steps`), each one zero_grad ->
backward -> the method's `after_backward` hook -> the optimiser step of the runs that take it -> its
`after_step` hook, and keeps the
loss bookkeeping. `train_runs` adds the learning-rate schedule (`StepDecay`), validation-based model selection
and the final evaluation.

A Snakemake job covers all seeds and folds of one method at one missing rate, in one process. With
`runtime.batch_runs: true` (default) its runs are trained together, stacked (see `mlaflow.methods.base`):
same results as one run at a time, within float tolerance, and faster (bench/bench_training.py: 1.8x
against the same runs one after another in one process, 8x against one process per run).

Model selection is on the validation split (`train.model_selection: validation`, default): after every epoch
the fused validation accuracy of every run is measured, and each run's best epoch is evaluated on the test
split. The test accuracy of every epoch is recorded too, never used for selection, so that the report can show
how optimistic selecting on test would be (best test epoch minus validation-selected); `model_selection: test`
(what the released MLA code does) selects on it instead, and every table labels that as optimistic.
For methods with several test-time fusion rules (MLA), the curves of every rule are recorded as well.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from mlaflow.devices import resolve_device
from mlaflow.methods import build_method
from mlaflow.methods.base import Batch, Method, Phase, RunGroup, Step
from mlaflow.methods.optim import StackedOptimizer, StepDecay
from mlaflow.train.data import Corpus
from mlaflow.train.metrics import classification_metrics, modality_gap, projection_2d

PROJECTED_POINTS = 60  # per modality, in each run's 2-D projection of the test embeddings


# ------------------------------------------------------------------------------------------ the loop


def run_steps(
    steps: Iterable[Step],
    optimizer: StackedOptimizer,
    method: Method | None,
    n_runs: int,
    device: torch.device,
) -> torch.Tensor:
    """Take every step; return the epoch's loss per run [R]: per phase the mean loss of the recorded steps of
    the runs that took them, summed over phases."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, torch.Tensor] = {}
    for step in steps:
        step_optimizer = step.optimizer or optimizer
        if step.loss is not None:
            step_optimizer.zero_grad()
            step.loss.sum().backward()  # runs are independent
        if method is not None:
            method.after_backward(step)
        step_optimizer.step(step.stepping)
        if method is not None:
            method.after_step(step)
        if step.record:
            if step.phase not in sums:
                sums[step.phase] = torch.zeros(n_runs, device=device)
                counts[step.phase] = torch.zeros(n_runs, device=device)
            sums[step.phase] += step.loss.detach() * step.active
            counts[step.phase] += step.active
    total = torch.zeros(n_runs, device=device)
    for phase in sums:
        total = total + sums[phase] / counts[phase].clamp(min=1)
    return total


def run_phase(
    phase: Phase, data: RunGroup, batch_size: int, settings: dict, schedule: StepDecay | None, n_runs: int
) -> None:
    """A pretraining phase: `phase.epochs` epochs with a fresh optimiser of the given settings, the schedule's
    learning rate at each epoch (constant without one)."""
    optimizer = StackedOptimizer(phase.parameters, settings, n_runs)
    losses = []
    for epoch in range(phase.epochs):
        if schedule is not None:
            optimizer.set_lr(schedule.lr_at(epoch))
        losses.append(run_steps(phase.steps(data, batch_size, epoch), optimizer, None, n_runs, data.device))
    phase.finish(losses)


def pretrain(
    method: Method, data: RunGroup, batch_size: int, settings: dict, schedule: StepDecay | None = None
) -> None:
    """Every pretraining phase of `method` (its teacher), each with a fresh optimiser of `settings`."""
    for phase in method.pretraining(data, batch_size):
        run_phase(phase, data, batch_size, settings, schedule, method.n_runs)


def train_epoch(
    method: Method,
    data: RunGroup,
    optimizer: StackedOptimizer,
    batch_size: int,
    schedule: StepDecay | None = None,
) -> torch.Tensor:
    """One epoch of `method` (its pretraining phases first, before the first epoch); returns the mean training
    loss per run [R]. Pretraining phases use the optimiser's settings and `schedule` (constant lr without one)."""
    if method.epochs_trained == 0:
        pretrain(method, data, batch_size, optimizer.settings(), schedule)
    loss = run_steps(
        method.training_steps(data, batch_size, method.epochs_trained),
        optimizer,
        method,
        method.n_runs,
        data.device,
    )
    method.epochs_trained += 1
    return loss


# ------------------------------------------------------------------------------------------ evaluation


@dataclass
class RunSpec:
    """One run: its seed (init, shuffles, dropout), mask present [N, M] and split (row indices per role)."""

    seed: int
    present: np.ndarray
    split: dict[str, np.ndarray]
    shift: dict[str, np.ndarray] = field(default_factory=dict)  # test-time masks [N, M] by missing-rate label


def _fused_predictions(method: Method, data: RunGroup, batch: Batch, prior: torch.Tensor):
    """Fused class predictions [R, n]; samples with no modality observed get their run's prior class."""
    pred = method.predict(data, batch)
    has_any = data.observed_at(batch.idx, batch.valid).any(dim=-1)
    fused = torch.where(has_any, pred.fused_logits.argmax(dim=-1), prior.unsqueeze(1))
    return pred, fused, has_any


def _epoch_accuracies(
    method: Method, data: RunGroup, batch: Batch, prior: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Accuracy [R] of the method's fused prediction ("fused") and of each of its other fusion rules."""
    pred, fused, has_any = _fused_predictions(method, data, batch, prior)
    out = {"fused": _accuracy(fused, batch)}
    present = data.present_at(batch.idx, batch.valid).permute(0, 2, 1)
    for rule, logits in method.fusion_variants(pred, present).items():
        out[rule] = _accuracy(torch.where(has_any, logits.argmax(dim=-1), prior.unsqueeze(1)), batch)
    return out


def _accuracy(fused: torch.Tensor, batch: Batch) -> torch.Tensor:
    correct = ((fused == batch.labels) & batch.valid).sum(dim=1)
    return correct / batch.valid.sum(dim=1).clamp(min=1)


def test_time_shift(
    method: Method, data: RunGroup, test: Batch, prior: torch.Tensor, specs: list[RunSpec]
) -> list[dict[str, float]]:
    """Per run, the fused test accuracy under each test-time mask in spec.shift (the training mask is kept for
    every other row): train at one missing rate, test at another. At the training rate itself it equals the
    run's test accuracy."""
    labels = sorted(specs[0].shift)
    out = [{} for _ in specs]
    for label in labels:
        observed = data.observed.clone()
        for r, spec in enumerate(specs):
            rows = torch.as_tensor(spec.split["test"], device=observed.device)
            observed[r, rows] = torch.as_tensor(spec.shift[label], device=observed.device)[rows]
        # same features, splits and standardisation; only the test rows' mask differs
        _, fused, _ = _fused_predictions(method, data.with_observed(observed), test, prior)
        for r, acc in enumerate(_accuracy(fused, test).tolist()):
            out[r][label] = acc
    return out


def evaluate(
    method: Method, data: RunGroup, batch: Batch, prior: torch.Tensor, n_classes: int, names: list[str]
) -> list[dict]:
    """Per run: fused metrics (all-missing samples predicted as the prior class, and counted) and each
    modality's own accuracy on the samples where it is present."""
    method.eval()
    pred, fused, has_any = _fused_predictions(method, data, batch, prior)
    present = data.observed_at(batch.idx, batch.valid)
    embeddings = method.embeddings(data, batch)  # [R, M, n, s]
    results = []
    for r in range(data.n_runs):
        valid = batch.valid[r]
        labels = batch.labels[r][valid]
        result = classification_metrics(labels, fused[r][valid], n_classes)
        result["per_modality_accuracy"] = {}
        # how many classes each modality's own prediction uses: 1 is a constant predictor, whose "accuracy"
        # is the share of one class, not what the modality carries (the report says so instead of a number)
        result["per_modality_predicted_classes"] = {}
        for m, name in enumerate(names):
            on = present[r, :, m]
            unimodal = pred.unimodal_logits[r, m][on].argmax(dim=-1)
            result["per_modality_accuracy"][name] = classification_metrics(
                batch.labels[r][on], unimodal, n_classes
            )["accuracy"]
            result["per_modality_predicted_classes"][name] = int(unimodal.unique().numel())
        result["n"] = int(valid.sum())
        result["share_all_missing"] = float((~has_any[r][valid]).float().mean()) if result["n"] else 0.0
        # modality gap on the test samples where both modalities are present
        result["modality_gap"] = {}
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                both = present[r, :, a] & present[r, :, b]
                result["modality_gap"][f"{names[a]}-{names[b]}"] = (
                    modality_gap(embeddings[r, a][both], embeddings[r, b][both])
                    if bool(both.any())
                    else float("nan")
                )
        every = present[r].all(dim=-1)
        result["embedding_projection"] = (
            dict(
                zip(
                    names,
                    projection_2d([embeddings[r, m][every] for m in range(len(names))], PROJECTED_POINTS),
                )
            )
            if bool(every.any())
            else {}
        )
        results.append(result)
    return results


def train_runs(
    method_name: str,
    corpus: Corpus,
    specs: list[RunSpec],
    settings: dict,
    test: bool = True,
    device: str = "auto",
) -> list[dict]:
    """Train the runs in `specs` stacked together; return one metrics record per run (without provenance).

    settings: {"train": the method's effective train settings, "method_params": {method_name: its options}}, as
    `mlaflow.pipeline.experiments.method_settings` gives them (a training job's config holds them too).
    test=False (the tuning stage): the test rows are never read (give specs an empty "test" split); epochs are
    selected on validation whatever train.model_selection says, and each record holds only "validation".
    device: where to train (runtime.device: auto | cpu | cuda | cuda:N), never part of the results."""
    train_cfg = settings["train"]
    if "method_optimizers" in train_cfg:
        raise ValueError(
            "train_runs takes a method's effective settings: experiments.method_settings(config, method)"
        )
    device = resolve_device(device, "runtime.device")
    generators = [torch.Generator().manual_seed(spec.seed) for spec in specs]
    data = RunGroup(
        features=[x.to(device) for x in corpus.features],
        labels=corpus.labels.to(device),
        present=torch.from_numpy(np.stack([s.present for s in specs])).to(device),
        splits=[{role: torch.from_numpy(rows).to(device) for role, rows in s.split.items()} for s in specs],
        generators=generators,
        standardize=train_cfg["standardize"],
        masked_input=train_cfg["masked_input"],
        conversations=corpus.conversations,
    )
    n_classes, R = len(corpus.class_names), len(specs)
    method = build_method(
        method_name, dict(zip(corpus.modalities, corpus.input_shapes)), n_classes, settings, generators
    ).to(device)
    optimizer = StackedOptimizer(list(method.parameters()), train_cfg, R)
    schedule = StepDecay.from_train(train_cfg)
    # each run's prior: the majority class of its training samples that have a modality
    prior = torch.stack(
        [torch.bincount(data.labels[rows], minlength=n_classes).argmax() for rows in data.rows("train")]
    )
    val = data.padded(data.rows("val", "all"))
    test_rows = data.padded(data.rows("test", "all")) if test else None

    # "validation" (default) | "test" (optimistic; never while tuning)
    select_on = train_cfg["model_selection"] if test else "validation"
    best_acc = torch.full((R,), -1.0, device=device)
    best_epoch = torch.full((R,), -1, dtype=torch.long, device=device)
    state = _run_state(method, R)
    best_state = {k: v.detach().clone() for k, v in state.items()}
    curves = {"validation": [], "test": []} if test else {"validation": []}  # per epoch: {rule: accuracy [R]}
    losses = []
    started = time.perf_counter()
    for epoch in range(train_cfg["epochs"]):
        optimizer.set_lr(schedule.lr_at(epoch))
        method.train()
        losses.append(train_epoch(method, data, optimizer, train_cfg["batch_size"], schedule).tolist())
        method.eval()
        with torch.no_grad():
            curves["validation"].append(_epoch_accuracies(method, data, val, prior))
            if test:
                curves["test"].append(_epoch_accuracies(method, data, test_rows, prior))
        selection_acc = curves[select_on][-1]["fused"]
        improved = selection_acc > best_acc  # strict: the first best epoch wins ties
        best_acc = torch.where(improved, selection_acc, best_acc)
        best_epoch = torch.where(improved, torch.full_like(best_epoch, epoch), best_epoch)
        for name, p in state.items():
            gate = improved.view((-1,) + (1,) * (p.dim() - 1))
            best_state[name] = torch.where(gate, p.detach(), best_state[name])
    train_seconds = time.perf_counter() - started
    if not test:
        return [
            {
                "validation": {
                    "accuracy": float(best_acc[r]),
                    "best_epoch": int(best_epoch[r]),
                    "accuracy_curve": [float(epoch_acc["fused"][r]) for epoch_acc in curves["validation"]],
                },
                "train_seconds": train_seconds / R,
            }
            for r in range(R)
        ]

    with torch.no_grad():
        for name, p in state.items():
            p.copy_(best_state[name])
    test_metrics = evaluate(method, data, test_rows, prior, n_classes, corpus.modalities)
    shift = test_time_shift(method, data, test_rows, prior, specs) if specs[0].shift else [None] * R
    records = []
    spec_test = data.rows("test", "all")
    for r, spec in enumerate(specs):
        curve = {
            role: {rule: [float(epoch_acc[rule][r]) for epoch_acc in per_epoch] for rule in per_epoch[0]}
            for role, per_epoch in curves.items()
        }
        records.append(
            {
                "metrics": test_metrics[r],
                "model_selection": select_on,
                "selected_epoch": int(best_epoch[r]),
                "validation": {
                    "accuracy": curve["validation"]["fused"][int(best_epoch[r])],
                    "best_epoch": _first_argmax(curve["validation"]["fused"]),
                    "accuracy_curve": curve["validation"]["fused"],
                },
                "test_accuracy_curve": curve["test"]["fused"],
                "selection": _selection_summary(curve),
                "train_loss_curve": [epoch_losses[r] for epoch_losses in losses],
                "test_time_shift": shift[r],
                "n_train": len(spec.split["train"]),
                "n_val": len(spec.split["val"]),
                "n_test": len(spec.split["test"]),
                "prior_class": corpus.class_names[int(prior[r])],
                # the test accuracy of always predicting the prior class: the level of a collapsed method
                "prior_accuracy": float((data.labels[spec_test[r]] == prior[r]).float().mean())
                if len(spec_test[r])
                else float("nan"),
                "device": str(device),
                "optimizer": {k: train_cfg[k] for k in ("optimizer", "lr", "momentum", "weight_decay")},
                "runs_stacked": R,
                "train_seconds": train_seconds / R,  # this run's share of the stacked training time
                "seconds_per_epoch": train_seconds / R / train_cfg["epochs"],
            }
        )
    return records


def _run_state(method: Method, n_runs: int) -> dict[str, torch.Tensor]:
    """What is kept of each run's best epoch: every parameter, and every buffer with a leading run axis (for
    example batch-norm statistics a method keeps per run)."""
    state = dict(method.named_parameters())
    state.update({name: b for name, b in method.named_buffers() if b.dim() >= 1 and b.shape[0] == n_runs})
    return state


def _first_argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))


def _selection_summary(curve: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """Per fusion rule ("fused": the method's own), the test accuracy at the epoch chosen on validation and at
    the best test epoch; their difference is the optimism of selecting epochs on the test set."""
    out = {}
    for rule, test_curve in curve["test"].items():
        by_validation = test_curve[_first_argmax(curve["validation"][rule])]
        by_test = max(test_curve)
        out[rule] = {
            "validation_selected": by_validation,
            "test_selected": by_test,
            "optimism": by_test - by_validation,
        }
    return out
