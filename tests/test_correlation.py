"""The correlation-based missing-modality baselines (GCNet's CCA, DCCA, DCCAE): shapes, every pattern of missing
modalities, learning, stacked runs equal to runs one at a time, masked cells never read, and one property of
each (CCA maximises correlation, DCCA's correlation rises, DCCAE's reconstruction error falls)."""

import re

import numpy as np
import pytest
import torch
from method_toys import (
    ADAM,
    DIMS,
    N_CLASSES,
    NAMED_DIMS,
    SGD,
    all_patterns,
    assert_stacked_equals_alone,
    group,
    mask,
    options_error,
    poisoned,
    toy,
)

from mlaflow.methods.cca import CCA
from mlaflow.methods.correlation import StackedBatchNorm, canonical_correlation, imputed, linear_cca
from mlaflow.methods.dcca import DCCA
from mlaflow.methods.dccae import DCCAE
from mlaflow.methods.optim import StackedOptimizer
from mlaflow.train.loop import train_epoch

CLASSES = {"cca": CCA, "dcca": DCCA, "dccae": DCCAE}
NAMES = list(CLASSES)
# the reference's values (the workflow's default raises cca.regularization to 1 for this corpus size: see cca.py)
DEFAULTS = {
    "cca": {"components": 10, "regularization": 1e-4},
    "dcca": {"components": 10, "hidden_dim": 128, "regularization": 1e-3, "corr_batch_size": 256},
    "dccae": {
        "components": 10,
        "hidden_dim": 128,
        "regularization": 1e-3,
        "corr_batch_size": 256,
        "reconstruction_weight": 0.001,
    },
}
SMALL = {"components": 2}  # toy dimensions are 3..5
DEEP_SMALL = {"components": 2, "hidden_dim": 8, "corr_batch_size": 16}


def _build(name, generators, **options):
    small = SMALL if name == "cca" else DEEP_SMALL
    return CLASSES[name](
        dict(NAMED_DIMS),
        N_CLASSES,
        {"hidden_dim": 8, "dropout": 0.0},
        {**DEFAULTS[name], **small, **options},
        generators,
    )


# --------------------------------------------------------------------------------------------- all three


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_every_missing_pattern(name):
    features, labels = toy(n=48)
    present = torch.stack([all_patterns(48), mask(48, 0.4, 1)])
    data, gens = group(
        features, labels, present, [torch.arange(48), torch.arange(40)], [0, 1], standardize=True
    )
    model = _build(name, gens)
    opt = StackedOptimizer(list(model.parameters()), SGD, 2)
    loss = train_epoch(model.train(), data, opt, 8)
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    batch = data.padded([torch.arange(48), torch.arange(30)])
    pred = model.eval().predict(data, batch)
    assert pred.unimodal_logits.shape == (2, 3, 48, N_CLASSES) and pred.fused_logits.shape == (
        2,
        48,
        N_CLASSES,
    )
    assert torch.isfinite(pred.unimodal_logits).all() and torch.isfinite(pred.fused_logits).all()
    for r in range(2):
        nothing = ~present[r].any(1) | ~batch.valid[r]
        assert torch.equal(pred.fused_logits[r, nothing], torch.zeros(int(nothing.sum()), N_CLASSES))
        for m in range(3):  # with only m present, the fused prediction is m's own
            only = present[r, :, m] & (present[r].sum(1) == 1) & batch.valid[r]
            assert only.any() or r == 1
            assert torch.allclose(pred.fused_logits[r, only], pred.unimodal_logits[r, m, only], atol=1e-6)
    emb = model.embeddings(data, batch)
    s = 2 * 2 if name == "cca" else 2
    assert emb.shape == (2, 3, 48, s) and torch.isfinite(emb).all()


