"""MLA's equations against hand-computed values (paper section 3)."""

import math
import statistics

import pytest
import torch

from mlaflow.errors import ParamsError
from mlaflow.methods.base import RunGroup
from mlaflow.methods.mla import MLA, dynamic_fusion_weights, prediction_entropy, rls_update
from mlaflow.methods.optim import StackedOptimizer
from mlaflow.train.loop import train_epoch

TRAIN_CFG = {"hidden_dim": 4, "dropout": 0.0, "batch_size": 8}
PAPER_MLA = {
    "alpha": 1.0,
    "alpha_schedule": "constant",
    "head_gradient_modification": "paper",
    "head_update": "project_gradient",
    "alternation": "per_step",
    "fusion": "per_sample",
    "fixed_weights": {"audio": 0.35, "visual": 0.25, "text": 0.40},
}


def test_eq5_rls_update_identity_hand_computed():
    # P = I, h = [1, 0], alpha = 1: Ph = [1, 0], h'Ph = 1, q = [0.5, 0], P - q h'P = [[0.5, 0], [0, 1]]
    P = rls_update(torch.eye(2), torch.tensor([1.0, 0.0]), alpha=1.0)
    assert torch.allclose(P, torch.tensor([[0.5, 0.0], [0.0, 1.0]]))


def test_eq5_rls_update_general_hand_computed():
    P = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
    h = torch.tensor([1.0, 2.0])
    alpha = 0.5
    # Ph = [4, 7]; h'Ph = 4 + 14 = 18; q = [4, 7] / 18.5; h'P = [4, 7]
    q = torch.tensor([4.0, 7.0]) / 18.5
    expected = P - torch.outer(q, torch.tensor([4.0, 7.0]))
    assert torch.allclose(rls_update(P, h, alpha), expected)
    assert torch.allclose(
        expected, torch.tensor([[2 - 16 / 18.5, 1 - 28 / 18.5], [1 - 28 / 18.5, 3 - 49 / 18.5]])
    )


def test_eq5_projects_out_the_mean_feature_as_alpha_vanishes():
    # P_t h = alpha / (alpha + h'P h) * P_{t-1} h, so a small alpha makes the update orthogonal to h
    h = torch.tensor([0.3, -1.2, 2.0])
    P = rls_update(torch.eye(3), h, alpha=1e-6)
    assert torch.linalg.norm(P @ h) < 1e-5
    other = torch.tensor([1.0, 0.25, 0.0])  # orthogonal to h: untouched
    assert torch.allclose(P @ other, other, atol=1e-5)


def test_eq7_entropy_hand_computed():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    e = prediction_entropy(logits)
    assert e[0] == pytest.approx(math.log(2))
    assert e[1] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))


def test_eq8_weights_hand_computed():
    # modality 0 uniform (e = ln 2), modality 1 confident (e = 0.5623); lambda = softmax(max e - e)
    logits = torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]]])  # [M=2, B=1, C=2]
    e0, e1 = math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    w1 = math.exp(e0 - e1) / (math.exp(0.0) + math.exp(e0 - e1))
    weights = dynamic_fusion_weights(logits)
    assert weights.shape == (2, 1)
    assert weights[1, 0] == pytest.approx(w1)
    assert weights[0, 0] == pytest.approx(1 - w1)
    assert weights[1, 0] > weights[0, 0]  # the less uncertain modality weighs more


def test_eq8_weights_sum_to_one_per_sample_and_respect_masks():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 4) * 3
    weights = dynamic_fusion_weights(logits)
    assert weights.shape == (3, 5)
    assert torch.allclose(weights.sum(0), torch.ones(5))
    present = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 1, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    masked = dynamic_fusion_weights(logits, present)
    assert torch.all(masked[~present] == 0)
    assert torch.allclose(masked.sum(0)[:4], torch.ones(4))
    assert torch.all(masked[:, 4] == 0)  # nothing present: no weight anywhere
    # among present modalities the weights are eq. 8 restricted to them
    sub = dynamic_fusion_weights(logits[[0, 2], 1:2], None)
    assert torch.allclose(masked[[0, 2], 1], sub[:, 0])
    # per-sample: a sample's weights do not depend on the other samples of the batch
    assert torch.allclose(dynamic_fusion_weights(logits[:, :2])[:, 0], weights[:, 0])


def _toy_data(n=20, seed=0, n_runs=1, present=None):
    """A RunGroup of n_runs runs over the same toy corpus, every sample in the training split."""
    g = torch.Generator().manual_seed(seed)
    features = [torch.randn(n, d, generator=g) for d in (3, 2, 5)]
    labels = torch.randint(0, 3, (n,), generator=g)
    if present is None:
        present = torch.ones(n, 3, dtype=torch.bool)
    split = {"train": torch.arange(n), "val": torch.arange(0), "test": torch.arange(0)}
    generators = [torch.Generator().manual_seed(100 + r) for r in range(n_runs)]
    data = RunGroup(
        features,
        labels,
        present.expand(n_runs, n, 3).clone(),
        [split] * n_runs,
        generators,
        standardize=False,
    )
    return data, generators


