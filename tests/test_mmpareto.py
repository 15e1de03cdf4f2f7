"""MMPareto (Wei & Hu, ICML 2024): the reference's gradient integration by hand and against a port of its
training step, innocent unimodal assistance where the gradients conflict, stacked runs equal to runs one at a
time, and training."""

import math

import pytest
import torch
import torch.nn.functional as F
from method_toys import N_CLASSES, NAMED_DIMS, SGD, assert_stacked_equals_alone, group, mask, toy

from mlaflow.methods.mmpareto import MMPareto, integrate, min_norm_weight, pareto_weights
from mlaflow.methods.optim import StackedOptimizer
from mlaflow.train.loop import train_epoch

TRAIN = {"hidden_dim": 8, "dropout": 0.0}


def _build(generators, gamma=1.5, cls=MMPareto, train=TRAIN):
    return cls(dict(NAMED_DIMS), N_CLASSES, train, {"gamma": gamma}, generators)


def _dots(a, b):
    return (a * b).sum(dim=-1)


def _integrated_step(model, data, batch):
    """The loop's step up to the optimiser: zero_grad, backward of the total loss, after_backward."""
    present = data.present_at(batch.idx, batch.valid)
    step = model.batch_step(data, batch, present, batch.valid.any(dim=1))
    model.zero_grad()
    step.loss.sum().backward()
    model.after_backward(step)
    return present


# ------------------------------------------------------------------------------------- the integration


def test_weights_are_equal_without_conflict_and_min_norm_with_it():
    g_mm = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    g_u = torch.tensor([[1.0, 1.0], [-1.0, 2.0], [1.0, 0.0], [0.0, 1.0]])
    c = pareto_weights(_dots(g_mm, g_mm), _dots(g_mm, g_u), _dots(g_u, g_u))
    # cos > 0: 0.5 / 0.5; cos < 0: MGDA, c = (v22 - v12) / (v11 + v22 - 2 v12) = (5 + 1) / (1 + 5 + 2);
    # zero multimodal gradient: the reference's edge case 0.999; orthogonal (cos = 0, not > 0): MGDA, 1 / 2
    assert torch.allclose(c, torch.tensor([0.5, 0.75, 0.999, 0.5]))
    # the min-norm point 0.75 (1, 0) + 0.25 (-1, 2) = (0.5, 0.5) is orthogonal to g_mm - g_u
    point = c[1] * g_mm[1] + (1 - c[1]) * g_u[1]
    assert torch.allclose(point, torch.tensor([0.5, 0.5]))
    assert float(_dots(point, g_mm[1] - g_u[1])) == 0.0
    # the other edge case: a zero unimodal gradient -> 0.001
    assert float(min_norm_weight(torch.tensor(1.0), torch.tensor(0.0), torch.tensor(0.0))) == pytest.approx(
        0.001
    )


