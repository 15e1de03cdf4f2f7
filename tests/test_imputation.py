"""The imputation baselines of the missing-modality experiment (ae, cra, mmin, if_mmin): shapes, every pattern
of missing modalities, learning, stacked runs equal to runs one at a time, and one property of each."""

import re

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

from mlaflow.methods.ae import AE
from mlaflow.methods.cra import CRA
from mlaflow.methods.if_mmin import IFMMIN
from mlaflow.methods.imputation import artificial_drop, cmd
from mlaflow.methods.mmin import MMIN
from mlaflow.methods.optim import StackedOptimizer
from mlaflow.train.loop import pretrain, train_epoch

CLASSES = {"ae": AE, "cra": CRA, "mmin": MMIN, "if_mmin": IFMMIN}
METHODS = list(CLASSES)
DEFAULTS = {  # equal to the YAML reported for params.yaml
    "ae": {"drop_rate": 0.3, "reconstruction_weight": 0.2},
    "cra": {"drop_rate": 0.3, "reconstruction_weight": 0.8, "n_blocks": 2},
    "mmin": {
        "teacher_data": "complete",
        "teacher_epochs": None,
        "n_blocks": 1,
        "drop_rate": 0.3,
        "reconstruction_weight": 4.0,
        "cycle_weight": 2.0,
    },
    "if_mmin": {
        "teacher_data": "complete",
        "teacher_epochs": None,
        "n_blocks": 1,
        "drop_rate": 0.3,
        "reconstruction_weight": 1.0,
        "invariant_weight": 1.0,
    },
}


def _train_cfg(opt=SGD, hidden=8, dropout=0.0, epochs=3):
    return {
        "hidden_dim": hidden,
        "dropout": dropout,
        "epochs": epochs,
        "lr_step_epochs": 10,
        "lr_gamma": 0.1,
        **opt,
    }


def _build(name, generators, cfg=None, **options):
    return CLASSES[name](
        dict(NAMED_DIMS), N_CLASSES, cfg or _train_cfg(), {**DEFAULTS[name], **options}, generators
    )


@pytest.mark.parametrize("name", METHODS)
def test_shapes_and_every_missing_pattern(name):
    features, labels = toy(n=40)
    present = all_patterns(40)
    data, gens = group(features, labels, present.expand(2, 40, 3), [torch.arange(40)] * 2, [0, 1])
    model = _build(name, gens, cfg=_train_cfg(epochs=1))
    opt = StackedOptimizer(list(model.parameters()), _train_cfg(), 2)
    loss = train_epoch(model.train(), data, opt, 8)
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    pred = model.eval().predict(data, data.padded([torch.arange(40), torch.arange(29)]))
    assert pred.unimodal_logits.shape == (2, 3, 40, N_CLASSES) and pred.fused_logits.shape == (
        2,
        40,
        N_CLASSES,
    )
    assert torch.isfinite(pred.unimodal_logits).all() and torch.isfinite(pred.fused_logits).all()
    nothing = ~present.any(1)
    assert torch.equal(pred.fused_logits[0, nothing], torch.zeros(int(nothing.sum()), N_CLASSES))
    assert torch.equal(pred.fused_logits[1, 29:], torch.zeros(11, N_CLASSES))
    assert (pred.fused_logits[0, ~nothing].abs().sum(-1) > 0).all()
    emb = model.embeddings(data, data.padded([torch.arange(40)] * 2))
    assert emb.shape == (2, 3, 40, 8) and torch.isfinite(emb).all()
    # unimodal logits of m = the network with only m fed; fused with only m present equals it
    only_audio = present[:, 0] & ~present[:, 1:].any(1)
    assert torch.allclose(pred.fused_logits[0, only_audio], pred.unimodal_logits[0, 0, only_audio], atol=1e-5)