@pytest.mark.parametrize("name", NAMES)
def test_training_loss_decreases_and_the_toy_problem_is_learned(name):
    features, labels = toy(n=90)
    data, gens = group(features, labels, torch.ones(1, 90, 3, dtype=torch.bool), [torch.arange(90)], [0])
    model = _build(name, gens)
    opt = StackedOptimizer(list(model.parameters()), ADAM, 1)
    losses = [float(train_epoch(model.train(), data, opt, 16)) for _ in range(12)]
    assert losses[-1] < losses[0] - 0.3, losses
    pred = model.eval().predict(data, data.padded([torch.arange(90)]))
    assert (pred.fused_logits[0].argmax(-1) == labels).float().mean() > 0.9  # chance: 1/3


@pytest.mark.parametrize("name", NAMES)
def test_stacked_runs_equal_runs_one_at_a_time(name):
    assert_stacked_equals_alone(
        lambda gens: _build(name, gens), standardize=True, buffers=True, embeddings=True
    )


@pytest.mark.parametrize("name", NAMES)
def test_masked_cells_are_never_read(name):
    features, labels = toy(n=40)
    present = mask(40, 0.4, 5)
    results = []
    for poison in (float("nan"), 1e4):
        poisoned_features = poisoned(features, present, poison)
        data, gens = group(
            poisoned_features, labels, present.unsqueeze(0), [torch.arange(40)], [0], standardize=True
        )
        model = _build(name, gens)
        opt = StackedOptimizer(list(model.parameters()), SGD, 1)
        losses = torch.stack([train_epoch(model.train(), data, opt, 8) for _ in range(2)])
        batch = data.padded([torch.arange(40)])
        pred = model.eval().predict(data, batch)
        results.append((losses, pred.fused_logits, pred.unimodal_logits, model.embeddings(data, batch)))
    for a, b in zip(*results):
        assert torch.isfinite(a).all() and torch.equal(a, b)


def test_options_are_checked():
    assert "method_params.dccae.reconstruction_weight" in options_error("dccae", reconstruction_weight="high")
    assert re.search(r"method_params\.cca\.svm_c.*unknown", options_error("cca", svm_c=0.01))


def test_each_method_runs_in_the_training_loop(monkeypatch):
    from job_files import unit_config

    from mlaflow.pipeline import experiments as E
    from mlaflow.train.data import Corpus
    from mlaflow.train.loop import RunSpec, train_runs

    features, labels = toy(n=80)
    corpus = Corpus(
        [f"u{i}" for i in range(80)], features, labels, ["a", "b", "c"], {}, ["audio", "visual", "text"]
    )
    params = unit_config()
    params["train"].update({"epochs": 2, "hidden_dim": 8, "batch_size": 16})
    split = {"test": np.arange(0, 20), "val": np.arange(20, 30), "train": np.arange(30, 80)}
    present = np.random.default_rng(0).random((80, 3)) > 0.3
    for name in CLASSES:
        params["method_params"][name] = {**DEFAULTS[name], **(SMALL if name == "cca" else DEEP_SMALL)}
        record = train_runs(name, corpus, [RunSpec(0, present, split)], E.method_settings(params, name))[0]
        assert len(record["train_loss_curve"]) == 2 and record["metrics"]["n"] == 20, name
        assert all(np.isfinite(v) for v in record["metrics"]["modality_gap"].values()), name


# ------------------------------------------------------------------------------------- method by method


def _reference_cca(x1, x2, k, r):
    """GCNet's CCA.fit (baseline-cca/cca.py), in numpy."""
    n = x1.shape[0]
    m1, m2 = x1.mean(0, keepdims=True), x2.mean(0, keepdims=True)
    h1, h2 = x1 - m1, x2 - m2
    s12 = h1.T @ h2 / (n - 1)
    s11 = h1.T @ h1 / (n - 1) + r * np.identity(x1.shape[1])
    s22 = h2.T @ h2 / (n - 1) + r * np.identity(x2.shape[1])
    d1, v1 = np.linalg.eigh(s11)
    d2, v2 = np.linalg.eigh(s22)
    r1 = v1 @ np.diag(d1**-0.5) @ v1.T
    r2 = v2 @ np.diag(d2**-0.5) @ v2.T
    u, d, v = np.linalg.svd(r1 @ s12 @ r2)
    return r1 @ u[:, :k], r2 @ v.T[:, :k], d[:k]