def test_integration_scales_up_to_the_summed_norm_never_down_times_gamma():
    def one(g_mm, g_u, c, gamma, summed=None):
        summed = g_mm + g_u if summed is None else summed
        return integrate([g_mm], [g_u], [summed], torch.tensor([c]), gamma)[0]

    # conflict, c = 0.75: new = 2 (0.5, 0.5) = (1, 1), |new| = sqrt 2 < |g_mm + g_u| = |(0, 2)| = 2
    out = one(torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 2.0]]), 0.75, 1.5)
    assert torch.allclose(out, torch.tensor([[1.0, 1.0]]) * (2 / math.sqrt(2)) * 1.5)
    # no conflict, c = 0.5: new = g_mm + g_u itself, ratio 1: the summed gradient times gamma
    out = one(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]), 0.5, 1.5)
    assert torch.allclose(out, torch.tensor([[3.0, 1.5]]))
    # a tensor whose summed gradient is smaller than the new one (c is the whole encoder's): not scaled down
    g_mm, g_u = torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 0.0]])
    assert torch.allclose(one(g_mm, g_u, 0.75, 2.0), torch.tensor([[2.0, 0.0]]))  # 2 (0.75 - 0.25, 0) * 2
    # a zero integrated gradient stays zero (the reference would divide by zero)
    assert torch.equal(one(g_mm, g_u, 0.5, 1.5, summed=torch.tensor([[0.0, 3.0]])), torch.zeros(1, 2))
    # two tensors: per tensor (the reference) the first, (1, 1), goes up to 2 and the second, (1, 0) with
    # summed (0, 0), stays; over the whole encoder (rescale: encoder) both go up by |(0, 2, 0, 0)| / |(1, 1, 1, 0)|
    g_mm = [torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]])]
    g_u = [torch.tensor([[-1.0, 2.0]]), torch.tensor([[-1.0, 0.0]])]
    summed = [a + b for a, b in zip(g_mm, g_u)]
    c = torch.tensor([0.75])
    per_tensor = integrate(g_mm, g_u, summed, c, 1.0)
    assert torch.allclose(per_tensor[0], torch.tensor([[1.0, 1.0]]) * math.sqrt(2))
    assert torch.allclose(per_tensor[1], torch.tensor([[1.0, 0.0]]))
    whole = integrate(g_mm, g_u, summed, c, 1.0, rescale="encoder")
    assert torch.allclose(torch.cat(whole, 1), torch.tensor([[1.0, 1.0, 1.0, 0.0]]) * 2 / math.sqrt(3))
    # per run: two runs in one call equal each alone
    g_mm, g_u = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    c = torch.tensor([0.3, 0.5])
    both = integrate([g_mm], [g_u], [g_mm + g_u], c, 1.5)[0]
    for r in range(2):
        alone = integrate([g_mm[r : r + 1]], [g_u[r : r + 1]], [(g_mm + g_u)[r : r + 1]], c[r : r + 1], 1.5)
        assert torch.allclose(both[r], alone[0][0])


def _reference_gradients(model, data, batch, gamma):
    """A port of the reference's train_epoch step (code/MMPareto.py) for one run: backward of each loss
    separately, the cosine of the flattened encoder gradients, 0.5 / 0.5 or MinNormSolver, and the per-tensor
    rescaling of the integrated gradient to the norm of the total loss's gradient, times gamma."""
    present = data.present_at(batch.idx, batch.valid)
    loss_mm, loss_u = model.losses(data, batch, present)
    grads = {}
    for key, loss in [("mm", loss_mm.sum())] + [(m, loss_u[0, m]) for m in range(model.n_modalities)]:
        model.zero_grad()
        loss.backward(retain_graph=True)
        grads[key] = {n: p.grad.clone() for n, p in model.named_parameters() if n.startswith("encoders.")}
    model.zero_grad()
    (loss_mm.sum() + loss_u.sum()).backward()
    expected = {}
    for m in range(model.n_modalities):
        names = [n for n in grads["mm"] if n.startswith(f"encoders.{m}.")]
        both = torch.cat([grads["mm"][n].flatten() for n in names])
        own = torch.cat([grads[m][n].flatten() for n in names])
        if F.cosine_similarity(both, own, dim=0) > 0:
            k = 0.5
        else:  # MinNormSolver._min_norm_element_from2 on python numbers
            v11, v12, v22 = float(both @ both), float(both @ own), float(own @ own)
            k = 0.999 if v12 >= v11 else 0.001 if v12 >= v22 else -((v12 - v22) / (v11 + v22 - 2 * v12))
        for n in names:
            three_norm = model.get_parameter(n).grad.norm()
            new_grad = 2 * k * grads["mm"][n] + 2 * (1 - k) * grads[m][n]
            diff = three_norm / new_grad.norm()
            expected[n] = diff * new_grad * gamma if diff > 1 else new_grad * gamma
    return expected


def test_encoder_gradients_are_the_references_on_a_fixed_batch():
    features, labels = toy(n=24)
    present = mask(24, 0.3, 5).unsqueeze(0)
    data, gens = group(features, labels, present, [torch.arange(24)], [0])
    model = _build(gens, gamma=1.5)
    batch = data.padded([torch.arange(24)])
    expected = _reference_gradients(model, data, batch, 1.5)
    heads = {n: p.grad.clone() for n, p in model.named_parameters() if not n.startswith("encoders.")}
    _integrated_step(model, data, batch)
    assert (model.last_cosines < 0).any() and (model.last_cosines > 0).any()  # both branches are exercised
    for name, p in model.named_parameters():
        want = expected[name] if name.startswith("encoders.") else heads[name]  # heads: the plain gradient
        assert torch.allclose(p.grad, want, atol=1e-6, rtol=1e-4), name