@pytest.mark.parametrize("name", METHODS)
def test_loss_decreases_and_the_toy_problem_is_learned(name):
    features, labels = toy(n=90)
    present = mask(90, 0.2, 0)
    present[~present.any(1)] = True
    data, gens = group(features, labels, present.unsqueeze(0), [torch.arange(90)], [0], standardize=True)
    model = _build(name, gens, cfg=_train_cfg(ADAM, hidden=16, epochs=8))
    opt = StackedOptimizer(list(model.parameters()), ADAM, 1)
    losses = [float(train_epoch(model.train(), data, opt, 16)) for _ in range(12)]
    assert sum(losses[-3:]) < 0.6 * sum(losses[:3]), losses
    pred = model.eval().predict(data, data.padded([torch.arange(90)]))
    assert (pred.fused_logits[0].argmax(-1) == labels).float().mean() > 0.8


@pytest.mark.parametrize("name", METHODS)
def test_reconstruction_error_falls_during_training(name):
    g = torch.Generator().manual_seed(0)
    n = 96
    z = torch.randn(n, 2, generator=g)  # modalities that share a latent: one predicts another
    features = [z @ torch.randn(2, d, generator=g) + 0.05 * torch.randn(n, d, generator=g) for d in DIMS]
    labels = (z[:, 0] > 0).long() + (z[:, 1] > 0.5).long()
    present = mask(n, 0.2, 1)
    data, gens = group(features, labels, present.unsqueeze(0), [torch.arange(n)], [0], standardize=True)
    slow = {**ADAM, "lr": 0.003}
    model = _build(
        name, gens, cfg=_train_cfg(slow, hidden=16, epochs=4), reconstruction_weight=1.0, drop_rate=0.8
    )
    opt = StackedOptimizer(list(model.parameters()), slow, 1)
    for _ in range(20):
        train_epoch(model.train(), data, opt, 16)
    curve = [float(c) for c in model.reconstruction_curve]
    assert sum(curve[-3:]) < 0.8 * sum(curve[:3]), curve


@pytest.mark.parametrize("name", METHODS)
def test_stacked_runs_equal_runs_one_at_a_time(name):
    options = {"teacher_data": "observed"} if name in ("mmin", "if_mmin") else {}
    assert_stacked_equals_alone(
        lambda gens: _build(name, gens, cfg=_train_cfg(dropout=0.2, epochs=2), **options), epochs=2
    )


@pytest.mark.parametrize("name", ["ae", "cra", "mmin_observed", "if_mmin_observed"])
def test_masked_cells_never_reach_the_model(name):
    name, options = (name[:-9], {"teacher_data": "observed"}) if name.endswith("_observed") else (name, {})
    features, labels = toy(n=40)
    present = mask(40, 0.4, 5)
    results = []
    for poison in (float("nan"), 1e4):
        poisoned_features = poisoned(features, present, poison)
        data, gens = group(poisoned_features, labels, present.unsqueeze(0), [torch.arange(40)], [0])
        if options:  # the observed teacher never asks for the complete features
            data.complete_inputs = None
        model = _build(name, gens, **options)
        opt = StackedOptimizer(list(model.parameters()), SGD, 1)
        for _ in range(2):
            train_epoch(model.train(), data, opt, 8)
        pred = model.eval().predict(data, data.padded([torch.arange(40)]))
        assert torch.isfinite(pred.fused_logits).all() and torch.isfinite(pred.unimodal_logits).all()
        results.append((list(model.parameters()), pred))
    (params_a, pred_a), (params_b, pred_b) = results
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))
    assert torch.equal(pred_a.fused_logits, pred_b.fused_logits)


def test_options_are_checked():
    assert "method_params.mmin.teacher_data" in options_error("mmin", teacher_data="test")
    assert re.search(r"method_params\.ae\.n_blocks.*unknown", options_error("ae", n_blocks=2))
    assert "method_params.cra.drop_rate" in options_error("cra", drop_rate=1.5)
    assert "method_params.if_mmin.teacher_epochs" in options_error("if_mmin", teacher_epochs=0)
    assert "method_params.if_mmin.teacher_epochs" in options_error("if_mmin", teacher_epochs=True)


# ------------------------------------------------------------------------------------ method by method


