"""The released code's choices as options (issue 8): each against an independent implementation or a property
that could fail, and the bookkeeping that lets the report measure them (curves, test-set selection)."""

import copy
import math

import numpy as np
import pytest
import torch
from job_files import unit_params
from test_late_fusion_and_training import _params, _separable_corpus, _split
from test_mla_equations import _sgd, _toy_data, _toy_mla

from mlaflow.errors import ParamsError
from mlaflow.methods.mla import (
    batch_entropy,
    dynamic_fusion_weights,
    fixed_fusion_weights,
    per_batch_fusion_weights,
    released_rls_update,
)
from mlaflow.methods.optim import StackedOptimizer
from mlaflow.pipeline import experiments as E
from mlaflow.pipeline import params as P
from mlaflow.train.loop import RunSpec, train_epoch, train_runs

# ------------------------------------------------------------------------------------------------ fusion


def test_per_batch_weights_are_constant_within_a_batch_and_depend_on_its_composition():
    torch.manual_seed(0)
    logits = torch.randn(3, 12, 4) * 2
    present = torch.ones(3, 12, dtype=torch.bool)
    weights = per_batch_fusion_weights(logits, present, batch_size=4)
    for start in (0, 4, 8):
        block = weights[:, start : start + 4]
        assert torch.allclose(block, block[:, :1].expand_as(block))  # one lambda per modality per batch
    assert not torch.allclose(weights[:, 0], weights[:, 4])  # batches differ
    assert torch.allclose(weights.sum(0), torch.ones(12))
    # the same sample gets another weight when its batch-mates change
    swapped = logits.clone()
    swapped[:, 1:4] = logits[:, 5:8]
    assert not torch.allclose(per_batch_fusion_weights(swapped, present, 4)[:, 0], weights[:, 0])


def test_per_sample_weights_do_not_depend_on_the_other_samples():
    torch.manual_seed(1)
    logits = torch.randn(3, 12, 4) * 2
    swapped = logits.clone()
    swapped[:, 1:4] = logits[:, 5:8]
    assert torch.allclose(dynamic_fusion_weights(swapped)[:, 0], dynamic_fusion_weights(logits)[:, 0])


def test_batch_entropy_is_the_released_calculate_entropy():
    torch.manual_seed(2)
    out = torch.randn(6, 4)
    # released main.py: probabilities = softmax(output, dim=0); entropy = -sum(p * log p)
    p = torch.softmax(out, dim=0)
    expected = -torch.sum(p * torch.log(p))
    assert batch_entropy(out.unsqueeze(0), torch.ones(1, 6, dtype=torch.bool))[0] == pytest.approx(
        float(expected), rel=1e-5
    )
    # a masked sample does not take part
    present = torch.ones(1, 6, dtype=torch.bool)
    present[0, 5] = False
    p = torch.softmax(out[:5], dim=0)
    assert batch_entropy(out.unsqueeze(0), present)[0] == pytest.approx(float(-(p * p.log()).sum()), rel=1e-5)


def test_fixed_weights_renormalise_over_present_modalities():
    present = torch.tensor([[True, True], [True, False], [True, True]])  # [M=3, B=2]
    w = fixed_fusion_weights(present, [0.35, 0.25, 0.40])
    assert torch.allclose(w[:, 0], torch.tensor([0.35, 0.25, 0.40]))
    assert torch.allclose(w[:, 1], torch.tensor([0.35, 0.0, 0.40]) / 0.75)


# ------------------------------------------------------------------------------- head gradient modification


def _released_gsplugin_update(P, r, alpha):
    """utils/utils.py GSPlugin.before_update of the released code, transcribed with its own [1, s] shapes."""
    r = r.reshape(1, -1)
    k = torch.mm(P, torch.t(r))
    P = torch.sub(P, torch.mm(k, torch.t(k)) / (alpha + torch.mm(k, r)))
    return P / torch.norm(P, p="fro")


