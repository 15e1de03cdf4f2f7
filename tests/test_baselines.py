"""The complete-modality baselines of appendix A.2 (sum, concat, FiLM, BiGated, OGM-GE, QMF): shapes,
learning, stacked runs equal to runs one at a time, masked cells never used, and one property of each."""

import math
import re

import pytest
import torch
from method_toys import (
    ADAM,
    METHOD_PARAMS,
    N_CLASSES,
    NAMED_DIMS,
    SGD,
    assert_stacked_equals_alone,
    group,
    mask,
    options_error,
    poisoned,
    toy,
)

from mlaflow.errors import ParamsError
from mlaflow.methods import build_method, method_class
from mlaflow.methods.ogm_ge import ogm_coefficients
from mlaflow.methods.optim import StackedOptimizer
from mlaflow.methods.qmf import energy_score, qmf_weights, ranking_loss
from mlaflow.pipeline import experiments as E
from mlaflow.train.loop import train_epoch

BASELINES = ["sum", "concat", "film", "bigated", "ogm_ge", "qmf"]


def _build(name, generators, dropout=0.0, hidden=8, **options):
    return method_class(name)(
        dict(NAMED_DIMS),
        N_CLASSES,
        {"hidden_dim": hidden, "dropout": dropout},
        {**METHOD_PARAMS[name], **options},
        generators,
    )


# ------------------------------------------------------------------------------------------ all baselines


@pytest.mark.parametrize("name", BASELINES)
def test_output_shapes_and_registry(name):
    features, labels = toy(n=20)
    present = mask(20, 0.3, 0)
    data, gens = group(features, labels, present.expand(2, 20, 3), [torch.arange(20)] * 2, [0, 1])
    model = build_method(
        name,
        dict(NAMED_DIMS),
        N_CLASSES,
        {"train": {"hidden_dim": 8, "dropout": 0.0}, "method_params": METHOD_PARAMS},
        gens,
    )
    opt = StackedOptimizer(list(model.parameters()), SGD, 2)
    loss = train_epoch(model.train(), data, opt, 8)
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    pred = model.eval().predict(data, data.padded([torch.arange(20), torch.arange(13)]))
    assert pred.unimodal_logits.shape == (2, 3, 20, N_CLASSES)
    assert pred.fused_logits.shape == (2, 20, N_CLASSES)
    nothing = ~present.any(1)
    assert torch.equal(pred.fused_logits[0, nothing], torch.zeros(int(nothing.sum()), N_CLASSES))
    assert torch.equal(pred.fused_logits[1, 13:], torch.zeros(7, N_CLASSES))  # padding


@pytest.mark.parametrize("name", BASELINES)
def test_training_loss_decreases_and_the_toy_problem_is_learned(name):
    features, labels = toy(n=90)
    present = torch.ones(1, 90, 3, dtype=torch.bool)
    data, gens = group(features, labels, present, [torch.arange(90)], [0])
    model = _build(name, gens, hidden=16)
    opt = StackedOptimizer(list(model.parameters()), ADAM, 1)
    losses = [float(train_epoch(model.train(), data, opt, 16)) for _ in range(12)]
    assert losses[-1] < 0.5 * losses[0], losses
    pred = model.eval().predict(data, data.padded([torch.arange(90)]))
    assert (pred.fused_logits[0].argmax(-1) == labels).float().mean() > 0.9


@pytest.mark.parametrize("name", BASELINES)
def test_stacked_runs_equal_runs_one_at_a_time(name):
    assert_stacked_equals_alone(lambda gens: _build(name, gens, dropout=0.2))


