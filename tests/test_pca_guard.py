"""The PCA input guard of DCCA and DCCAE (`method_params.<name>.input_components`): fitted on each run's
training rows where the modality is present only, applied wherever the networks see inputs, the networks (and
DCCAE's decoders) as wide as the reduced inputs, null exactly the unguarded method, stacked runs equal to runs
one at a time, masked cells never read, and, on a toy of the real problem's shape (512-1024 dimensions, 500
training rows), the guard lifting the accuracy that the unguarded networks' spurious correlations hold near
the majority class."""

import numpy as np
import pytest
import torch
from job_files import unit_config
from method_toys import N_CLASSES, NAMED_DIMS, SGD, assert_stacked_equals_alone, group, mask, poisoned, toy

from mlaflow.methods.base import RunGroup
from mlaflow.methods.dcca import DCCA
from mlaflow.methods.dccae import DCCAE
from mlaflow.methods.optim import StackedOptimizer
from mlaflow.train.loop import train_epoch

CLASSES = {"dcca": DCCA, "dccae": DCCAE}
NAMES = list(CLASSES)
OPTIONS = {"components": 2, "hidden_dim": 8, "regularization": 1e-3, "corr_batch_size": 16}
EXTRA = {"dcca": {}, "dccae": {"reconstruction_weight": 0.001}}


def _build(name, generators, dims=None, **options):
    return CLASSES[name](
        dict(dims or NAMED_DIMS),
        N_CLASSES,
        {"hidden_dim": 8, "dropout": 0.0},
        {**OPTIONS, **EXTRA[name], **options},
        generators,
    )


# ------------------------------------------------------------------------------- fitted on training rows only

WIDE = {"audio": 6, "visual": 8, "text": 10}
TRAIN, VAL, TEST = torch.arange(0, 40), torch.arange(40, 50), torch.arange(50, 60)


def _wide_toy(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, N_CLASSES, (n,), generator=g)
    features = [
        torch.randn(N_CLASSES, d, generator=g)[labels]
        + torch.randn(n, d, generator=g) * (1 + torch.arange(d))
        for d in WIDE.values()
    ]
    return features, labels


def _fit(name, features, labels, present, q=4, standardize=True):
    """One epoch on a single run with validation and test rows; the fitted (mean, projection) per modality."""
    split = {"train": TRAIN, "val": VAL, "test": TEST}
    gens = [torch.Generator().manual_seed(0)]
    data = RunGroup(features, labels, present.unsqueeze(0), [split], gens, standardize=standardize)
    model = _build(name, gens, WIDE, input_components=q)
    train_epoch(model.train(), data, StackedOptimizer(list(model.parameters()), SGD, 1), 8)
    return model, [tuple(b.clone() for b in model.pca(m)) for m in range(3)]


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_the_pca_is_fitted_on_the_present_training_rows_only(name, standardize):
    """Without standardisation the mean is the raw features' (with it, that of the standardised ones: ~0)."""
    features, labels = _wide_toy()
    present = mask(60, 0.3, 7)
    _, fitted = _fit(name, features, labels, present, standardize=standardize)
    for m, (x, (mean, projection)) in enumerate(zip(features, fitted)):
        # the reference: PCA of the (standardised) present training rows
        rows = TRAIN[present[TRAIN, m]]
        xs = x[rows].double()
        if standardize:
            xs = (xs - xs.mean(0)) / xs.std(0)
        assert torch.allclose(mean[0].double(), xs.mean(0), atol=1e-5)
        eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov(xs.T))
        top = eigenvectors[:, -4:]
        p = projection[0].double()
        assert p.shape == (WIDE[list(WIDE)[m]], 4)
        assert torch.allclose(p.T @ p, torch.eye(4, dtype=torch.float64), atol=1e-5)
        assert torch.allclose(p @ p.T, top @ top.T, atol=1e-4)  # the top-4 principal subspace
        assert eigenvalues[-4] > eigenvalues[-5] * 1.05  # (well defined)
    # validation and test rows and masked training cells changed drastically: the same fit, exactly
    g = torch.Generator().manual_seed(1)
    changed = []
    for x in features:
        y = x.clone()
        y[torch.cat([VAL, TEST])] = 1e3 * torch.randn(20, x.shape[1], generator=g) + 50.0
        changed.append(y)
    changed = poisoned(
        changed, torch.cat([present[TRAIN], torch.ones(20, 3, dtype=torch.bool)]), float("nan")
    )
    _, refit = _fit(name, changed, labels, present, standardize=standardize)
    for (mean, projection), (mean2, projection2) in zip(fitted, refit):
        assert torch.equal(mean, mean2) and torch.equal(projection, projection2)
    # one present training cell changed: that modality's fit changes
    row = int(TRAIN[present[TRAIN, 2]][0])
    moved = [x.clone() for x in features]
    moved[2][row] += 5.0
    _, moved_fit = _fit(name, moved, labels, present, standardize=standardize)
    if not standardize:
        assert not torch.allclose(moved_fit[2][0], fitted[2][0], atol=1e-4)
    assert not torch.allclose(moved_fit[2][1], fitted[2][1], atol=1e-4)
    assert torch.equal(moved_fit[0][1], fitted[0][1])  # another modality's fit is untouched


