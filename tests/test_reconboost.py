"""ReconBoost (mlaflow.methods.reconboost): the released loss by hand, stacked runs equal to runs one at a time,
masked cells never used, training, and the reconcilement beating its sign-flipped variant."""

import math

import torch
from method_toys import (
    ADAM,
    N_CLASSES,
    NAMED_DIMS,
    SGD,
    assert_stacked_equals_alone,
    group,
    mask,
    poisoned,
    toy,
)

from mlaflow.methods.optim import StackedOptimizer
from mlaflow.methods.reconboost import ReconBoost, boosting_loss, consolidation_loss
from mlaflow.train.loop import train_epoch

# the schema has no reconboost section yet: the options as the module's docstring defines them
OPTIONS = {
    "weight1": 1.0,
    "weight2": 0.25,
    "alpha": 0.5,
    "consolidation_grad": False,
    "boost_rate": 1.0,
    "learn_boost_rate": True,
    "shared_head": True,
    "boost_passes": 0.5,
    "correct_passes": 0.5,
}


def _build(generators, dims=None, hidden=8, dropout=0.0, **options):
    return ReconBoost(
        dict(dims or NAMED_DIMS),
        N_CLASSES,
        {"hidden_dim": hidden, "dropout": dropout},
        {**OPTIONS, **options},
        generators,
    )


# ------------------------------------------------------------------------------------------- the loss


def test_boosting_loss_by_hand():
    # C = 2, w1 = 2, w2 = 1. Sample 0: log p[0] = ln 1/2, the others' ensemble p[0] = 3/4:
    # -(2 - 3/4) ln(1/2) / 2 = 0.625 ln 2. Sample 1: no other learner (p := 1), log p[1] = ln 1/4:
    # -(2 - 1) ln(1/4) / 2 = ln 2. Sample 2 is masked out (its NaN logits must not matter).
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [float("nan"), 0.0]]], requires_grad=True)
    ensemble = torch.tensor([[[math.log(3.0), 0.0], [5.0, -5.0], [0.0, 0.0]]], requires_grad=True)
    has = torch.tensor([[True, False, True]])
    labels = torch.tensor([[0, 1, 0]])
    keep = torch.tensor([[True, True, False]])
    loss = boosting_loss(logits, ensemble, has, labels, keep, 2.0, 1.0)
    assert torch.allclose(loss, torch.tensor([(0.625 + 1.0) * math.log(2.0) / 2]))
    loss.sum().backward()
    assert ensemble.grad is None  # the ensemble is a fixed target, as the released out_join.detach()
    assert torch.isfinite(logits.grad[0, :2]).all()


def test_boosting_loss_equals_the_released_expression():
    g = torch.Generator().manual_seed(0)
    out_obj, out_join = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    lbl = torch.randint(0, 4, (6,), generator=g)
    target = torch.zeros(6, 4).scatter_(1, lbl.view(-1, 1), 1)
    released = (
        -5.0 * (target * out_obj.log_softmax(1)).mean(-1)
        + 1.0 * (target * out_join.softmax(1) * out_obj.log_softmax(1)).mean(-1)
    ).mean()
    ones = torch.ones(1, 6, dtype=torch.bool)
    ours = boosting_loss(out_obj[None], out_join[None], ones, lbl[None], ones, 5.0, 1.0)
    assert torch.allclose(ours, released.view(1))
    # the released stage 0: the ensemble is c0 expanded to one column, whose softmax is 1
    c0 = torch.full((6, 1), 0.3)
    released0 = (
        -5.0 * (target * out_obj.log_softmax(1)).mean(-1)
        + 1.0 * (target * c0.softmax(1) * out_obj.log_softmax(1)).mean(-1)
    ).mean()
    ours0 = boosting_loss(out_obj[None], out_join[None], ~ones, lbl[None], ones, 5.0, 1.0)
    assert torch.allclose(ours0, released0.view(1))


def test_consolidation_loss_is_mse_of_softmaxes():
    a, b = torch.randn(1, 5, 3), torch.randn(1, 5, 3)
    expected = torch.nn.functional.mse_loss(a[0].softmax(-1), b[0].softmax(-1))
    assert torch.allclose(consolidation_loss(a, b, torch.ones(1, 5, dtype=torch.bool)), expected.view(1))


# ------------------------------------------------------------------------------------------- training