@pytest.mark.parametrize("name", BASELINES)
def test_masked_cells_never_reach_the_model(name):
    features, labels = toy(n=40)
    present = mask(40, 0.4, 5)
    results = []
    for poison in (float("nan"), 1e4):
        # any use of a masked cell spreads NaN or changes a number
        poisoned_features = poisoned(features, present, poison)
        data, gens = group(poisoned_features, labels, present.unsqueeze(0), [torch.arange(40)], [0])
        model = _build(name, gens)
        opt = StackedOptimizer(list(model.parameters()), SGD, 1)
        for _ in range(2):
            train_epoch(model.train(), data, opt, 8)
        assert all(torch.isfinite(p).all() for p in model.parameters())
        pred = model.eval().predict(data, data.padded([torch.arange(40)]))
        assert torch.isfinite(pred.fused_logits).all() and torch.isfinite(pred.unimodal_logits).all()
        results.append((list(model.parameters()), pred))
    (params_nan, pred_nan), (params_big, pred_big) = results
    assert all(torch.equal(a, b) for a, b in zip(params_nan, params_big))
    assert torch.equal(pred_nan.fused_logits, pred_big.fused_logits)
    on = present.T.unsqueeze(-1).expand(-1, -1, N_CLASSES)  # unimodal logits where the modality is present
    assert torch.equal(pred_nan.unimodal_logits[0][on], pred_big.unimodal_logits[0][on])


@pytest.mark.parametrize("name", BASELINES)
def test_an_absent_modality_is_neither_trained_nor_used(name):
    features, labels = toy(n=30)
    present = mask(30, 0.3, 3)
    present[:, 1] = False  # visual missing from every sample
    data, gens = group(features, labels, present.unsqueeze(0), [torch.arange(30)], [0])
    model = _build(name, gens)
    initial = [p.detach().clone() for p in model.encoders[1].parameters()]
    opt = StackedOptimizer(list(model.parameters()), SGD, 1)  # momentum and weight decay would move it
    for _ in range(2):
        train_epoch(model.train(), data, opt, 8)
    assert all(torch.equal(a, b) for a, b in zip(initial, model.encoders[1].parameters()))
    batch = data.padded([torch.arange(30)])
    before = model.eval().predict(data, batch)
    with torch.no_grad():
        for p in model.encoders[1].parameters():
            p.add_(1.0)
    after = model.predict(data, batch)
    assert torch.equal(before.fused_logits, after.fused_logits)
    assert torch.equal(before.unimodal_logits[:, [0, 2]], after.unimodal_logits[:, [0, 2]])


def test_unknown_options_are_clear_errors():
    gens = [torch.Generator().manual_seed(0)]
    assert re.search(r"method_params\.film\.gamma.*unknown key", options_error("film", gamma=1))
    assert re.search(r"method_params\.bigated\.gate.*'speech'", options_error("bigated", gate="speech"))
    # and against the corpus
    with pytest.raises(ParamsError, match=r"method_params\.bigated\.gate.*'speech'"):
        _build("bigated", gens, gate="speech")
    assert "method_params.ogm_ge.fusion" in options_error("ogm_ge", fusion="film")
    assert "method_params.qmf.confidence_scale" in options_error("qmf", confidence_scale=-1)


# ------------------------------------------------------------------------------------ method by method


def _embeddings(model, n=12, seed=0, present=None):
    features, labels = toy(n=n, seed=seed)
    present = torch.ones(n, 3, dtype=torch.bool) if present is None else present
    data, _ = group(features, labels, present.unsqueeze(0), [torch.arange(n)], [0])
    batch = data.padded([torch.arange(n)])
    present_at = data.present_at(batch.idx, batch.valid)
    return data, batch, present_at, model.embed(data, batch, present_at)


def test_sum_unimodal_logits_are_each_modalitys_layer_and_sum_to_the_fused():
    model = _build("sum", [torch.Generator().manual_seed(0)]).eval()
    present = mask(12, 0.3, 1)
    data, batch, _present_at, _h = _embeddings(model, present=present)
    pred = model.predict(data, batch)
    for m in range(3):
        alone = model.head.layers[m](model.encoders[m](data.inputs(m, batch.idx, batch.valid)))
        assert torch.allclose(pred.unimodal_logits[0, m][present[:, m]], alone[0][present[:, m]], atol=1e-6)
    expected = (pred.unimodal_logits[0] * present.T.unsqueeze(-1)).sum(0)
    assert torch.allclose(pred.fused_logits[0], expected, atol=1e-6)
    only_audio = present[:, 0] & ~present[:, 1:].any(1)
    assert torch.allclose(pred.fused_logits[0, only_audio], pred.unimodal_logits[0, 0, only_audio])