@pytest.mark.parametrize("name", NAMES)
def test_a_run_with_too_few_present_training_rows_gets_zero_directions(name):
    features, labels = _wide_toy()
    present = torch.ones(60, 3, dtype=torch.bool)
    present[TRAIN[3:], 0] = False  # audio present on 3 training rows: 2 directions of 4
    model, fitted = _fit(name, features, labels, present)
    p = fitted[0][1][0]
    assert torch.allclose(p[:, :2].T @ p[:, :2], torch.eye(2), atol=1e-5)
    assert torch.equal(p[:, 2:], torch.zeros(6, 2))
    assert all(torch.isfinite(param).all() for param in model.parameters())


# ----------------------------------------------------------------------------------------- null, widths


@pytest.mark.parametrize("name", NAMES)
def test_null_is_the_unguarded_method_and_the_widths_follow_the_option(name):
    features, labels = toy(n=48)
    present = mask(48, 0.3, 2).unsqueeze(0)

    def train(**options):
        data, gens = group(features, labels, present, [torch.arange(48)], [5], standardize=True)
        model = _build(name, gens, **options)
        opt = StackedOptimizer(list(model.parameters()), SGD, 1)
        losses = torch.stack([train_epoch(model.train(), data, opt, 8) for _ in range(2)])
        batch = data.padded([torch.arange(48)])
        return model, losses, model.eval().predict(data, batch), model.embeddings(data, batch)

    absent, absent_losses, absent_pred, absent_emb = train()
    null, null_losses, null_pred, null_emb = train(input_components=None)
    assert torch.equal(absent_losses, null_losses)
    assert torch.equal(absent_pred.fused_logits, null_pred.fused_logits)
    assert torch.equal(absent_pred.unimodal_logits, null_pred.unimodal_logits)
    assert torch.equal(absent_emb, null_emb)
    assert absent.state_dict().keys() == null.state_dict().keys()
    for key, value in absent.state_dict().items():
        assert torch.equal(value, null.state_dict()[key]), key
    assert not any("pca" in key for key in null.state_dict())
    x = torch.randn(1, 4, 3)
    assert null.reduced(0, x) is x
    dims = list(NAMED_DIMS.values())  # 3, 4, 5
    for q, widths in ((None, dims), (4, [3, 4, 4]), (2, [2, 2, 2])):
        model = train(input_components=q)[0]
        assert [net[0].weight.shape[-1] for net in model.nets] == widths
        if q is not None:
            assert [model.pca(m)[1].shape for m in range(3)] == [(1, d, w) for d, w in zip(dims, widths)]
        if name == "dccae":  # the decoders reconstruct the reduced inputs
            assert [dec[-1].weight.shape[1] for dec in model.decoders] == widths


# ------------------------------------------------------------------------------- stacking, masked cells


@pytest.mark.parametrize("name", NAMES)
def test_stacked_runs_equal_runs_one_at_a_time_with_the_guard(name):
    assert_stacked_equals_alone(
        lambda gens: _build(name, gens, input_components=3), standardize=True, buffers=True, embeddings=True
    )