def test_released_P_update_equals_the_released_formula():
    torch.manual_seed(3)
    P = torch.eye(5)
    for step in range(4):
        h = torch.randn(5)
        alpha = 0.1 ** (1 + step / 4)
        expected = _released_gsplugin_update(P, h, alpha)
        P_next = released_rls_update(P, h, alpha)
        assert torch.allclose(P_next, expected, atol=1e-6)
        assert torch.linalg.matrix_norm(P_next) == pytest.approx(1.0)
        P = P_next
    # batched over runs with one alpha per run
    Ps, hs = torch.stack([torch.eye(3), 2 * torch.eye(3)]), torch.randn(2, 3)
    batched = released_rls_update(Ps, hs, torch.tensor([0.1, 0.05]))
    for r, a in enumerate((0.1, 0.05)):
        assert torch.allclose(batched[r], _released_gsplugin_update(Ps[r], hs[r], a), atol=1e-6)


def test_released_hgm_projects_the_head_gradient_by_P_transposed():
    """Replay the head's updates as the released code does them: P from its formula, grad @ P^T."""
    alpha, lr = 0.5, 0.1
    data, gens = _toy_data(n=6)
    model = _toy_mla(gens, hgm="released", alpha=alpha)
    opt = StackedOptimizer(
        list(model.head.parameters()), {"optimizer": "sgd", "lr": lr, "momentum": 0.0, "weight_decay": 0.0}, 1
    )
    with torch.no_grad():
        hs = [enc(x.unsqueeze(0))[0] for enc, x in zip(model.encoders, data.features)]
    W, b, P = model.head.weight[0].detach().clone(), model.head.bias[0].detach().clone(), torch.eye(4)
    for t in range(3):
        h = hs[t]
        W_, b_ = W.clone().requires_grad_(True), b.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(h @ W_.T + b_, data.labels).backward()
        grad_W = W_.grad
        if t > 0:
            P = _released_gsplugin_update(P, h.mean(0), alpha)
            grad_W = torch.mm(grad_W, torch.t(P))
        W, b = W - lr * grad_W, b - lr * b_.grad
    train_epoch(model, data, opt, batch_size=6)
    assert torch.allclose(model.P[0], P, atol=1e-6)
    assert torch.allclose(model.head.weight[0], W, atol=1e-6)


def test_alpha_decays_tenfold_within_each_epoch():
    _, gens = _toy_data()
    model = _toy_mla(gens, alpha=0.1, alpha_schedule="decay_within_epoch")
    batches = torch.tensor([4])
    alphas = [float(model._alpha(b, batches)[0]) for b in range(4)]
    # the released schedule: 0.1 ** (1 + b / batches_per_epoch)
    assert alphas == pytest.approx([0.1 ** (1 + b / 4) for b in range(4)])
    assert float(_toy_mla(gens, alpha=0.1)._alpha(3, batches)[0]) == pytest.approx(0.1)  # constant


# ----------------------------------------------------------------------------------------- alternation


def test_in_batch_alternation_takes_M_optimizer_steps_per_batch():
    data, gens = _toy_data(n=20)
    model = _toy_mla(gens, alternation="in_batch")
    forwards = []
    for m, enc in enumerate(model.encoders):
        enc.register_forward_hook(lambda mod, inp, out, m=m: forwards.append(m))
    opt = _sgd(model)
    stepped = []
    original_step = opt.step

    def recording_step(active):
        stepped.append(
            [m for m, enc in enumerate(model.encoders) if any(p in active for p in enc.parameters())]
        )
        return original_step(active)

    opt.step = recording_step
    train_epoch(model, data, opt, batch_size=8)
    n_batches = math.ceil(20 / 8)
    assert len(stepped) == 3 * n_batches  # M steps per batch
    assert stepped == [[m] for _ in range(n_batches) for m in range(3)]  # fixed order audio, visual, text
    assert forwards == [
        m for _ in range(n_batches) for m in range(3)
    ]  # one forward of every encoder per batch
    assert model.step.tolist() == [3 * n_batches]


# ---------------------------------------------------------------------------------------- masked input