def test_concat_sub_heads_sum_to_the_full_head():
    model = _build("concat", [torch.Generator().manual_seed(0)]).eval()
    data, batch, _present_at, h = _embeddings(model)
    pred = model.predict(data, batch)
    # W_m h_m + b / M summed over modalities = W [h_1, h_2, h_3] + b
    assert torch.allclose(pred.unimodal_logits[0].sum(0), pred.fused_logits[0], atol=1e-5)
    W, b, s = model.head.linear.weight[0], model.head.linear.bias[0], model.hidden_dim
    text = h[0, 2] @ W[:, 2 * s :].T + b / 3
    assert torch.allclose(pred.unimodal_logits[0, 2], text, atol=1e-6)


def test_film_gamma_and_beta_modulate_the_fused_output():
    model = _build("film", [torch.Generator().manual_seed(0)], condition="text").eval()
    assert model.condition == 2 and model.modulated == [0, 1]
    _data, _batch, present_at, h = _embeddings(model)
    with torch.no_grad():
        gamma, beta = model.film_parameters(h[:, 2])
        fused = model.fuse(h, present_at)
        assert torch.allclose(fused, model.modulate_and_classify(h, gamma, beta))
        identity = model.modulate_and_classify(h, torch.ones_like(gamma), torch.zeros_like(beta))
        assert not torch.allclose(fused, identity, atol=1e-4)
        assert not torch.allclose(
            fused, model.modulate_and_classify(h, gamma, torch.zeros_like(beta)), atol=1e-4
        )
        assert not torch.allclose(
            fused, model.modulate_and_classify(h, torch.ones_like(gamma), beta), atol=1e-4
        )
        # the condition modality reaches the output only through gamma and beta
        h_other = h.clone()
        h_other[:, 2] = torch.randn_like(h[:, 2])
        assert not torch.allclose(fused, model.fuse(h_other, present_at), atol=1e-4)
        head_in = torch.cat([gamma * h[:, 0] + beta, gamma * h[:, 1] + beta], dim=-1)
        assert torch.allclose(fused, model.head(head_in), atol=1e-6)


def test_bigated_gate_is_in_zero_one_and_changes_the_output():
    model = _build("bigated", [torch.Generator().manual_seed(0)], gate="audio").eval()
    assert model.gating == 0 and model.gated == [1, 2]
    _data, _batch, present_at, h = _embeddings(model)
    with torch.no_grad():
        gate = model.gate(h)
        assert ((gate > 0) & (gate < 1)).all() and gate.std() > 0.01
        fused = model.fuse(h, present_at)
        assert torch.allclose(fused, model.gate_and_classify(h, gate))
        assert not torch.allclose(fused, model.gate_and_classify(h, torch.ones_like(gate)), atol=1e-4)
        h_other = h.clone()
        h_other[:, 0] = torch.randn_like(h[:, 0])  # the gate modality only acts through the gate
        assert not torch.allclose(fused, model.fuse(h_other, present_at), atol=1e-4)