def test_stacked_runs_equal_runs_one_at_a_time():
    assert_stacked_equals_alone(lambda gens: _build(gens, dropout=0.2))


def test_stacked_runs_equal_runs_one_at_a_time_own_heads_and_consolidation():
    assert_stacked_equals_alone(
        lambda gens: _build(gens, shared_head=False, consolidation_grad=True, boost_passes=1.0)
    )


def test_masked_cells_are_never_used_and_prediction_shapes():
    features, labels = toy(n=40)
    present = mask(40, 0.4, 3)
    data, gens = group(
        poisoned(features, present, float("nan")), labels, present[None], [torch.arange(40)], [0]
    )
    model = _build(gens)
    opt = StackedOptimizer(list(model.parameters()), SGD, 1)
    for _ in range(2):
        assert torch.isfinite(train_epoch(model.train(), data, opt, 8)).all()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    pred = model.eval().predict(data, data.padded([torch.arange(40)]))
    assert pred.unimodal_logits.shape == (1, 3, 40, N_CLASSES)
    nothing = ~present.any(1)
    assert torch.isfinite(pred.fused_logits).all()
    assert torch.equal(pred.fused_logits[0, nothing], torch.zeros(int(nothing.sum()), N_CLASSES))


def test_trains_in_the_loop_and_the_loss_decreases():
    features, labels = toy(n=90)
    data, gens = group(features, labels, torch.ones(1, 90, 3, dtype=torch.bool), [torch.arange(90)], [0])
    model = _build(gens, hidden=16)
    opt = StackedOptimizer(list(model.parameters()), ADAM, 1)
    losses = [float(train_epoch(model.train(), data, opt, 16)) for _ in range(10)]
    assert losses[-1] < 0.5 * losses[0], losses
    pred = model.eval().predict(data, data.padded([torch.arange(90)]))
    assert (pred.fused_logits[0].argmax(-1) == labels).float().mean() > 0.9


def test_steps_per_epoch_and_who_steps():
    features, labels = toy(n=48)
    present = torch.ones(1, 48, 3, dtype=torch.bool)
    present[0, :, 1] = False  # visual never present: its learner never steps
    data, gens = group(features, labels, present, [torch.arange(48)], [0])
    model = _build(gens, shared_head=False)
    phases = []
    for step in model.training_steps(data, 8, 0):
        phases.append(step.phase)
        assert not any(
            bool(step.stepping.get(p, torch.zeros(1)).any()) for p in model.encoders[1].parameters()
        )
        step.loss.sum().backward()  # (no update: only the schedule is checked)
    # per modality: 0.5 x 6 batches of boosting (none for visual), then 0.5 x 6 of rectification
    assert phases == ["boost"] * 3 + ["rectify"] * 3 + ["rectify"] * 3 + ["boost"] * 3 + ["rectify"] * 3


# ----------------------------------------------------------------------------------- the reconcilement


def _hard_sample_loss(weight2, seed):
    """Train one epoch without rectification (audio, then visual, then text boosted against the two); return the
    text learner's training cross-entropy on the samples the audio + visual ensemble gets wrong."""
    features, labels = toy(n=150, seed=seed, strength=(0.7, 0.7, 0.4))
    data, gens = group(features, labels, torch.ones(1, 150, 3, dtype=torch.bool), [torch.arange(150)], [seed])
    model = _build(gens, hidden=16, weight1=1.0, weight2=weight2, correct_passes=0.0, boost_passes=2.0)
    opt = StackedOptimizer(list(model.parameters()), ADAM, 1)
    train_epoch(model.train(), data, opt, 16)
    model.eval()
    batch = data.padded([torch.arange(150)])
    present = data.present_at(batch.idx, batch.valid)
    with torch.no_grad():
        others, _ = model.ensemble(data, batch, present, [0, 1])
        text = model.learner(2, data, batch)
    hard = others[0].argmax(-1) != labels
    return float(torch.nn.functional.cross_entropy(text[0][hard], labels[hard]))


def test_reconcilement_focuses_on_what_the_other_modalities_miss():
    """The learner's weight is weight1 - weight2 * p_others[y]: samples the other modalities get wrong weigh
    more. With the sign of the reconcilement flipped (weight2 < 0) the learner instead follows the others, and
    fits the samples they miss worse."""
    for seed in range(3):
        assert _hard_sample_loss(0.95, seed) < _hard_sample_loss(-0.95, seed), seed