def test_zero_fill_hides_the_mask_from_the_model_and_feeds_zeros():
    g = torch.Generator().manual_seed(4)
    present = torch.rand(10, 3, generator=g) > 0.5
    present[0] = torch.tensor([True, False, True])
    data, _ = _toy_data(n=10, present=present)
    for m in range(3):
        data.features[m][~present[:, m]] = float("nan")
    from mlaflow.methods.base import RunGroup

    zero = RunGroup(
        data.features,
        data.labels,
        data.present,
        data.splits,
        data.generators,
        standardize=True,
        masked_input="zero_fill",
    )
    batch = zero.padded([torch.arange(10)])
    assert zero.present_at(batch.idx, batch.valid).all()  # the model is told nothing
    assert torch.equal(zero.observed_at(batch.idx, batch.valid)[0], present)  # the real mask is kept
    x = zero.inputs(1, batch.idx, batch.valid)[0]
    assert torch.isfinite(x).all()
    assert torch.allclose(x[0], (0 - zero.mean[1][0]) / zero.std[1][0])  # raw zeros, standardised


# ----------------------------------------------------------------------- curves and test-set selection


def test_test_selection_is_never_below_validation_selection_and_fusion_rules_match_real_runs():
    corpus = _separable_corpus()
    present = np.random.default_rng(0).random((300, 3)) > 0.3
    specs = [RunSpec(seed, present, _split(300)) for seed in (0, 1)]
    params = _params(epochs=5, optimizer="sgd", lr=0.02, momentum=0.9)
    records = train_runs("mla", corpus, specs, E.method_settings(params, "mla"))
    for record in records:
        # the method's own rule, from the recorded curves: the test accuracy at the first best validation
        # epoch, and the best test accuracy
        test_curve, validation_curve = record["test_accuracy_curve"], record["validation"]["accuracy_curve"]
        chosen_epoch = validation_curve.index(max(validation_curve))
        assert record["selected_epoch"] == record["validation"]["best_epoch"] == chosen_epoch
        fused = record["selection"]["fused"]
        assert fused["validation_selected"] == pytest.approx(test_curve[chosen_epoch], abs=1e-6)
        assert fused["test_selected"] == pytest.approx(max(test_curve), abs=1e-6)
        for rule, chosen in record["selection"].items():
            assert chosen["optimism"] == pytest.approx(
                chosen["test_selected"] - chosen["validation_selected"]
            ), rule
        # the method's own rule at the validation-chosen epoch is the reported test accuracy
        assert record["selection"]["fused"]["validation_selected"] == pytest.approx(
            record["metrics"]["accuracy"], abs=1e-6
        )
        assert record["selection"]["per_sample"]["validation_selected"] == pytest.approx(
            record["metrics"]["accuracy"]
        )
    # a test-time fusion rule measured from the curves equals a real run with that rule
    params["method_params"]["mla"]["fusion"] = "per_batch"
    per_batch = train_runs("mla", corpus, specs, E.method_settings(params, "mla"))
    for record, real in zip(records, per_batch):
        assert record["selection"]["per_batch"]["validation_selected"] == pytest.approx(
            real["metrics"]["accuracy"]
        )
    # selecting on test reports the best test epoch
    params["method_params"]["mla"]["fusion"] = "per_sample"
    params["train"]["model_selection"] = "test"
    on_test = train_runs("mla", corpus, specs, E.method_settings(params, "mla"))
    for record, optimistic in zip(records, on_test):
        assert optimistic["model_selection"] == "test"
        assert optimistic["metrics"]["accuracy"] == pytest.approx(max(record["test_accuracy_curve"]))
        # the same training, another epoch kept: the first best test epoch
        assert optimistic["test_accuracy_curve"] == pytest.approx(record["test_accuracy_curve"])
        test_curve = record["test_accuracy_curve"]
        assert optimistic["selected_epoch"] == test_curve.index(max(test_curve))


