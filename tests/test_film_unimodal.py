"""FiLM's unimodal evaluation (film.py): a modulated modality is evaluated with the condition deactivated
by its training-mean embedding, not by zeros (zeros leave gamma, beta at the FiLM layer's biases, which
gave a constant predictor); the mean reads only the observed training cells of each run."""

import copy

import numpy as np
import pytest
import torch
from method_toys import METHOD_PARAMS, NAMED_DIMS, SGD, assert_stacked_equals_alone, poisoned, toy

from mlaflow.methods import method_class
from mlaflow.methods.base import RunGroup
from mlaflow.methods.joint import JointFusion
from mlaflow.methods.optim import StackedOptimizer
from mlaflow.train.loop import train_epoch

MODALITIES = ("audio", "visual", "text")
DIMS = (6, 6, 6)
TOY_DIMS = dict(zip(MODALITIES, DIMS))
N_CLASSES = 3
FILM = {**METHOD_PARAMS["film"], "condition": "text"}  # the tests' condition: text


def _toy(n, seed=0):
    """Audio carries the label strongly, text (the condition) some, visual nothing."""
    return toy(n, seed, dims=DIMS, strength=(1.5, 0.0, 0.8))


def _split(n):
    idx = np.arange(n)
    return {"test": idx[: n // 3], "val": idx[n // 3 : n // 2], "train": idx[n // 2 :]}


def _build(generators, hidden=8, dropout=0.0, dims=TOY_DIMS, **options):
    return method_class("film")(
        dict(dims), N_CLASSES, {"hidden_dim": hidden, "dropout": dropout}, {**FILM, **options}, generators
    )


def _group(features, labels, present, splits, seeds, masked_input="skip"):
    """A standardised RunGroup of len(seeds) runs; present [R, N, M]; splits: one {role: rows} per run."""
    splits = [{k: torch.as_tensor(v) for k, v in s.items()} for s in splits]
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return RunGroup(features, labels, present, splits, generators, True, masked_input), generators


def _majority_share(labels):
    return float(torch.bincount(labels, minlength=N_CLASSES).max()) / len(labels)


@pytest.fixture(scope="module")
def trained():
    """FiLM (text the condition) trained on the toy, two runs stacked; the test rows' batch."""
    n = 300
    features, labels = _toy(n)
    split = _split(n)
    data, gens = _group(features, labels, torch.ones(2, n, 3, dtype=torch.bool), [split] * 2, [0, 1])
    model = _build(gens, hidden=32)
    opt = StackedOptimizer(list(model.parameters()), SGD, 2)
    for _ in range(20):
        train_epoch(model.train(), data, opt, 32)
    return model.eval(), data, data.padded([torch.as_tensor(split["test"])] * 2)


def test_a_modulated_modality_is_not_a_constant_predictor(trained):
    model, data, test = trained
    pred = model.predict(data, test)
    for r in range(2):
        audio, labels = pred.unimodal_logits[r, 0].argmax(-1), test.labels[r]
        # zero-filling the condition gave 0.93 (run 0) and 0.58 (run 1) here, majority share 0.40
        assert len(audio.unique()) == N_CLASSES
        assert float((audio == labels).float().mean()) > _majority_share(labels) + 0.3


def test_the_condition_is_deactivated_by_its_training_mean(trained):
    model, data, test = trained
    pred = model.predict(data, test)
    train = data.padded(data.rows("train"))
    with torch.no_grad():
        mean = model.encoders[2](data.inputs(2, train.idx, train.valid)).mean(dim=1)  # [R, s], all observed
        assert torch.allclose(model.condition_training_mean(data), mean, atol=1e-5)
        present = data.present_at(test.idx, test.valid)
        h = model.embed(data, test, present)
        gamma, beta = model.film_parameters(mean.unsqueeze(1).expand(-1, h.shape[2], -1))
        for m in (0, 1):
            only_m = torch.zeros_like(h)
            only_m[:, m] = h[:, m]
            expected = model.modulate_and_classify(only_m, gamma, beta)
            assert torch.allclose(pred.unimodal_logits[:, m], expected, atol=1e-5)
        # the generic deactivation (zeros for the condition) gives other logits; the condition's own
        # unimodal evaluation is that one, unchanged
        zero_filled = JointFusion.unimodal(model, h, present)
        assert not torch.allclose(zero_filled[:, 0], pred.unimodal_logits[:, 0], atol=1e-3)
        assert torch.allclose(zero_filled[:, 2], pred.unimodal_logits[:, 2], atol=1e-6)
        assert len(pred.unimodal_logits[0, 2].argmax(-1).unique()) > 1  # not constant either


def test_zero_filling_the_condition_is_a_constant_predictor_where_the_mean_is_not(trained):
    """With the gamma half of the FiLM layer's bias at zero, a zero-filled condition gives gamma = 0: every
    sample gets the same logits whatever its audio. The training mean keeps gamma, and the audio."""
    model, data, test = copy.deepcopy(trained[0]), trained[1], trained[2]
    with torch.no_grad():
        model.film.bias[:, : model.hidden_dim] = 0.0
        present = data.present_at(test.idx, test.valid)
        zero_filled = JointFusion.unimodal(model, model.embed(data, test, present), present)[:, 0]
    assert torch.allclose(zero_filled, zero_filled[:, :1].expand_as(zero_filled))
    pred = model.predict(data, test)
    for r in range(2):
        audio, labels = pred.unimodal_logits[r, 0].argmax(-1), test.labels[r]
        assert len(audio.unique()) > 1
        assert float((audio == labels).float().mean()) > _majority_share(labels) + 0.3


@pytest.mark.parametrize("masked_input", ["skip", "zero_fill"])
def test_the_training_mean_reads_only_observed_training_cells(masked_input):
    n = 60
    features, labels = _toy(n, seed=1)
    present = torch.rand(n, 3, generator=torch.Generator().manual_seed(2)) > 0.4
    present[::5] = torch.tensor([True, False, False])  # audio-only rows: the condition masked
    split = _split(n)
    outputs = []
    for poison in (float("nan"), 1e4):
        poisoned_features = poisoned(features, present, poison)
        data, gens = _group(poisoned_features, labels, present.unsqueeze(0), [split], [0], masked_input)
        model = _build(gens)
        opt = StackedOptimizer(list(model.parameters()), SGD, 1)
        for _ in range(2):
            train_epoch(model.train(), data, opt, 8)
        model.eval()
        everything = data.padded([torch.arange(n)])
        pred = model.predict(data, everything)
        assert torch.isfinite(pred.unimodal_logits).all() and torch.isfinite(pred.fused_logits).all()
        outputs.append((model, data, pred))
    (model, data, pred), (_, _, pred_big) = outputs
    assert torch.equal(pred.unimodal_logits, pred_big.unimodal_logits)

    # only training rows count: changing the condition's features elsewhere changes no unimodal logit of a
    # modulated modality, on any row; changing them on the (observed) training rows does
    def audio_logits_with_text(text):
        changed = RunGroup(
            [data.features[0], data.features[1], text],
            labels,
            present.unsqueeze(0),
            data.splits,
            data.generators,
            True,
            masked_input=masked_input,
        )
        return model.predict(changed, data.padded([torch.arange(n)])).unimodal_logits[0, 0]

    text = data.features[2].clone()
    elsewhere = torch.as_tensor(np.concatenate([split["val"], split["test"]]))
    text[elsewhere] = text[elsewhere] * 3.0 + 5.0
    assert torch.equal(audio_logits_with_text(text), pred.unimodal_logits[0, 0])
    text = data.features[2].clone()
    text[torch.as_tensor(split["train"][::2])] += 3.0  # not a uniform shift, which standardisation undoes
    assert not torch.allclose(audio_logits_with_text(text), pred.unimodal_logits[0, 0], atol=1e-4)
    if masked_input == "skip":  # the mean is over the training rows with the condition present
        train = torch.as_tensor(split["train"])
        rows = train[present[train, 2]]
        with torch.no_grad():
            h = model.encoders[2](data.inputs(2, rows.unsqueeze(0), torch.ones(1, len(rows), dtype=bool)))
        assert torch.allclose(model.condition_training_mean(data), h.mean(dim=1), atol=1e-5)


@pytest.mark.parametrize("condition", ["text", "audio"])
def test_stacked_runs_equal_runs_one_at_a_time(condition):
    assert_stacked_equals_alone(lambda gens: _build(gens, dropout=0.2, dims=NAMED_DIMS, condition=condition))
    # each run's mean comes from its own rows, mask and encoder
    n = 50
    features, labels = _toy(n)
    masks = [torch.rand(n, 3, generator=torch.Generator().manual_seed(s)) > 0.3 for s in (0, 1)]
    splits = [_split(n), {"train": np.arange(10, 30), "val": np.arange(0), "test": np.arange(0)}]
    seeds = [3, 4]
    stacked_data, gens = _group(features, labels, torch.stack(masks), splits, seeds)
    stacked = _build(gens, condition=condition).eval().condition_training_mean(stacked_data)
    for r in range(2):
        data, gens = _group(features, labels, masks[r].unsqueeze(0), [splits[r]], [seeds[r]])
        alone = _build(gens, condition=condition).eval().condition_training_mean(data)
        assert torch.allclose(stacked[r], alone[0], atol=1e-6)
    assert not torch.allclose(stacked[0], stacked[1], atol=1e-3)