# ------------------------------------------------------------------------------------- the method's point


class SwappedWeights(MMPareto):
    """Broken: where the gradients conflict, the min-norm weights go to the wrong gradients."""

    def weights(self, v11, v12, v22):
        c = super().weights(v11, v12, v22)
        return torch.where(v12 > 0, c, 1 - c)


def _losses_after_encoder_step(model, data, batch, present, m, lr):
    """The multimodal and modality m's unimodal loss after a step of encoder m alone along its gradient."""
    encoder = model.encoders[m]
    saved = [p.detach().clone() for p in encoder.parameters()]
    with torch.no_grad():
        for p in encoder.parameters():
            p -= lr * p.grad
        loss_mm, loss_u = model.losses(data, batch, present)
        for p, q in zip(encoder.parameters(), saved):
            p.copy_(q)
    return float(loss_mm[0]), float(loss_u[0, m])


def test_integrated_step_lowers_both_losses_where_they_conflict_and_swapped_weights_do_not():
    """Innocent unimodal assistance: where g_mm and g_u conflict, a small step of the encoder along the
    integrated gradient lowers the multimodal loss and the unimodal loss; with the MGDA weights swapped, some
    conflicting encoder's step raises one of them."""
    features, labels = toy(n=32)
    data, _ = group(features, labels, torch.ones(1, 32, 3, dtype=torch.bool), [torch.arange(32)], [4])
    batch = data.padded([torch.arange(32)])
    lr = 1e-3
    broken_raises = 0
    n_conflicts = 0
    for cls in (MMPareto, SwappedWeights):
        model = _build([torch.Generator().manual_seed(4)], cls=cls)  # the same initialisation for both
        present = _integrated_step(model, data, batch)
        with torch.no_grad():
            before_mm, before_u = model.losses(data, batch, present)
        for m in range(3):
            if model.last_cosines[0, m] >= 0:
                continue
            after_mm, after_u = _losses_after_encoder_step(model, data, batch, present, m, lr)
            raised = after_mm > float(before_mm[0]) or after_u > float(before_u[0, m])
            if cls is MMPareto:
                n_conflicts += 1
                assert not raised, m
            else:
                broken_raises += raised
    assert n_conflicts >= 1  # the toy has a conflict to resolve
    assert broken_raises >= 1


# ------------------------------------------------------------------------------------- runs and training


def test_stacked_runs_equal_runs_one_at_a_time():
    assert_stacked_equals_alone(lambda gens: _build(gens, train={"hidden_dim": 8, "dropout": 0.1}), atol=1e-5)


def test_trains_in_the_loop_and_the_loss_decreases():
    features, labels = toy(n=60)
    present = mask(60, 0.3, 3)
    data, gens = group(features, labels, present.expand(2, 60, 3), [torch.arange(60)] * 2, [0, 1])
    model = _build(gens)
    # lr 0.02: at the toys' usual 0.05 the reference's per-tensor rescaling (ratios up to 1e6 on this tiny
    # network's tensors where the integrated gradient nearly cancels) makes the loss spike
    opt = StackedOptimizer(list(model.parameters()), {**SGD, "lr": 0.02}, 2)
    losses = [train_epoch(model.train(), data, opt, 16) for _ in range(30)]
    assert (losses[-1] < 0.5 * losses[0]).all()
    assert model.last_weights.shape == (2, 3)
    batch = data.padded([torch.arange(60)] * 2)
    pred = model.eval().predict(data, batch)
    assert pred.fused_logits.shape == (2, 60, N_CLASSES)
    assert pred.unimodal_logits.shape == (2, 3, 60, N_CLASSES)
    on = present.any(dim=1)
    accuracy = (pred.fused_logits[0].argmax(-1) == labels)[on].float().mean()
    assert accuracy > 0.8
    # no modality: zero fused logits (the trainer predicts its prior)
    assert torch.equal(pred.fused_logits[:, ~on], torch.zeros_like(pred.fused_logits[:, ~on]))
