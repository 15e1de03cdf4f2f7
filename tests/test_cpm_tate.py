"""The missing-modality baselines CPM-Net and TATE: shapes under every pattern of missing modalities, learning,
stacked runs equal to runs one at a time, and one property of each (CPM-Net's latent fit and classification
loss; TATE's missing tag and its privilege option)."""

import re

import pytest
import torch
from method_toys import (
    ADAM,
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

from mlaflow.methods.cpm_net import CPMNet, cpm_classification_loss
from mlaflow.methods.optim import StackedOptimizer
from mlaflow.methods.tate import TATE
from mlaflow.train.loop import train_epoch

# equal to the method_params blocks reported for params.yaml
DEFAULTS = {
    "cpm_net": {
        "lsd_dim": 128,
        "lamb": 1.0,
        "inner_epochs": 2,
        "net_lr": 0.001,
        "latent_lr": 0.01,
        "test_steps": 100,
    },
    "tate": {"privileged": True, "teacher_epochs": 5, "heads": 4, "aux_weight": 0.1},
}
SMALL = {"cpm_net": {"lsd_dim": 16}, "tate": {"teacher_epochs": 3}}  # keep the tests fast
CLASSES = {"cpm_net": CPMNet, "tate": TATE}
METHODS = ["cpm_net", "tate"]


def _build(name, generators, dropout=0.0, hidden=8, **options):
    return CLASSES[name](
        dict(NAMED_DIMS),
        N_CLASSES,
        {"hidden_dim": hidden, "dropout": dropout},
        {**DEFAULTS[name], **SMALL[name], **options},
        generators,
    )


# ------------------------------------------------------------------------------------------- both methods


@pytest.mark.parametrize("name", METHODS)
def test_shapes_and_every_pattern_of_missing_modalities(name):
    features, labels = toy(n=32)
    present = all_patterns(32)
    data, gens = group(
        features, labels, present.expand(2, 32, 3), [torch.arange(32), torch.arange(20)], [0, 1]
    )
    model = _build(name, gens, dropout=0.1)
    opt = StackedOptimizer(list(model.parameters()), SGD, 2)
    loss = train_epoch(model.train(), data, opt, 8)
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    batch = data.padded([torch.arange(32), torch.arange(27)])
    pred = model.eval().predict(data, batch)
    assert pred.unimodal_logits.shape == (2, 3, 32, N_CLASSES)
    assert pred.fused_logits.shape == (2, 32, N_CLASSES)
    assert torch.isfinite(pred.fused_logits).all() and torch.isfinite(pred.unimodal_logits).all()
    nothing = ~present.any(1)
    assert torch.equal(pred.fused_logits[0, nothing], torch.zeros(int(nothing.sum()), N_CLASSES))
    assert torch.equal(pred.fused_logits[1, 27:], torch.zeros(5, N_CLASSES))  # padding
    some = present.any(1)
    assert (pred.fused_logits[0, some].abs().sum(-1) > 0).all()  # one, two, three present
    emb = model.embeddings(data, batch)
    assert emb.shape[:3] == (2, 3, 32) and torch.isfinite(emb).all()


@pytest.mark.parametrize("name", METHODS)
def test_training_loss_decreases_and_the_toy_problem_is_learned(name):
    features, labels = toy(n=90)
    present = mask(90, 0.3, 0)
    present[torch.arange(90) % 11 == 0] = torch.tensor([False, False, True])
    data, gens = group(features, labels, present.unsqueeze(0), [torch.arange(90)], [0])
    model = _build(name, gens, hidden=16)
    opt = StackedOptimizer(list(model.parameters()), ADAM, 1)
    losses = [float(train_epoch(model.train(), data, opt, 16)) for _ in range(10)]
    assert losses[-1] < 0.5 * losses[0], losses
    pred = model.eval().predict(data, data.padded([torch.arange(90)]))
    assert (pred.fused_logits[0].argmax(-1) == labels).float().mean() > 0.8  # chance: 1/3


@pytest.mark.parametrize("name,options", [("cpm_net", {}), ("tate", {}), ("tate", {"privileged": False})])
def test_stacked_runs_equal_runs_one_at_a_time(name, options):
    assert_stacked_equals_alone(
        lambda gens: _build(name, gens, dropout=0.2, **options),
        n=40,
        second_rows=(10, 34),
        epochs=2,
        atol=1e-4,
        embeddings=True,
    )


@pytest.mark.parametrize("name,options", [("cpm_net", {}), ("tate", {"privileged": False})])
def test_masked_cells_never_reach_the_model(name, options):
    """TATE with privileged false, and CPM-Net: changing masked features never changes the run."""
    features, labels = toy(n=40)
    present = mask(40, 0.4, 5)
    results = []
    for poison in (float("nan"), 1e4):
        poisoned_features = poisoned(features, present, poison)
        data, gens = group(poisoned_features, labels, present.unsqueeze(0), [torch.arange(40)], [0])
        model = _build(name, gens, dropout=0.1, **options)
        opt = StackedOptimizer(list(model.parameters()), SGD, 1)
        losses = [train_epoch(model.train(), data, opt, 8) for _ in range(2)]
        assert all(torch.isfinite(p).all() for p in model.parameters())
        pred = model.eval().predict(data, data.padded([torch.arange(40)]))
        assert torch.isfinite(pred.fused_logits).all() and torch.isfinite(pred.unimodal_logits).all()
        results.append((losses, list(model.parameters()), pred))
    (l_nan, params_nan, pred_nan), (l_big, params_big, pred_big) = results
    assert all(torch.equal(a, b) for a, b in zip(l_nan, l_big))
    assert all(torch.equal(a, b) for a, b in zip(params_nan, params_big))
    assert torch.equal(pred_nan.fused_logits, pred_big.fused_logits)
    assert torch.equal(pred_nan.unimodal_logits, pred_big.unimodal_logits)


def test_unknown_or_missing_options_are_clear_errors():
    assert re.search(r"method_params\.cpm_net\.test_lr.*unknown", options_error("cpm_net", test_lr=0.1))
    assert "method_params.tate.privileged" in options_error("tate", privileged="sometimes")


# ----------------------------------------------------------------------------------------------- CPM-Net


def _recon_error(model, data, batch, h, present):
    """Per sample, the squared reconstruction error on the present views [R, n]."""
    err = 0
    for m in range(3):
        x = data.inputs(m, batch.idx, batch.valid)
        x_hat = h @ model.dec_weight[m].transpose(1, 2) + model.dec_bias[m].unsqueeze(1)
        err = err + ((x - x_hat) ** 2).sum(-1) * present[..., m]
    return err


def test_cpm_fitted_latents_reduce_reconstruction_error_on_observed_views():
    features, labels = toy(n=48)
    present = all_patterns(48)
    data, gens = group(features, labels, present.unsqueeze(0), [torch.arange(40)], [0])
    model = _build("cpm_net", gens)
    opt = StackedOptimizer(list(model.parameters()), SGD, 1)
    for _ in range(3):
        train_epoch(model.train(), data, opt, 8)
    batch = data.padded([torch.arange(48)])
    on = data.present_at(batch.idx, batch.valid)
    fused, unimodal = model.fit_latents(data, batch)
    some = on.any(-1)
    before = _recon_error(model, data, batch, torch.zeros_like(fused), on)
    after = _recon_error(model, data, batch, fused, on)
    assert (after[some] < before[some]).all()
    assert (fused[~some] == 0).all()
    for m in range(3):  # the unimodal latent reconstructs its own view better than zero
        only = torch.zeros_like(on)
        only[..., m] = on[..., m]
        e0 = _recon_error(model, data, batch, torch.zeros_like(fused), only)[on[..., m]]
        e1 = _recon_error(model, data, batch, unimodal[:, m], only)[on[..., m]]
        assert (e1 < e0).all()
        assert (unimodal[:, m][~on[..., m]] == 0).all()
    # the closed form is test_steps steps of gradient descent from zero with step 1 / (2 lambda_max)
    model.test_steps = 7
    fused, _ = model.fit_latents(data, batch)
    i = int(torch.nonzero(on[0].all(-1))[0])
    G = sum(w[0].T @ w[0] for w in model.dec_weight).double()
    c = sum(
        model.dec_weight[m][0].T @ (data.inputs(m, batch.idx, batch.valid)[0, i] - model.dec_bias[m][0])
        for m in range(3)
    ).double()
    step = 1 / (2 * torch.linalg.eigvalsh(G)[-1])
    h = torch.zeros_like(c)
    for _ in range(7):
        h = h - step * 2 * (G @ h - c)
    assert torch.allclose(fused[0, i].double(), h, atol=1e-4)


def test_cpm_classification_loss_is_zero_for_separated_coinciding_latents():
    labels = torch.tensor([[0, 0, 1, 1, 2, 2]])
    valid = torch.ones(1, 6, dtype=torch.bool)
    centres = 10 * torch.eye(3, 5)  # far apart, orthogonal
    h = centres[labels]
    assert cpm_classification_loss(h, labels, valid, 3) == 0
    # the same latents with two labels swapped: the swapped samples pay 1 + the similarity gap
    swapped = torch.tensor([[1, 0, 0, 1, 2, 2]])
    loss = cpm_classification_loss(h, swapped, valid, 3)
    # each of samples 0-3 then has mean similarity 0 to the other members of its label's class and 50 to the
    # other class (one latent of 100, one of 0): theta 1 + 50 - 0 = 51; the class-2 samples pay nothing
    assert torch.allclose(loss, torch.tensor([4 * 51.0 / 6]))
    # padding rows count nowhere
    padded = torch.cat([h, torch.randn(1, 2, 5)], dim=1)
    assert (
        cpm_classification_loss(
            padded,
            torch.cat([labels, torch.tensor([[0, 1]])], 1),
            torch.cat([valid, torch.zeros(1, 2, dtype=torch.bool)], 1),
            3,
        )
        == 0
    )


def test_cpm_predicts_by_mean_similarity_to_each_class_training_latents():
    features, labels = toy(n=30)
    data, gens = group(features, labels, torch.ones(1, 30, 3, dtype=torch.bool), [torch.arange(30)], [0])
    model = _build("cpm_net", gens)
    train_epoch(model.train(), data, StackedOptimizer(list(model.parameters()), SGD, 1), 8)
    h_train = model.latents[0, :30]
    for c in range(N_CLASSES):
        assert torch.allclose(model.prototypes[0, c], h_train[labels == c].mean(0), atol=1e-6)
    batch = data.padded([torch.arange(30)])
    pred = model.eval().predict(data, batch)
    fused, _ = model.fit_latents(data, batch)
    assert torch.allclose(pred.fused_logits[0], fused[0] @ model.prototypes[0].T, atol=1e-5)


# -------------------------------------------------------------------------------------------------- TATE


def test_tate_output_changes_with_the_missing_tag():
    features, labels = toy(n=16)
    present = torch.ones(16, 3, dtype=torch.bool)
    data, gens = group(features, labels, present.unsqueeze(0), [torch.arange(16)], [0])
    model = _build("tate", gens).eval()
    batch = data.padded([torch.arange(16)])
    on = data.present_at(batch.idx, batch.valid)
    with torch.no_grad():
        common = model.core.common(model._embed(model.encoders, data, batch, on), on)
        _, _, logits = model.core(common, on)
        # the same tokens, but visual tagged as missing (its token kept): only the tag differs
        tagged = on.clone()
        tagged[..., 1] = False
        _, _pooled, logits_tagged = model.core(common, tagged)
        assert not torch.allclose(logits, logits_tagged, atol=1e-5)
        # the tag is appended to every token
        tokens = torch.cat([common, (~tagged).float().unsqueeze(2).expand(-1, -1, 3, -1)], dim=-1)
        assert torch.allclose(model.core.encoder(tokens), model.core(common, tagged)[0])


def test_tate_privilege_reads_masked_training_cells_only_when_on():
    """privileged true: the teacher and the reconstruction targets read the complete training features, so
    changing masked features changes the run; evaluation never reads them."""
    features, labels = toy(n=40)
    present = mask(40, 0.4, 5)
    runs = []
    for shift in (0.0, 5.0):
        changed = [x.clone() for x in features]
        for m in range(3):
            changed[m][~present[:, m]] += shift
        data, gens = group(changed, labels, present.unsqueeze(0), [torch.arange(40)], [0])
        model = _build("tate", gens, privileged=True)
        train_epoch(model.train(), data, StackedOptimizer(list(model.parameters()), SGD, 1), 8)
        runs.append([p.detach().clone() for p in model.teacher.parameters()])
    assert not all(torch.equal(a, b) for a, b in zip(*runs))


def test_tate_unprivileged_drop_keeps_one_observed_modality():
    gens = [torch.Generator().manual_seed(0)]
    model = _build("tate", gens, privileged=False)
    present = all_patterns(64).unsqueeze(0)
    seen = model._drop_one(present, torch.tensor([True]))
    assert not (seen & ~present).any()  # only observed cells are dropped
    counts = present.sum(-1)
    assert torch.equal(seen.sum(-1)[counts <= 1], counts[counts <= 1])  # single-modality samples keep it
    dropped = counts - seen.sum(-1)
    assert (dropped <= 1).all() and dropped[counts >= 2].sum() > 0
