"""Toy data shared by the method tests (test_baselines, test_correlation, test_imputation, test_cpm_tate): a
separable three-modality problem, RunGroups of stacked runs over it, masks with every pattern of missing
modalities, the methods' options and the optimiser settings the tests train with."""

from __future__ import annotations

import torch
from job_files import unit_config, unit_params

from mlaflow.methods.base import RunGroup
from mlaflow.train.loop import train_epoch

# every method's options as the unit tests build it: the schema's defaults (tests/job_files.py), not
# params.yaml's; a test whose numbers follow an option states that option itself
METHOD_PARAMS = unit_config()["method_params"]
DIMS = (3, 4, 5)  # audio, visual, text
NAMED_DIMS = dict(zip(("audio", "visual", "text"), DIMS))  # how methods are built: their modalities by name
N_CLASSES = 3
SGD = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}
ADAM = {"optimizer": "adam", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0}


def toy(n=60, seed=0, dims=DIMS, strength=(1.5, 0.5, 3.0)):
    """Separable toy data: each modality carries the label (by default text most, visual least) plus noise:
    a class centre times the modality's strength, plus unit Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, N_CLASSES, (n,), generator=g)
    features = [
        torch.randn(N_CLASSES, d, generator=g)[labels] * s + torch.randn(n, d, generator=g)
        for d, s in zip(dims, strength)
    ]
    return features, labels


def group(features, labels, present, train_rows, seeds, standardize=False):
    """A RunGroup of len(seeds) runs; present [R, N, M]; train_rows: one row list per run (no val/test rows)."""
    splits = [{"train": rows, "val": rows[:0], "test": rows[:0]} for rows in train_rows]
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return RunGroup(features, labels, present, splits, generators, standardize=standardize), generators


def mask(n, rate, seed):
    """A random mask with some audio-only samples and some with nothing."""
    present = torch.rand(n, 3, generator=torch.Generator().manual_seed(seed)) > rate
    present[torch.arange(n) % 7 == 0] = torch.tensor([True, False, False])
    present[torch.arange(n) % 11 == 0] = False
    return present


def all_patterns(n):
    """Every one of the 8 presence patterns, cyclically (nothing, one, two, all three present)."""
    codes = torch.arange(n) % 8
    return torch.stack([(codes >> m) & 1 == 1 for m in range(3)], dim=1)


def assert_stacked_equals_alone(
    build, n=50, second_rows=(10, 40), epochs=3, standardize=False, atol=1e-5, buffers=False, embeddings=False
):
    """Train two runs stacked and each alone (different masks, seeds and training sizes: the second run has fewer
    batches) with `build(generators) -> Method`; assert equal losses, parameters, predictions (and, if asked,
    buffers and embeddings) run by run."""
    from mlaflow.methods.optim import StackedOptimizer

    features, labels = toy(n=n)
    masks = [mask(n, 0.2, 1), mask(n, 0.5, 2)]
    train_rows = [torch.arange(n), torch.arange(*second_rows)]
    seeds = [3, 4]

    def train(runs):
        data, gens = group(
            features,
            labels,
            torch.stack([masks[r] for r in runs]),
            [train_rows[r] for r in runs],
            [seeds[r] for r in runs],
            standardize=standardize,
        )
        model = build(gens)
        opt = StackedOptimizer(list(model.parameters()), SGD, len(runs))
        losses = [train_epoch(model.train(), data, opt, 8) for _ in range(epochs)]
        batch = data.padded([torch.arange(n)] * len(runs))
        pred = model.eval().predict(data, batch)
        return model, torch.stack(losses, 1), pred, model.embeddings(data, batch)

    stacked, stacked_losses, stacked_pred, stacked_emb = train([0, 1])
    for r in range(2):
        alone, alone_losses, alone_pred, alone_emb = train([r])
        assert torch.allclose(stacked_losses[r], alone_losses[0], atol=atol)
        for (key, p), q in zip(stacked.named_parameters(), alone.parameters()):
            assert torch.allclose(p[r], q[0], atol=atol), key
        if buffers:
            for (key, p), q in zip(stacked.named_buffers(), alone.buffers()):
                assert torch.allclose(p[r], q[0], atol=atol), key
        assert torch.allclose(stacked_pred.fused_logits[r], alone_pred.fused_logits[0], atol=atol)
        assert torch.allclose(stacked_pred.unimodal_logits[r], alone_pred.unimodal_logits[0], atol=atol)
        if embeddings:
            assert torch.allclose(stacked_emb[r], alone_emb[0], atol=atol)


def poisoned(features, present, poison):
    """Copies of the features with every masked cell (present [N, M] False) set to `poison` (NaN, 1e4, ...)."""
    out = [x.clone() for x in features]
    for m in range(len(out)):
        out[m][~present[:, m]] = poison
    return out


def options_error(method: str, **options) -> str:
    """The ParamsError message of the unit tests' config (`unit_params`) with `method_params.<method>` updated by
    `options`: an option's type and range are checked once, by the schema, before any job starts."""
    import pytest

    from mlaflow.errors import ParamsError
    from mlaflow.pipeline import params as P

    params = unit_params()
    params["method_params"][method].update(options)
    with pytest.raises(ParamsError) as err:
        P.validate(params)
    return str(err.value)