def _toy_mla(generators, hgm="paper", alpha=1.0, hidden_dim=4, **options):
    return MLA(
        {"audio": 3, "visual": 2, "text": 5},
        n_classes=3,
        train_cfg={**TRAIN_CFG, "hidden_dim": hidden_dim},
        method_cfg={**PAPER_MLA, "alpha": alpha, "head_gradient_modification": hgm, **options},
        generators=generators,
    )


def _sgd(model, lr=0.1, momentum=0.0, n_runs=1):
    cfg = {"optimizer": "sgd", "lr": lr, "momentum": momentum, "weight_decay": 0.0}
    return StackedOptimizer(list(model.parameters()), cfg, n_runs)


def test_eq1_alternation_one_modality_per_step_in_order():
    data, gens = _toy_data(n=20)
    model = _toy_mla(gens)
    calls = []
    for m, enc in enumerate(model.encoders):
        enc.register_forward_hook(lambda mod, inp, out, m=m: calls.append(m))
    train_epoch(model, data, _sgd(model), batch_size=8)
    assert calls == [t % 3 for t in range(3 * math.ceil(20 / 8))]  # m_t = t mod M, one encoder per step
    assert model.step.tolist() == [9]


def test_eq2_each_step_gives_gradients_to_the_current_encoder_and_the_head_only():
    data, gens = _toy_data()
    model = _toy_mla(gens)
    opt = _sgd(model)
    with_grad = []
    original_step = opt.step

    def recording_step(active):
        with_grad.append(
            [
                m
                for m, enc in enumerate(model.encoders)
                if any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
            ]
        )
        stepped = [m for m, enc in enumerate(model.encoders) if any(p in active for p in enc.parameters())]
        assert stepped == with_grad[-1] and model.head.weight in active
        return original_step(active)

    opt.step = recording_step
    train_epoch(model, data, opt, batch_size=8)
    assert with_grad == [[t % 3] for t in range(9)]


def test_eq3_head_gradient_is_projected_by_P_t_and_bias_is_not():
    """Replay the head's updates by hand: t = 0 raw gradient, t > 0 grad_W @ P_t with P_t from eq. 5."""
    alpha, lr = 0.5, 0.1
    data, gens = _toy_data(n=6)
    model = _toy_mla(gens, alpha=alpha)
    # freeze the encoders (lr 0 through an optimizer over the head only) so each modality's h is fixed
    opt = StackedOptimizer(
        list(model.head.parameters()), {"optimizer": "sgd", "lr": lr, "momentum": 0.0, "weight_decay": 0.0}, 1
    )
    with torch.no_grad():
        hs = [enc(x.unsqueeze(0))[0] for enc, x in zip(model.encoders, data.features)]
    W, b, P = model.head.weight[0].detach().clone(), model.head.bias[0].detach().clone(), torch.eye(4)
    labels = data.labels
    for t in range(3):  # batch = N: one epoch is exactly steps t = 0, 1, 2 over modalities 0, 1, 2
        h = hs[t % 3]
        W_, b_ = W.clone().requires_grad_(True), b.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(h @ W_.T + b_, labels).backward()
        grad_W = W_.grad
        if t > 0:
            P = rls_update(P, h.mean(0), alpha)  # eq. 4-5, computed before the head update (Algorithm 1)
            grad_W = grad_W @ P  # eq. 3; the bias is not projected
        W, b = W - lr * grad_W, b - lr * b_.grad
    # the rows of a batch come shuffled; the mean and the mean loss do not depend on the order
    train_epoch(model, data, opt, batch_size=6)
    assert model.step.tolist() == [3]
    assert torch.allclose(model.P[0], P, atol=1e-6)
    assert torch.allclose(model.head.weight[0], W, atol=1e-6)
    assert torch.allclose(model.head.bias[0], b, atol=1e-6)


def test_rls_update_is_batched_over_runs():
    P = torch.stack([torch.eye(3), 2 * torch.eye(3)])
    h = torch.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 0.0]])
    batched = rls_update(P, h, 0.3)
    for r in range(2):
        assert torch.allclose(batched[r], rls_update(P[r], h[r], 0.3))


def test_hgm_off_leaves_P_identity():
    data, gens = _toy_data()
    model = _toy_mla(gens, hgm="off")
    train_epoch(model, data, _sgd(model), 8)
    assert torch.equal(model.P[0], torch.eye(4))