def test_artificial_drop_takes_one_present_modality_from_samples_with_two_or_more():
    present = all_patterns(800).unsqueeze(0)
    kept, dropped = artificial_drop(present, 0.5, [torch.Generator().manual_seed(0)], torch.tensor([True]))
    assert torch.equal(kept | dropped, present) and not (kept & dropped).any()
    assert (dropped.sum(-1) <= 1).all() and (kept.sum(-1)[present.any(-1)] >= 1).all()
    eligible = present.sum(-1) >= 2
    assert not dropped[~eligible].any()
    assert 0.4 < float(dropped.any(-1)[eligible].float().mean()) < 0.6
    none, zero = artificial_drop(present, 0.0, [torch.Generator()], torch.tensor([True]))
    assert torch.equal(none, present) and not zero.any()


@pytest.mark.parametrize("name", ["ae", "cra"])
def test_reconstruction_error_counts_only_the_dropped_cells(name):
    features, labels = toy(n=24)
    present = torch.ones(24, 3, dtype=torch.bool)
    data, gens = group(features, labels, present.unsqueeze(0), [torch.arange(24)], [0])
    model = _build(name, gens).train()
    batch = data.padded([torch.arange(24)])
    present_at = data.present_at(batch.idx, batch.valid)
    kept, dropped = artificial_drop(present_at, 0.5, [torch.Generator().manual_seed(1)], torch.tensor([True]))
    assert dropped.any() and (kept.sum(-1) >= 2).any()
    xs, recon = model.reconstruct(data, batch, kept)
    error, used = model.reconstruction_error(xs, recon, dropped)
    # the targets of kept cells (and the features of modalities never dropped) do not enter the error
    changed = [x.clone() for x in xs]
    for m in range(3):
        changed[m][kept[..., m]] += 100.0
    assert torch.equal(model.reconstruction_error(changed, recon, dropped)[0], error)
    # a dropped cell's target does
    m = int(dropped[0].any(0).nonzero()[0])
    changed = [x.clone() for x in xs]
    changed[m][dropped[..., m]] += 100.0
    assert model.reconstruction_error(changed, recon, dropped)[0] > error
    # it is the mean feature MSE of the decoded dropped cells
    expected = torch.cat(
        [
            ((model.decoders[m](recon[:, dropped[0, :, m]])[0] - xs[m][0][dropped[0, :, m]]) ** 2).mean(-1)
            for m in range(3)
            if dropped[0, :, m].any()
        ]
    )
    assert torch.allclose(error, expected.mean().view(1), atol=1e-6)
    assert set(used) == {m for m in range(3) if dropped[0, :, m].any()}


def test_cra_cascade_adds_each_blocks_output():
    model = _build("cra", [torch.Generator().manual_seed(0)])
    ae = model.autoencoder
    x = torch.randn(1, 5, 24)
    with torch.no_grad():
        recon, latents = ae(x)
        x_in, x_out = x, torch.zeros_like(x)
        for enc, dec in zip(ae.encoders, ae.decoders):
            x_in = x_in + x_out
            x_out = dec(enc(x_in))
        assert torch.allclose(recon, ae.transition(x_in + x_out), atol=1e-6)
        assert latents.shape == (1, 5, 2 * 128)


@pytest.mark.parametrize("name", ["mmin", "if_mmin"])
def test_observed_teacher_never_reads_masked_cells_and_complete_teacher_does(name):
    features, labels = toy(n=36)
    present = mask(36, 0.3, 7)
    calls = []

    def run(teacher_data, shift):
        changed = [x.clone() for x in features]
        for m in range(3):
            changed[m][~present[:, m]] += shift
        data, gens = group(changed, labels, present.unsqueeze(0), [torch.arange(36)], [0])
        original = data.complete_inputs
        data.complete_inputs = lambda *a: calls.append(teacher_data) or original(*a)
        model = _build(name, gens, cfg=_train_cfg(epochs=2), teacher_data=teacher_data)
        opt = StackedOptimizer(list(model.parameters()), SGD, 1)
        for _ in range(2):
            train_epoch(model.train(), data, opt, 8)
        return [p.detach().clone() for p in model.parameters()]

    a, b = run("observed", 0.0), run("observed", 5.0)
    assert calls == [] and all(torch.equal(p, q) for p, q in zip(a, b))
    c, d = run("complete", 0.0), run("complete", 5.0)
    assert calls and not all(torch.equal(p, q) for p, q in zip(c, d))