def test_linear_cca_is_gcnets_and_maximises_correlation():
    g = torch.Generator().manual_seed(0)
    n, sigma = 4000, 0.5
    shared = torch.randn(n, 1, generator=g)
    x1 = torch.cat([shared, torch.randn(n, 2, generator=g)], 1) @ torch.randn(3, 3, generator=g)  # mixed
    x2 = torch.cat([shared + sigma * torch.randn(n, 1, generator=g), torch.randn(n, 3, generator=g)], 1)
    on = torch.ones(1, n, dtype=torch.bool)
    means, weights, corr = linear_cca([x1[None], x2[None]], on, 2, 1e-4, [(0, 1)])
    w1, w2 = weights[(0, 1)]
    ref1, ref2, ref_corr = _reference_cca(x1.double().numpy(), x2.double().numpy(), 2, 1e-4)
    assert np.allclose(corr[0, 0].numpy(), ref_corr, atol=1e-8)
    signs = np.sign((w1[0].numpy() * ref1).sum(0))  # singular vectors' signs are arbitrary
    assert np.allclose(w1[0].numpy(), ref1 * signs, atol=1e-6)
    assert np.allclose(w2[0].numpy(), ref2 * signs, atol=1e-6)
    # the known first canonical correlation: corr(shared, shared + sigma e) = 1 / sqrt(1 + sigma^2)
    assert abs(float(corr[0, 0, 0]) - 1 / np.sqrt(1 + sigma**2)) < 0.02
    # the projected views are more correlated than any raw coordinate pair
    z1, z2 = (x1.double() - means[0][0]) @ w1[0], (x2.double() - means[1][0]) @ w2[0]
    first = float(torch.corrcoef(torch.stack([z1[:, 0], z2[:, 0]]))[0, 1])
    assert first == pytest.approx(float(corr[0, 0, 0]), abs=5e-3)  # r shrinks the reported value a little
    raw = torch.corrcoef(torch.cat([x1, x2], 1).T.double())[:3, 3:].abs().max()
    assert first > float(raw) + 0.05


def test_cca_method_projections_are_more_correlated_than_the_raw_views():
    features, labels = toy(n=200)
    present = mask(200, 0.3, 3)
    data, gens = group(features, labels, present.unsqueeze(0), [torch.arange(200)], [0], standardize=True)
    model = _build("cca", gens)
    train_epoch(model.train(), data, StackedOptimizer(list(model.parameters()), SGD, 1), 32)
    rows = data.rows("train")[0]
    batch = data.padded([rows])
    emb = model.eval().embeddings(data, batch)[0]  # [M, n, 2k], imputed where masked
    p = data.present_at(batch.idx, batch.valid)
    for pair_index, (a, b) in enumerate(model.pairs):
        za = emb[a][:, model.pairs_of_modality(a).index((a, b)) * 2]
        zb = emb[b][:, model.pairs_of_modality(b).index((a, b)) * 2]
        first = float(torch.corrcoef(torch.stack([za, zb]))[0, 1])
        assert first == pytest.approx(float(model.correlations[0, pair_index, 0]), abs=1e-3)
        xa, xb = (imputed(data, m, batch, model.buffers_of(m)[1], p)[0] for m in (a, b))
        raw = torch.corrcoef(torch.cat([xa, xb], 1).T)[: DIMS[a], DIMS[a] :].abs().max()
        assert first > float(raw)


def test_stacked_batch_norm_is_torchs_per_run():
    x = torch.randn(2, 10, 4, generator=torch.Generator().manual_seed(0))
    rows = torch.ones(2, 10, dtype=torch.bool)
    rows[1, 6:] = False  # run 1: 6 real rows, then padding
    bn = StackedBatchNorm(4, 2)
    bn.rows = rows
    out = bn.train()(x)
    for r, n in ((0, 10), (1, 6)):
        ref = torch.nn.BatchNorm1d(4).train()
        assert torch.allclose(out[r, :n], ref(x[r, :n]), atol=1e-5)
        assert torch.allclose(bn.running_mean[r], ref.running_mean, atol=1e-6)
        assert torch.allclose(bn.running_var[r], ref.running_var, atol=1e-6)
        assert torch.allclose(bn.eval()(x)[r], ref.eval()(x[r]), atol=1e-5)
        bn.train()