def test_masked_modality_contributes_nothing_to_training_or_fusion():
    g = torch.Generator().manual_seed(1)
    present = torch.rand(30, 3, generator=g) > 0.4
    present[0] = torch.tensor([True, False, False])
    data, gens = _toy_data(n=30, present=present)
    for m in range(3):
        data.features[m][~present[:, m]] = float("nan")  # any use of a masked cell would spread NaN
    model = _toy_mla(gens)
    train_epoch(model, data, _sgd(model, lr=0.05, momentum=0.9), 8)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    model.eval()
    batch = data.padded([torch.arange(30)])
    pred = model.predict(data, batch)
    has_any = present.any(1)
    assert torch.isfinite(pred.fused_logits[0][has_any]).all()
    # a sample with only modality 0 present is fused to exactly modality 0's prediction
    assert torch.allclose(pred.fused_logits[0, 0], pred.unimodal_logits[0, 0, 0])


def test_P_is_reset_for_every_model():
    _, gens = _toy_data()
    model = _toy_mla(gens)
    assert torch.equal(model.P[0], torch.eye(4))
    model.P = rls_update(model.P, torch.ones(1, 4), 1.0)
    assert not torch.equal(model.P[0], torch.eye(4))
    assert torch.equal(_toy_mla(gens).P[0], torch.eye(4))


# -------------------------------------------------------------- head_update: project_gradient | project_step


def _sgd_train(model, momentum, weight_decay, n_runs=1, lr=0.01):
    """SGD as params.yaml's `train` (momentum 0.9, weight decay 1e-4 there) over all model parameters."""
    cfg = {"optimizer": "sgd", "lr": lr, "momentum": momentum, "weight_decay": weight_decay}
    return StackedOptimizer(list(model.parameters()), cfg, n_runs)


def _record_head_steps(model, opt):
    """Per optimiser step of run 0: t, h_mean (eq. 4, as the projection uses it), P_t, and the head's weight
    and bias before the step, after the optimiser's own update (before `after_step`) and after it."""
    records = []
    after_backward, after_step, opt_step = model.after_backward, model.after_step, opt.step

    def recording_after_backward(step):
        c = step.context
        weight = c["rows"].unsqueeze(-1).float()
        h_mean = (c["h"].detach() * weight).sum(1) / weight.sum(1).clamp(min=1)
        records.append({"t": int(model.step[0]), "h": h_mean[0].clone()})
        records[-1]["W_before"] = model.head.weight[0].detach().clone()
        after_backward(step)
        records[-1]["P"] = model.P[0].clone()

    def recording_opt_step(active):
        opt_step(active)
        records[-1]["W_raw"] = model.head.weight[0].detach().clone()
        records[-1]["b_raw"] = model.head.bias[0].detach().clone()

    def recording_after_step(step):
        after_step(step)
        records[-1]["W_after"] = model.head.weight[0].detach().clone()
        records[-1]["b_after"] = model.head.bias[0].detach().clone()

    model.after_backward, model.after_step, opt.step = (
        recording_after_backward,
        recording_after_step,
        recording_opt_step,
    )
    return records


def _orthogonality_ratios(head_update, epochs=5):
    """|dW h| / (||dW||_2 |h|) of every projected step (t > 0) of a toy run under SGD momentum 0.9 and weight
    decay 1e-4: dW the change actually applied to the head's weight, h the current modality's mean feature.
    Full batches (each modality's mean moves only as its encoder learns), s = 16, alpha = 1e-3 (eq. 5's
    tolerance: P_t h = alpha / (alpha + h^T P_{t-1} h) P_{t-1} h)."""
    data, gens = _toy_data(n=40)
    model = _toy_mla(gens, alpha=1e-3, hidden_dim=16, head_update=head_update)
    opt = _sgd_train(model, momentum=0.9, weight_decay=1e-4)
    records = _record_head_steps(model, opt)
    for _ in range(epochs):
        train_epoch(model, data, opt, batch_size=40)
    ratios = []
    for rec in records[1:]:
        assert rec["t"] > 0
        delta = rec["W_after"] - rec["W_before"]
        ratios.append(
            float((delta @ rec["h"]).norm() / (torch.linalg.matrix_norm(delta, ord=2) * rec["h"].norm()))
        )
    return ratios, records