@pytest.mark.parametrize("name", ["mmin", "if_mmin"])
def test_student_starts_from_the_trained_teacher(name):
    features, labels = toy(n=30)
    data, gens = group(features, labels, mask(30, 0.3, 2).unsqueeze(0), [torch.arange(30)], [0])
    model = _build(name, gens, cfg=_train_cfg(ADAM, epochs=4))
    initial = [p.detach().clone() for p in model.teacher.parameters()]
    pretrain(model, data, 8, ADAM)
    assert len(model.teacher_losses) == 4 and model.teacher_losses[-1] < model.teacher_losses[0]
    assert not all(torch.equal(a, b) for a, b in zip(initial, model.teacher.parameters()))
    for a, b in zip(model.encoders.parameters(), model.teacher.encoders.parameters()):
        assert torch.equal(a, b)
    assert not any(p.requires_grad for p in model.teacher.parameters())


def test_mmin_target_is_the_teachers_embedding_of_the_reverse_input():
    features, labels = toy(n=20)
    present = mask(20, 0.4, 3)
    data, gens = group(features, labels, present.unsqueeze(0), [torch.arange(20)], [0])
    model = _build("mmin", gens)
    batch = data.padded([torch.arange(20)])
    p = data.present_at(batch.idx, batch.valid)
    target, counted, _ = model.teacher_targets(data, batch, p, p)
    for m in range(3):
        reverse = data.complete_inputs(m, batch.idx, batch.valid).masked_fill(p[..., m : m + 1], 0.0)
        assert torch.allclose(target[:, :, m], model.teacher.encoders[m](reverse), atol=1e-6)
    assert counted.all()
    observed = _build("mmin", gens, teacher_data="observed")
    assert torch.equal(observed.teacher_targets(data, batch, p, p)[1], p)


def test_cmd_is_zero_for_identical_distributions_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 50, 6, generator=g)
    mask = torch.ones(2, 50, dtype=torch.bool)
    assert torch.equal(cmd(x, x, mask), torch.zeros(2))
    assert torch.equal(
        cmd(x, x[:, torch.randperm(50, generator=g)], mask).clamp(max=1e-5) < 1e-5,
        torch.ones(2, dtype=torch.bool),
    )
    shifted = cmd(x, x + 0.5, mask)
    assert (shifted > 0).all() and torch.allclose(shifted, torch.full((2,), 0.5 * 6**0.5), atol=1e-5)
    scaled = cmd(x, 2 * x, mask)
    assert (scaled > 0.5).all()
    # the padding rows do not count; the gradient at identical inputs is finite
    y = x.clone().requires_grad_(True)
    partial = mask.clone()
    partial[:, 40:] = False
    z = x.clone()
    z[:, 40:] += 100
    cmd(y, z, partial).sum().backward()
    assert torch.isfinite(y.grad).all()
    assert torch.allclose(cmd(x, z, partial), torch.zeros(2), atol=1e-6)
    # K = 1 is the distance between the means
    assert torch.allclose(cmd(x, 3 * x, mask, moments=1), (x.mean(1) - 3 * x.mean(1)).norm(dim=-1), atol=1e-5)


def test_if_mmin_teacher_loss_includes_the_cmd_of_shared_features():
    features, labels = toy(n=16)
    data, gens = group(features, labels, torch.ones(1, 16, 3, dtype=torch.bool), [torch.arange(16)], [0])
    model = _build("if_mmin", gens)
    batch = data.padded([torch.arange(16)])
    xs = model.teacher_inputs(data, batch)
    h = model.teacher.embed(xs)
    inv = model.teacher.invariant(h)
    expected_cmd = (
        cmd(inv[:, 0], inv[:, 1], batch.valid)
        + cmd(inv[:, 0], inv[:, 2], batch.valid)
        + cmd(inv[:, 1], inv[:, 2], batch.valid)
    ) / 3
    logits = model.teacher.head(torch.cat([h[:, 0], h[:, 1], h[:, 2], inv[:, 0], inv[:, 1], inv[:, 2]], -1))
    ce = torch.nn.functional.cross_entropy(logits[0], labels)
    assert torch.allclose(
        model.teacher.loss(xs, batch.labels, batch.valid), (ce + expected_cmd).view(1), atol=1e-5
    )
    assert expected_cmd > 0