@pytest.mark.parametrize(
    "options",
    [
        {"alternation": "in_batch"},
        {"head_gradient_modification": "released", "alpha_schedule": "decay_within_epoch"},
    ],
)
def test_released_options_stack_like_runs_one_at_a_time(options):
    corpus = _separable_corpus()
    rng = np.random.default_rng(0)
    specs = [RunSpec(seed, rng.random((300, 3)) > rate, _split(300)) for seed, rate in ((0, 0.0), (1, 0.4))]
    specs[1].split = {"test": np.arange(0, 80), "val": np.arange(80, 100), "train": np.arange(100, 250)}
    params = _params(epochs=3, optimizer="sgd", momentum=0.9, masked_input="zero_fill")
    params["method_params"]["mla"].update(options)
    stacked = train_runs("mla", corpus, specs, E.method_settings(params, "mla"))
    for spec, record in zip(specs, stacked):
        alone = train_runs("mla", corpus, [spec], E.method_settings(params, "mla"))[0]
        assert alone["train_loss_curve"] == pytest.approx(record["train_loss_curve"], abs=1e-5)
        assert alone["metrics"]["accuracy"] == pytest.approx(record["metrics"]["accuracy"], abs=1e-6)


# ------------------------------------------------------------------------------------------------ params


# the variants the tests configure: the released code's choices at once, and each alone
VARIANTS = {
    "released_code": {
        "mla": {
            "head_gradient_modification": "off",
            "alpha_schedule": "decay_within_epoch",
            "alternation": "in_batch",
            "fusion": "per_batch",
        },
        "train": {"masked_input": "zero_fill", "model_selection": "test"},
        "masks": {"protocol": "cpm"},
    },
    "hgm_released_formula": {"mla": {"head_gradient_modification": "released"}},
    "hgm_off": {"mla": {"head_gradient_modification": "off"}},
    "alpha_decay_within_epoch": {"mla": {"alpha_schedule": "decay_within_epoch"}},
    "in_batch_alternation": {"mla": {"alternation": "in_batch"}},
    "zero_filled_inputs": {"train": {"masked_input": "zero_fill"}},
    "head_update_project_step": {"mla": {"head_update": "project_step"}},
}


def _fidelity_params():
    """The unit tests' config (tests/job_files.py) with the fidelity experiment of VARIANTS."""
    params = unit_params()
    params["fidelity"].update(
        enabled=True, variants=copy.deepcopy(VARIANTS), protocol_methods=["mla", "late_fusion"]
    )
    return params


def test_variants_override_the_paper_default_only_where_they_say():
    params = P.validate(_fidelity_params())
    table = E.by_name(E.experiment_table(params))
    released = E.train_job_config(params, table["released_code"], "mla")
    assert released["method_params"]["mla"]["alternation"] == "in_batch"
    assert released["train"]["model_selection"] == "test" and table["released_code"].masks.protocol == "cpm"
    assert released["train"]["epochs"] == params["train"]["epochs"]
    assert params["method_params"]["mla"]["alternation"] == "per_step"  # the original is untouched
    assert table["masks_cpm"].masks.protocol == "cpm" and not table["masks_cpm"].overrides
    variants = list(params["fidelity"]["variants"])
    hashes = {E.config_hash(E.train_job_config(params, table[v], "mla")) for v in ["main", *variants]}
    assert len(hashes) == 1 + len(variants)  # every variant is its own result
    assert "nope" not in table


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda p: p["fidelity"].update(missing_rates=[0.25]), "fidelity.missing_rates"),
        (
            lambda p: p["fidelity"]["variants"].update(x={"mla": {"fusion": "per_batches"}}),
            "fidelity.variants.x.mla.fusion",
        ),
        (
            lambda p: p["fidelity"]["variants"].update(x={"mla": {"epochs": 3}}),
            "fidelity.variants.x.mla.epochs",
        ),
        (
            lambda p: p["fidelity"]["variants"].update(main={"mla": {"fusion": "fixed"}}),
            "fidelity.variants.main",
        ),
        (
            lambda p: p["fidelity"]["variants"].update(isolate_text={"mla": {"fusion": "fixed"}}),
            "fidelity.variants.isolate_text",
        ),
        (lambda p: p.update(methods=["late_fusion"]), "methods"),
        (
            lambda p: p["method_params"]["mla"].update(head_gradient_modification="released_code"),
            "method_params.mla.head_gradient_modification",
        ),
        (lambda p: p["train"].update(model_selection="best"), "train.model_selection"),
    ],
)
def test_wrong_fidelity_params_name_the_key(mutate, key):
    params = _fidelity_params()
    mutate(params)
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        P.validate(params)
