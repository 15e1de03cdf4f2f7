import numpy as np
import pytest
import torch
from job_files import unit_config

from mlaflow.methods import build_method
from mlaflow.methods.base import RunGroup
from mlaflow.methods.late_fusion import LateFusion
from mlaflow.methods.optim import StackedOptimizer
from mlaflow.pipeline import experiments as E
from mlaflow.train.data import Corpus
from mlaflow.train.loop import RunSpec, train_epoch, train_runs


def train_run(method, corpus, present, split, params, seed):
    return train_runs(method, corpus, [RunSpec(seed, present, split)], E.method_settings(params, method))[0]


TRAIN_CFG = {"hidden_dim": 8, "dropout": 0.0}


def _group(features, labels, present, n_runs=1, seed=0):
    n = len(labels)
    split = {"train": torch.arange(n), "val": torch.arange(0), "test": torch.arange(0)}
    generators = [torch.Generator().manual_seed(seed + r) for r in range(n_runs)]
    return RunGroup(
        features,
        labels,
        present.expand(n_runs, n, 3).clone(),
        [split] * n_runs,
        generators,
        standardize=False,
    ), generators


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=g) for d in (3, 4, 5)], torch.randint(0, 3, (n,), generator=g)


SGD = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}


def test_late_fusion_modalities_train_independently():
    features, labels = _data()
    other, _ = _data(seed=1)
    present = torch.ones(40, 3, dtype=torch.bool)
    models = []
    for feats in (features, [features[0], other[1], other[2]]):
        data, gens = _group(feats, labels, present)
        model = LateFusion([3, 4, 5], 3, TRAIN_CFG, {}, gens)
        opt = StackedOptimizer(list(model.parameters()), SGD, 1)
        for _ in range(3):
            train_epoch(model, data, opt, 16)
        models.append(model)
    # modality 0's encoder and head do not depend on the other modalities' data
    for a, b in zip(
        list(models[0].encoders[0].parameters()) + list(models[0].heads[0].parameters()),
        list(models[1].encoders[0].parameters()) + list(models[1].heads[0].parameters()),
    ):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(models[0].heads[1].weight, models[1].heads[1].weight)


def test_late_fusion_averages_present_modalities_only():
    features, labels = _data(n=5)
    present = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 0, 1], [0, 0, 0], [1, 1, 0]], dtype=torch.bool)
    features[1][~present[:, 1]] = float("nan")
    data, gens = _group(features, labels, present)
    model = LateFusion([3, 4, 5], 3, TRAIN_CFG, {}, gens).eval()
    pred = model.predict(data, data.padded([torch.arange(5)]))
    u, fused = pred.unimodal_logits[0], pred.fused_logits[0]
    assert torch.allclose(fused[0], u[:, 0].mean(0))
    assert torch.allclose(fused[1], (u[0, 1] + u[2, 1]) / 2)
    assert torch.allclose(fused[2], u[2, 2])
    assert torch.equal(fused[3], torch.zeros(3))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_stacked_optimizer_matches_torch_optim_for_one_run(optimizer):
    torch.manual_seed(0)
    cfg = {"optimizer": optimizer, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}
    weights = torch.randn(1, 4, 3)
    ours = torch.nn.Parameter(weights.clone())
    theirs = torch.nn.Parameter(weights[0].clone())
    opt = StackedOptimizer([ours], cfg, 1)
    ref = (
        torch.optim.SGD([theirs], lr=0.05, momentum=0.9, weight_decay=0.01)
        if optimizer == "sgd"
        else torch.optim.Adam([theirs], lr=0.05, weight_decay=0.01)
    )
    for step in range(5):
        grad = torch.randn(4, 3)
        ours.grad, theirs.grad = grad.unsqueeze(0).clone(), grad.clone()
        opt.step({ours: torch.tensor([True])})
        ref.step()
        assert torch.allclose(ours[0], theirs, atol=1e-6), step