def test_ogm_coefficient_is_below_one_for_the_dominant_modality_only():
    # visual absent from the batch: rho = 0.9 / 0.5
    scores = torch.tensor(
        [
            [0.6, 0.2, 0.1],  # audio dominant: rho = 0.6 / 0.15 = 4
            [0.3, 0.3, 0.9],  # text dominant: rho = 0.9 / 0.3 = 3
            [0.4, 0.4, 0.4],  # balanced: rho = 1, no modulation
            [0.9, 0.2, 0.5],
        ]
    )
    available = torch.tensor([[True] * 3] * 3 + [[True, False, True]])
    k = ogm_coefficients(scores, available, alpha=0.5)
    expected = torch.ones(4, 3)
    expected[0, 0] = 1 - math.tanh(0.5 * 4)
    expected[1, 2] = 1 - math.tanh(0.5 * 3)
    expected[3, 0] = 1 - math.tanh(0.5 * 1.8)
    assert torch.allclose(k, expected)
    assert (k < 1).sum() == 3
    # two modalities: the reference's ratio score_v / score_a
    k2 = ogm_coefficients(torch.tensor([[0.2, 0.5]]), torch.tensor([[True, True]]), alpha=0.1)
    assert torch.allclose(k2, torch.tensor([[1.0, 1 - math.tanh(0.1 * 2.5)]]))
    # one modality in the batch: nothing to balance
    assert torch.equal(
        ogm_coefficients(torch.tensor([[0.0, 0.7, 0.0]]), torch.tensor([[False, True, False]]), 0.1),
        torch.ones(1, 3),
    )


def test_ogm_modulates_encoder_weight_gradients_by_the_coefficients():
    features, labels = toy(n=16)
    data, gens = group(features, labels, torch.ones(1, 16, 3, dtype=torch.bool), [torch.arange(16)], [0])
    model = _build("ogm_ge", gens, modulation="ogm", alpha=0.5, modulation_starts=0, modulation_ends=50)
    batch = data.padded([torch.arange(16)])
    present = data.present_at(batch.idx, batch.valid)
    h = model.embed(data, batch, present)
    torch.nn.functional.cross_entropy(model.fuse(h, present)[0], labels).backward()
    before = {name: p.grad.clone() for name, p in model.named_parameters()}
    k = model.coefficients(h.detach(), present, batch.labels)
    dominant = int(k[0].argmin())
    assert k[0, dominant] < 1 and (k[0].sort().values[1:] == 1).all()
    model.modify_gradients(h.detach(), present, batch.labels, torch.ones(1, 3, dtype=torch.bool))
    for name, p in model.named_parameters():
        if name.startswith("encoders.") and name.endswith("weight"):
            m = int(name.split(".")[1])
            assert torch.allclose(p.grad, before[name] * k[0, m]), name
        else:  # biases and the fusion head are not modulated
            assert torch.equal(p.grad, before[name]), name
    # outside the modulation window nothing changes
    late = _build("ogm_ge", [torch.Generator().manual_seed(0)], modulation_ends=-1)
    late.modify_gradients(h.detach(), present, batch.labels, torch.ones(1, 3, dtype=torch.bool))
    assert late.last_coefficients is None


def test_ogm_ge_adds_noise_with_the_gradients_std_where_the_encoder_steps():
    features, labels = toy(n=16)
    data, gens = group(features, labels, torch.ones(1, 16, 3, dtype=torch.bool), [torch.arange(16)], [0])
    model = _build("ogm_ge", gens, hidden=32, modulation="ogm_ge", modulation_starts=0, modulation_ends=50)
    batch = data.padded([torch.arange(16)])
    present = data.present_at(batch.idx, batch.valid)
    h = model.embed(data, batch, present)
    torch.nn.functional.cross_entropy(model.fuse(h, present)[0], labels).backward()
    before = {name: p.grad.clone() for name, p in model.named_parameters()}
    steps = torch.tensor([[True, False, True]])  # visual takes no step: no noise either
    model.modify_gradients(h.detach(), present, batch.labels, steps)
    k = model.last_coefficients
    for m, layer in ((0, 3), (2, 3), (2, 6)):  # 32 x 32 weights of the encoders
        name = f"encoders.{m}.{layer}.weight"
        noise = model.get_parameter(name).grad - before[name] * k[0, m]
        assert 0.7 < float(noise.std() / before[name].std()) < 1.4, name
    assert torch.equal(model.encoders[1][3].weight.grad, before["encoders.1.3.weight"])