# ------------------------------------------------------------------------------ the exact speed-ups


@pytest.mark.parametrize("name", METHODS)
def test_predict_equals_the_whole_network_run_once_per_pattern(name):
    """predict's shortcuts (encoders once per row, unimodal passes only on rows with m and another modality)
    give the numbers of the plain definition: the network on the zero-filled inputs, M + 1 times."""
    features, labels = toy(n=48)
    masks = torch.stack([all_patterns(48), mask(48, 0.5, 3)])
    data, gens = group(features, labels, masks, [torch.arange(48)] * 2, [0, 1])
    model = _build(name, gens).eval()
    batch = data.padded([torch.arange(48), torch.arange(40)])
    pred = model.predict(data, batch)
    present = data.present_at(batch.idx, batch.valid)
    with torch.no_grad():
        fused = model.logits(data, batch, present).masked_fill(~present.any(-1, keepdim=True), 0.0)
        assert torch.allclose(pred.fused_logits, fused, atol=1e-6)
        for m in range(3):
            only_m = torch.zeros_like(present)
            only_m[..., m] = present[..., m]
            assert torch.allclose(pred.unimodal_logits[:, m], model.logits(data, batch, only_m), atol=1e-6)


@pytest.mark.parametrize("name", ["ae", "mmin"])
def test_encoders_on_the_kept_rows_only_equal_encoding_every_zero_filled_row(name):
    features, labels = toy(n=40)
    data, gens = group(features, labels, mask(40, 0.4, 4).unsqueeze(0), [torch.arange(40)], [0])
    model = _build(name, gens).train()
    batch = data.padded([torch.arange(40)])
    kept = data.present_at(batch.idx, batch.valid)
    kept[0, ::3, 1] = False
    xs, h = model.network_on(data, batch, kept)
    plain = torch.cat(
        [
            enc(x.masked_fill(~kept[..., m : m + 1], 0.0))
            for m, (enc, x) in enumerate(zip(model.encoders, xs))
        ],
        dim=-1,
    )
    assert torch.allclose(h, plain, atol=1e-6)
    weight = torch.randn_like(h)
    grads = [
        torch.autograd.grad((out * weight).sum(), list(model.encoders.parameters())) for out in (h, plain)
    ]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*grads))


@pytest.mark.parametrize("name", ["mmin", "if_mmin"])
def test_teacher_table_equals_running_the_teacher(name):
    features, labels = toy(n=30)
    data, gens = group(features, labels, mask(30, 0.3, 2).unsqueeze(0), [torch.arange(2, 30)], [0])
    model = _build(name, gens, cfg=_train_cfg(epochs=3), teacher_epochs=2)
    pretrain(model, data, 8, SGD)
    assert len(model.teacher_losses) == 2
    batch = data.shuffled_batches(data.rows("train"), 8)[-1]  # a padded batch
    looked_up = model.teacher_embeddings(data, batch)
    table, model._table = model._table, None
    computed = model.teacher_embeddings(data, batch)
    assert (looked_up[1] is None) == (name == "mmin")
    for a, b in zip(looked_up, computed):
        if a is not None:
            assert torch.allclose(a, b, atol=1e-6)
    model._table = table
    other = data.padded([torch.arange(0, 8)])  # rows 0, 1 are not training rows
    with torch.no_grad():
        direct = model.teacher.embed(model.teacher_inputs(data, other))
    assert torch.allclose(model.teacher_embeddings(data, other)[0], direct, atol=1e-6)