def test_stacked_optimizer_leaves_inactive_runs_untouched():
    p = torch.nn.Parameter(torch.ones(3, 2))
    opt = StackedOptimizer([p], {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.1}, 3)
    for _ in range(3):
        p.grad = torch.ones(3, 2)
        opt.step({p: torch.tensor([True, False, True])})
    assert torch.equal(p[1], torch.ones(2))  # no step, no momentum drift, no weight decay
    assert torch.allclose(p[0], p[2]) and not torch.equal(p[0], torch.ones(2))


def _separable_corpus(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    centers = [torch.randn(4, d, generator=g) for d in (6, 5, 7)]
    strength = (1.5, 0.2, 3.0)  # modality 1 nearly uninformative, modality 2 strong
    features = [c[labels] * s + torch.randn(n, c.shape[1], generator=g) for c, s in zip(centers, strength)]
    return Corpus(
        [f"u{i}" for i in range(n)], features, labels, ["a", "b", "c", "d"], {}, ["audio", "visual", "text"]
    )


def _params(**train):
    """The unit tests' config (the schema's defaults: tests/job_files.py) with a short training."""
    params = unit_config()
    params["train"].update({"epochs": 20, "hidden_dim": 16, "optimizer": "adam", "lr": 0.01, **train})
    return params


def _split(n):
    return {"test": np.arange(0, 60), "val": np.arange(60, 100), "train": np.arange(100, n)}


def test_both_methods_learn_a_separable_problem():
    corpus = _separable_corpus()
    present = np.ones((300, 3), dtype=bool)
    for method in ("mla", "late_fusion"):
        record = train_run(method, corpus, present, _split(300), _params(), seed=0)
        assert record["metrics"]["accuracy"] > 0.8, method
        assert record["metrics"]["per_modality_accuracy"]["text"] > 0.7  # the strong modality alone
        assert record["train_loss_curve"][-1] < record["train_loss_curve"][0]


def test_model_selection_never_looks_at_test_labels():
    corpus = _separable_corpus()
    present = np.random.default_rng(0).random((300, 3)) > 0.3
    split = _split(300)
    a = train_run("mla", corpus, present, split, _params(epochs=6), seed=1)
    shuffled = _separable_corpus()
    shuffled.labels[split["test"]] = shuffled.labels[split["test"]].flip(0)
    b = train_run("mla", shuffled, present, split, _params(epochs=6), seed=1)
    assert a["validation"] == b["validation"]  # same curve and same chosen epoch
    assert a["metrics"]["accuracy"] != b["metrics"]["accuracy"]


@pytest.mark.parametrize("method", ["mla", "late_fusion"])
def test_stacked_runs_equal_runs_one_at_a_time(method):
    corpus = _separable_corpus()
    rng = np.random.default_rng(0)
    specs = [
        RunSpec(seed, rng.random((300, 3)) > rate, _split(300))
        for seed, rate in ((0, 0.0), (1, 0.3), (2, 0.6))
    ]
    specs[2].split = {"test": np.arange(0, 80), "val": np.arange(80, 100), "train": np.arange(100, 250)}
    params = _params(epochs=4, optimizer="sgd", momentum=0.9, dropout=0.2)
    stacked = train_runs(method, corpus, specs, E.method_settings(params, method))
    for spec, record in zip(specs, stacked):
        alone = train_runs(method, corpus, [spec], E.method_settings(params, method))[0]
        assert alone["validation"]["accuracy_curve"] == pytest.approx(
            record["validation"]["accuracy_curve"], abs=1e-6
        )
        assert alone["train_loss_curve"] == pytest.approx(record["train_loss_curve"], abs=1e-5)
        assert alone["metrics"]["accuracy"] == pytest.approx(record["metrics"]["accuracy"], abs=1e-6)


def test_all_missing_test_samples_count_as_prior_predictions():
    corpus = _separable_corpus()
    present = np.ones((300, 3), dtype=bool)
    present[:30] = False  # half of the test split has no modality
    record = train_run("late_fusion", corpus, present, _split(300), _params(), seed=0)
    assert record["metrics"]["share_all_missing"] == 0.5
    assert record["metrics"]["n"] == 60
    prior = record["prior_class"]
    labels = corpus.labels[:30]
    best_possible = (30 + int((labels == corpus.class_names.index(prior)).sum())) / 60
    assert record["metrics"]["accuracy"] <= best_possible + 1e-9


def test_unknown_method_is_a_clear_error():
    from mlaflow.errors import ParamsError

    with pytest.raises(ParamsError, match="unknown method 'no_such_method'"):
        build_method("no_such_method", [3], 2, _params(), [torch.Generator()])


# ---- bad input at the training boundary: features that do not match the manifest


def _write_inputs(tmp_path, ids_per_modality, labels_per_modality=None, nan_in=None):
    import h5py
    import pandas as pd

    ids = ["u0", "u1", "u2"]
    pd.DataFrame(
        {
            "utterance_id": ids,
            "label": ["neu", "hap", "sad"],
            "label_index": [0, 1, 2],
            "frames_dir": "",
            "n_frames": 0,
        }
    ).to_csv(tmp_path / "manifest.csv", index=False)
    params = _params()
    paths = {}
    for modality in ("audio", "visual", "text"):
        dim = params["features"][modality]["dim"]
        store_ids = ids_per_modality.get(modality, ids)
        features = np.ones((len(store_ids), dim), dtype=np.float32)
        if nan_in == modality:
            features[1, 0] = np.nan
        labels = (labels_per_modality or {}).get(modality, ["neu", "hap", "sad"][: len(store_ids)])
        paths[modality] = tmp_path / f"{modality}.h5"
        with h5py.File(paths[modality], "w") as f:
            f.create_dataset("ids", data=store_ids, dtype=h5py.string_dtype())
            f.create_dataset("features", data=features)
            f.create_dataset("labels", data=labels, dtype=h5py.string_dtype())
            f.attrs.update(modality=modality, complete=True, dim=dim)
    return tmp_path / "manifest.csv", paths, params


def _load(manifest, paths, params):
    """load_corpus on _write_inputs' files: the four IEMOCAP classes, the stores' modalities and dims."""
    from mlaflow.train.data import load_corpus

    return load_corpus(
        manifest,
        paths,
        ["neu", "hap", "sad", "ang"],
        list(paths),
        {m: params["features"][m]["dim"] for m in paths},
    )


def test_ids_that_do_not_match_across_modalities_name_the_file(tmp_path):
    import pytest

    from mlaflow.errors import InputError

    manifest, paths, params = _write_inputs(tmp_path, {"visual": ["u0", "u1", "x9"]})
    with pytest.raises(
        InputError, match=r"visual\.h5.*1 utterances of the manifest have no features \(first: u2\)"
    ):
        _load(manifest, paths, params)


def test_labels_that_disagree_with_the_manifest_name_the_file(tmp_path):
    import pytest

    from mlaflow.errors import InputError

    manifest, paths, params = _write_inputs(tmp_path, {}, labels_per_modality={"text": ["neu", "ang", "sad"]})
    with pytest.raises(InputError, match=r"text\.h5.*labels disagree.*u1"):
        _load(manifest, paths, params)


def test_nan_features_are_refused_before_training(tmp_path):
    import pytest

    from mlaflow.errors import InputError

    manifest, paths, params = _write_inputs(tmp_path, {}, nan_in="audio")
    with pytest.raises(InputError, match=r"audio\.h5.*u1"):
        _load(manifest, paths, params)


def test_the_modality_order_is_the_corpus_list_never_a_json_objects_key_order(tmp_path):
    """A job config is JSON written with sorted keys: {"audio", "text", "visual"}. The features, the masks'
    columns and the method's encoders must all follow the corpus's modality list (audio, visual, text)."""
    import json

    from mlaflow.train.data import load_corpus

    manifest, paths, params = _write_inputs(tmp_path, {})
    dims = json.loads(
        json.dumps({m: params["features"][m]["dim"] for m in ("audio", "visual", "text")}, sort_keys=True)
    )
    assert list(dims) == ["audio", "text", "visual"]
    corpus = load_corpus(manifest, paths, ["neu", "hap", "sad", "ang"], ["audio", "visual", "text"], dims)
    assert corpus.modalities == ["audio", "visual", "text"]
    assert corpus.input_dims == [params["features"][m]["dim"] for m in ("audio", "visual", "text")]