def test_qmf_fusion_weights_follow_the_energy():
    # E = -logsumexp: logits [0, 0] -> -ln 2; weight = -0.1 E
    assert energy_score(torch.tensor([0.0, 0.0])) == pytest.approx(-math.log(2))
    assert qmf_weights(torch.tensor([0.0, 0.0])) == pytest.approx(0.1 * math.log(2))
    assert energy_score(torch.tensor([2.0, 0.0]), temperature=2.0) == pytest.approx(-2 * math.log(math.e + 1))
    logits = torch.randn(50, 4, generator=torch.Generator().manual_seed(0)) * 3
    energy, weights = energy_score(logits), qmf_weights(logits)
    assert torch.equal(torch.argsort(energy), torch.argsort(-weights))  # lower energy -> higher weight
    # the model fuses the present modalities' logits with these weights (the functions' defaults: T 1,
    # scale 0.1)
    model = _build(
        "qmf", [torch.Generator().manual_seed(0)], energy_temperature=1.0, confidence_scale=0.1
    ).eval()
    present = mask(12, 0.3, 2)
    data, _ = group(*toy(n=12), present.unsqueeze(0), [torch.arange(12)], [0])
    batch = data.padded([torch.arange(12)])
    pred = model.predict(data, batch)
    w = qmf_weights(pred.unimodal_logits[0]) * present.T
    assert torch.allclose(pred.fused_logits[0], (w.unsqueeze(-1) * pred.unimodal_logits[0]).sum(0), atol=1e-6)


def test_qmf_ranking_loss_is_the_references_margin_ranking_loss():
    confidence = torch.tensor([[0.9, 0.2, 0.5, 0.0]])
    correctness = torch.tensor([[1.0, 0.0, 0.5, 0.3]])  # normalised cumulative loss: sample 0 is the worst
    on = torch.tensor([[True, True, True, False]])
    # pairs (0, 1), (1, 2), (2, 0) among the counted samples
    pair_loss = [
        max(0.0, 1 * (0.9 - 0.2) - 1.0),
        max(0.0, -1 * (0.2 - 0.5) - 0.5),
        max(0.0, -1 * (0.5 - 0.9) - 0.5),
    ]
    assert ranking_loss(confidence, correctness, on) == pytest.approx([sum(pair_loss) / 3])
    # the same as torch's MarginRankingLoss with the reference's targets and margins
    c, n = confidence[0, :3], correctness[0, :3]
    c2, n2 = torch.roll(c, -1), torch.roll(n, -1)
    target = torch.sign(n - n2)
    shifted = c2 + (n - n2).abs() / torch.where(target == 0, 1.0, target)
    reference = torch.nn.MarginRankingLoss(margin=0.0)(c, shifted, -target)
    assert ranking_loss(confidence, correctness, on) == pytest.approx([float(reference)])


def test_qmf_history_accumulates_each_present_samples_loss():
    features, labels = toy(n=20)
    present = mask(20, 0.3, 4)
    data, gens = group(features, labels, present.unsqueeze(0), [torch.arange(20)], [0])
    model = _build("qmf", gens)
    batch = data.padded([torch.arange(20)])
    with torch.no_grad():
        # [M, N] before the step
        ce = torch.stack(
            [
                torch.nn.functional.cross_entropy(logits, labels, reduction="none")
                for logits in model.unimodal_logits(data, batch)[0]
            ]
        )
    train_epoch(model.train(), data, StackedOptimizer(list(model.parameters()), SGD, 1), 32)  # one batch
    on = present.T & present.any(1)  # rows without any modality are not trained
    assert torch.allclose(model.history[0], ce * on, atol=1e-6)
    assert torch.equal(model.tracked[0], on)


def test_every_baseline_runs_in_the_training_loop_with_its_default_options():
    import numpy as np
    from job_files import unit_config

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
    for name in BASELINES:
        record = train_runs(name, corpus, [RunSpec(0, present, split)], E.method_settings(params, name))[0]
        assert set(record["metrics"]["per_modality_accuracy"]) == {"audio", "visual", "text"}, name
        assert len(record["train_loss_curve"]) == 2 and record["metrics"]["n"] == 20, name