def test_canonical_correlation_equals_the_references_pairloss():
    g = torch.Generator().manual_seed(1)
    h1, h2 = torch.randn(1, 64, 3, generator=g), torch.randn(1, 64, 3, generator=g)
    h2 = h2 + h1 @ torch.randn(3, 3, generator=g)
    r, k = 1e-3, 2
    corr = canonical_correlation(h1, h2, torch.ones(1, 64, dtype=torch.bool), k, r)
    # GCNet's pairloss (eigh of the covariances, eigenvalues of T'T + r I), negated
    a, b = h1[0].double().T, h2[0].double().T
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    s12 = a @ b.T / 63
    s11, s22 = a @ a.T / 63 + r * torch.eye(3), b @ b.T / 63 + r * torch.eye(3)
    d1, v1 = torch.linalg.eigh(s11)
    d2, v2 = torch.linalg.eigh(s22)
    t = (v1 @ torch.diag(d1**-0.5) @ v1.T) @ s12 @ (v2 @ torch.diag(d2**-0.5) @ v2.T)
    ev = torch.linalg.eigvalsh(t.T @ t + r * torch.eye(3))
    assert float(corr[0]) == pytest.approx(float(ev.topk(k).values.sqrt().sum()), rel=1e-5)


def _full_train_outputs(model, data):
    rows = data.rows("train")
    batch = data.padded(rows)
    present = data.present_at(batch.idx, batch.valid)
    xs = [imputed(data, m, batch, model.fill(m), present) for m in range(3)]
    return batch, present, xs


def test_dcca_correlation_objective_increases_over_epochs():
    features, labels = toy(n=120)
    present = mask(120, 0.3, 4)
    data, gens = group(features, labels, present.unsqueeze(0), [torch.arange(120)], [0], standardize=True)
    model = _build("dcca", gens, corr_batch_size=64)
    opt = StackedOptimizer(list(model.parameters()), ADAM, 1)
    per_epoch, full = [], []
    for _ in range(10):
        train_epoch(model.train(), data, opt, 16)
        per_epoch.append(float(model.last_correlation[0]))
        batch, _, xs = _full_train_outputs(model, data)
        with torch.no_grad():
            hs = [net.eval()(x) for net, x in zip(model.nets, xs)]
            full.append(
                float(sum(canonical_correlation(hs[a], hs[b], batch.valid, 2, 1e-3) for a, b in model.pairs))
            )
    assert per_epoch[-1] > per_epoch[0] + 0.1, per_epoch
    assert full[-1] > full[0] + 0.1, full
    assert max(full) <= 3 * 2 * np.sqrt(1 + 1e-3)  # 3 pairs x k correlations <= 1


def test_dccae_reconstruction_error_falls():
    features, labels = toy(n=120)
    present = mask(120, 0.3, 6)
    data, gens = group(features, labels, present.unsqueeze(0), [torch.arange(120)], [0], standardize=True)
    model = _build("dccae", gens, corr_batch_size=64, reconstruction_weight=0.001)
    opt = StackedOptimizer(list(model.parameters()), ADAM, 1)

    def error():
        train_epoch(model.train(), data, opt, 16) if errors else None
        _batch, present_at, xs = _full_train_outputs(model, data)
        with torch.no_grad():
            for module in model.representation_modules():
                module.eval()
            hs = [net(x) for net, x in zip(model.nets, xs)]
            return float(model.reconstruction_error(xs, hs, present_at)[0])

    errors = []
    for _ in range(11):
        errors.append(error())
    assert errors[-1] < 0.8 * errors[0], errors
    assert model.last_reconstruction is not None and torch.isfinite(model.last_reconstruction).all()
