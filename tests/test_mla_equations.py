"""MLA's equations against hand-computed values (paper section 3)."""
import math

import pytest
import torch

from mlaflow.methods.mla import MLA, RLSProjector, dynamic_fusion_weights, prediction_entropy, rls_update

TRAIN_CFG = {"hidden_dim": 4, "dropout": 0.0}


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
    assert torch.allclose(expected, torch.tensor([[2 - 16 / 18.5, 1 - 28 / 18.5], [1 - 28 / 18.5, 3 - 49 / 18.5]]))


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


def _toy_mla(hgm="paper", alpha=1.0):
    return MLA([3, 2, 5], n_classes=3, train_cfg=TRAIN_CFG,
               method_cfg={"alpha": alpha, "head_gradient_modification": hgm, "fusion": "dynamic"})


def _toy_data(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    features = [torch.randn(n, d, generator=g) for d in (3, 2, 5)]
    labels = torch.randint(0, 3, (n,), generator=g)
    return features, labels


def test_eq1_alternation_one_modality_per_step_in_order():
    model = _toy_mla()
    features, labels = _toy_data(n=20)
    present = torch.ones(20, 3, dtype=torch.bool)
    calls = []
    for m, enc in enumerate(model.encoders):
        enc.register_forward_hook(lambda mod, inp, out, m=m: calls.append(m))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.fit_epoch(features, present, labels, opt, batch_size=8, generator=torch.Generator().manual_seed(0))
    assert calls == [t % 3 for t in range(3 * math.ceil(20 / 8))]  # m_t = t mod M, one encoder per step


def test_eq2_each_step_gives_gradients_to_the_current_encoder_and_the_head_only():
    model = _toy_mla()
    features, labels = _toy_data()
    present = torch.ones(20, 3, dtype=torch.bool)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with_grad = []
    original_step = opt.step

    def recording_step(*args, **kwargs):
        with_grad.append([m for m, enc in enumerate(model.encoders)
                          if any(p.grad is not None for p in enc.parameters())])
        assert model.head.weight.grad is not None
        return original_step(*args, **kwargs)

    opt.step = recording_step
    model.fit_epoch(features, present, labels, opt, batch_size=8, generator=torch.Generator().manual_seed(0))
    assert with_grad == [[t % 3] for t in range(9)]


def test_eq3_head_gradient_is_projected_by_P_t_and_bias_is_not():
    """Replay the head's updates by hand: t = 0 raw gradient, t > 0 grad_W @ P_t with P_t from eq. 5."""
    alpha, lr = 0.5, 0.1
    model = _toy_mla(alpha=alpha)
    features, labels = _toy_data(n=6)
    present = torch.ones(6, 3, dtype=torch.bool)
    # freeze the encoders (lr 0) so that each modality's h is fixed and the head recursion is exact
    opt = torch.optim.SGD([{"params": model.encoders.parameters(), "lr": 0.0},
                           {"params": model.head.parameters(), "lr": lr}])
    with torch.no_grad():
        hs = [enc(x) for enc, x in zip(model.encoders, features)]
    W, b, P = model.head.weight.detach().clone(), model.head.bias.detach().clone(), torch.eye(4)
    for t in range(3):  # batch = N: one epoch is exactly steps t = 0, 1, 2 over modalities 0, 1, 2
        h = hs[t % 3]
        W_, b_ = W.clone().requires_grad_(True), b.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(h @ W_.T + b_, labels).backward()
        grad_W = W_.grad
        if t > 0:
            P = rls_update(P, h.mean(0), alpha)   # eq. 4-5, computed before the head update (Algorithm 1)
            grad_W = grad_W @ P                     # eq. 3; the bias is not projected
        W, b = W - lr * grad_W, b - lr * b_.grad
    model.fit_epoch(features, present, labels, opt, batch_size=6, generator=torch.Generator().manual_seed(0))
    assert model.step == 3
    assert torch.allclose(model.projector.P, P, atol=1e-6)
    assert torch.allclose(model.head.weight, W, atol=1e-6)
    assert torch.allclose(model.head.bias, b, atol=1e-6)


def test_hgm_off_leaves_P_identity():
    model = _toy_mla(hgm="off")
    features, labels = _toy_data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.fit_epoch(features, torch.ones(20, 3, dtype=torch.bool), labels, opt, 8, torch.Generator().manual_seed(0))
    assert torch.equal(model.projector.P, torch.eye(4))


def test_masked_modality_contributes_nothing_to_training_or_fusion():
    model = _toy_mla()
    features, labels = _toy_data(n=30)
    g = torch.Generator().manual_seed(1)
    present = torch.rand(30, 3, generator=g) > 0.4
    present[0] = torch.tensor([True, False, False])
    poisoned = [x.clone() for x in features]
    for m in range(3):
        poisoned[m][~present[:, m]] = float("nan")  # any use of a masked cell would spread NaN
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.fit_epoch(poisoned, present, labels, opt, 8, torch.Generator().manual_seed(0))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    model.eval()
    pred = model.predict(poisoned, present)
    has_any = present.any(1)
    assert torch.isfinite(pred.fused_logits[has_any]).all()
    # a sample with only modality 0 present is fused to exactly modality 0's prediction
    assert torch.allclose(pred.fused_logits[0], pred.unimodal_logits[0, 0])


def test_rls_projector_keeps_P_on_module_device_and_resets_per_model():
    model = _toy_mla()
    assert torch.equal(model.projector.P, torch.eye(4))
    model.projector.update(torch.ones(4))
    assert not torch.equal(model.projector.P, torch.eye(4))
    assert torch.equal(_toy_mla().projector.P, torch.eye(4))
    proj = RLSProjector(2, alpha=1.0)
    grad = torch.tensor([[1.0, 1.0]])
    proj.update(torch.tensor([1.0, 0.0]))
    proj.project_(grad)
    assert torch.allclose(grad, torch.tensor([[0.5, 1.0]]))