def test_project_step_applies_head_updates_orthogonal_to_the_current_mean_feature():
    step_ratios, records = _orthogonality_ratios("project_step")
    gradient_ratios, _ = _orthogonality_ratios("project_gradient")
    assert len(step_ratios) == len(gradient_ratios) == 14  # 5 epochs x 3 modalities, t = 0 not projected
    # t = 0: the step as the optimiser took it; t > 0: W_old + (W_new - W_old) @ P_t, the bias as stepped
    assert torch.equal(records[0]["W_after"], records[0]["W_raw"])
    for rec in records:
        assert torch.equal(rec["b_after"], rec["b_raw"])
    for rec in records[1:]:
        raw_change = rec["W_raw"] - rec["W_before"]
        assert torch.allclose(rec["W_after"], rec["W_before"] + raw_change @ rec["P"], atol=1e-7)
        # eq. 5's bound on the applied update along h: |dW h| = |D P_t h| <= ||D||_2 |P_t h|
        applied = (rec["W_after"] - rec["W_before"]) @ rec["h"]
        bound = torch.linalg.matrix_norm(raw_change, ord=2) * (rec["P"] @ rec["h"]).norm()
        assert applied.norm() <= bound * (1 + 1e-4) + 1e-9
    # the update applied is orthogonal to h up to eq. 5's tolerance; projecting the gradient instead leaves
    # momentum (past modalities' projected gradients) and weight decay along h
    step_median, gradient_median = statistics.median(step_ratios), statistics.median(gradient_ratios)
    assert step_median < 5e-3 and max(step_ratios) < 2e-2
    assert gradient_median > 4 * step_median and gradient_median > 1e-2
    assert max(gradient_ratios) > 0.5


@pytest.mark.parametrize("hgm", ["paper", "released", "off"])
def test_project_step_equals_project_gradient_without_momentum_and_weight_decay(hgm):
    """With momentum 0 and weight decay 0 the step is -lr * grad_W @ P_t either way (P^T for `released`)."""
    models = {}
    for head_update in ("project_gradient", "project_step"):
        data, gens = _toy_data(n=20)
        model = _toy_mla(gens, hgm=hgm, alpha=0.1, head_update=head_update)
        opt = _sgd_train(model, momentum=0.0, weight_decay=0.0, lr=0.1)
        for _ in range(3):
            train_epoch(model, data, opt, batch_size=8)
        models[head_update] = model
    gradient, step = models["project_gradient"], models["project_step"]
    assert gradient.step.tolist() == [27]
    # the released update divides by an s x s outer product, which amplifies rounding in P (float64: 1e-14)
    assert torch.allclose(gradient.P, step.P, atol=1e-6 if hgm != "released" else 1e-5)
    for (name, a), b in zip(gradient.named_parameters(), step.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    # with momentum the two options differ (the projection changes what the buffer holds)
    if hgm != "off":
        weights = []
        for head_update in ("project_gradient", "project_step"):
            data, gens = _toy_data(n=20)
            model = _toy_mla(gens, hgm=hgm, alpha=0.1, head_update=head_update)
            train_epoch(model, data, _sgd_train(model, momentum=0.9, weight_decay=1e-4, lr=0.1), batch_size=8)
            weights.append(model.head.weight.detach())
        assert not torch.allclose(weights[0], weights[1], atol=1e-4)


def _toy_runs(n=30, seed=0, train_sizes=(30, 14)):
    """R runs over one toy corpus with their own masks and training splits of different sizes, so that runs
    stop taking steps at different points of an epoch."""
    g = torch.Generator().manual_seed(seed)
    features = [torch.randn(n, d, generator=g) for d in (3, 2, 5)]
    labels = torch.randint(0, 3, (n,), generator=g)
    present = torch.rand(len(train_sizes), n, 3, generator=g) > 0.3
    present[:, :, 0] |= ~present.any(-1)  # every sample has a modality
    splits = [
        {"train": torch.arange(size), "val": torch.arange(0), "test": torch.arange(0)} for size in train_sizes
    ]
    return features, labels, present, splits


def test_project_step_stacked_runs_equal_runs_one_at_a_time():
    features, labels, present, splits = _toy_runs()
    seeds = [100, 101]

    def train(runs):
        gens = [torch.Generator().manual_seed(seeds[r]) for r in runs]
        data = RunGroup(features, labels, present[runs].clone(), [splits[r] for r in runs], gens, False)
        model = _toy_mla(gens, alpha=0.1, head_update="project_step")
        opt = _sgd_train(model, momentum=0.9, weight_decay=1e-4, n_runs=len(runs), lr=0.05)
        for _ in range(2):
            train_epoch(model, data, opt, batch_size=8)
        return model

    stacked = train([0, 1])
    assert stacked.step.tolist() == [2 * 3 * 4, 2 * 3 * 2]  # run 1 sits out half of each epoch's steps
    for r in range(2):
        alone = train([r])
        assert torch.allclose(alone.P[0], stacked.P[r], atol=1e-6)
        for (name, a), b in zip(alone.named_parameters(), stacked.parameters()):
            assert torch.allclose(a[0], b[r], atol=1e-6), name


def test_head_update_must_be_a_known_value():
    _, gens = _toy_data()
    with pytest.raises(ParamsError, match="method_params.mla.head_update"):
        _toy_mla(gens, head_update="project_both")