@pytest.mark.parametrize("name", NAMES)
def test_masked_cells_are_never_read_with_the_guard(name):
    features, labels = toy(n=40)
    present = mask(40, 0.4, 5)
    results = []
    for poison in (float("nan"), 1e4):
        data, gens = group(
            poisoned(features, present, poison),
            labels,
            present.unsqueeze(0),
            [torch.arange(40)],
            [0],
            standardize=True,
        )
        model = _build(name, gens, input_components=2)
        opt = StackedOptimizer(list(model.parameters()), SGD, 1)
        losses = torch.stack([train_epoch(model.train(), data, opt, 8) for _ in range(2)])
        batch = data.padded([torch.arange(40)])
        pred = model.eval().predict(data, batch)
        pcas = [b for m in range(3) for b in model.pca(m)]
        results.append(
            (losses, pred.fused_logits, pred.unimodal_logits, model.embeddings(data, batch), *pcas)
        )
    for a, b in zip(*results):
        assert torch.isfinite(a).all() and torch.equal(a, b)


# ----------------------------------------------------------------- the problem's shape: spurious correlations


def _problem(n=700, dims=(512, 1024, 768), k=4, strength=3.0, seed=0):
    """Three modalities of 512-1024 dimensions: the label in k random directions of each (4 imbalanced
    classes), isotropic noise in all the others; rows 0-499 train, 500-599 validation, 600-699 test."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.multinomial(torch.tensor([0.35, 0.25, 0.2, 0.2]), n, replacement=True, generator=g)
    features = []
    for d in dims:
        basis = torch.linalg.qr(torch.randn(d, k, generator=g))[0]
        centroids = torch.randn(4, k, generator=g) * strength
        features.append(centroids[labels] @ basis.T + torch.randn(n, d, generator=g))
    return features, labels


# the recipe and options the guard is measured under, stated here: GCNet's (Adam at 1e-3 for 15 epochs, DCCA
# networks 128 wide with 10 components), as params.yaml ships them
GUARD_RECIPE = {
    "epochs": 15,
    "batch_size": 64,
    "optimizer": "adam",
    "lr": 0.001,
    "momentum": 0.9,
    "weight_decay": 0.0001,
    "lr_step_epochs": 10,
    "lr_gamma": 0.1,
    "hidden_dim": 128,
    "dropout": 0.0,
    "standardize": True,
    "masked_input": "skip",
    "model_selection": "validation",
    "method_optimizers": {},
}
GUARD_OPTIONS = {"components": 10, "hidden_dim": 128, "regularization": 0.001, "corr_batch_size": 256}


@pytest.mark.parametrize("name", NAMES)
def test_the_guard_lifts_accuracy_at_512_to_1024_dimensions(name):
    """At 500 training rows the unguarded networks correlate noise (the summed correlation nears its maximum)
    and classify near the majority class; reduced to a few principal directions they find the label."""
    from mlaflow.pipeline import experiments as E
    from mlaflow.train.data import Corpus
    from mlaflow.train.loop import RunSpec, train_runs

    features, labels = _problem()
    n = len(labels)
    corpus = Corpus([f"u{i}" for i in range(n)], features, labels, list("abcd"), {}, list(NAMED_DIMS))
    params = unit_config()
    params["train"].update(GUARD_RECIPE)
    params["method_params"][name] = {**GUARD_OPTIONS, **EXTRA[name]}
    split = {"train": np.arange(0, 500), "val": np.arange(500, 600), "test": np.arange(600, n)}
    specs = [RunSpec(seed, np.ones((n, 3), dtype=bool), split) for seed in (0, 1)]
    majority = float(torch.bincount(labels[600:]).max()) / 100
    accuracy = {}
    for q in (None, 8, 32):
        params["method_params"][name]["input_components"] = q
        records = train_runs(name, corpus, specs, E.method_settings(params, name))
        accuracy[q] = float(np.mean([r["metrics"]["accuracy"] for r in records]))
    assert accuracy[8] > majority + 0.3, (majority, accuracy)
    assert accuracy[8] > accuracy[None] + 0.25, accuracy
    assert accuracy[32] > accuracy[None], accuracy
