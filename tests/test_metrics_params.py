import copy

import pytest
import torch
import yaml
from job_files import unit_params

from mlaflow.errors import ParamsError
from mlaflow.pipeline import params as P
from mlaflow.train.metrics import classification_metrics


def test_metrics_hand_computed():
    y_true = torch.tensor([0, 0, 0, 1, 1, 2])
    y_pred = torch.tensor([0, 0, 1, 1, 2, 2])
    m = classification_metrics(y_true, y_pred, 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # recalls 2/3, 1/2, 1 -> UA = 13/18
    assert m["unweighted_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # precisions 1, 1/2, 1/2; F1s 0.8, 0.5, 2/3
    f1 = [0.8, 0.5, 2 / 3]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert m["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)


def _params():
    """The unit tests' config, as a config file states it (the schema's defaults: tests/job_files.py)."""
    return unit_params()


def test_shipped_params_are_valid():
    P.validate(yaml.safe_load((P.REPO_ROOT / "params.yaml").read_text()))


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda p: p["train"].update(epoch=3), "train.epoch"),
        (lambda p: p["train"].update(lr="fast"), "train.lr"),
        (lambda p: p.update(methods=["mla", "magic"]), "methods.1"),
        (lambda p: p["masks"].update(missing_rates=[0.1, 1.5]), "masks.missing_rates.1"),
        (
            lambda p: p["method_params"]["mla"].update(head_gradient_modification="sometimes"),
            "method_params.mla.head_gradient_modification",
        ),
        (lambda p: p["features"]["audio"].update(dim=0), "features.audio.dim"),
    ],
)
def test_wrong_key_or_value_names_the_key(mutate, key):
    params = copy.deepcopy(_params())
    mutate(params)
    with pytest.raises(ParamsError) as err:
        P.validate(params)
    assert f"`{key}`" in str(err.value)


def test_method_without_its_params_gets_their_defaults():
    # every method's options have schema defaults: an omitted method_params entry is filled, not refused
    params = _params()
    del params["method_params"]["late_fusion"], params["method_params"]["mla"]
    filled = P.validate(params)
    assert filled["method_params"]["late_fusion"] == {}
    assert filled["method_params"]["mla"] == P.validate(_params())["method_params"]["mla"]


def test_a_training_jobs_config_holds_only_what_the_job_computes_from():
    from mlaflow.keys import config_hash, format_rate, rate_key
    from mlaflow.pipeline import experiments as E

    def mla_hash(params):
        params = P.validate(params)
        return config_hash(E.train_job_config(params, E.by_name(E.experiment_table(params))["main"], "mla"))

    params = _params()
    h = mla_hash(params)
    params["report"]["paper_results"] = "elsewhere.yaml"
    params["method_params"]["tate"]["heads"] = 2  # another method's option
    params["runtime"] = {"job_group": "run", "device": "cpu", "batch_runs": False}  # how and where it runs
    assert mla_hash(params) == h
    params["train"]["lr"] = 0.5
    assert mla_hash(params) != h
    assert rate_key(0.3) == "r30" and format_rate(0.3) == "0.30"


def test_git_commit_is_dirty_for_code_changes_but_not_for_the_pipelines_own_outputs(tmp_path, monkeypatch):
    import subprocess

    from mlaflow import provenance

    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )

    (tmp_path / "reports").mkdir()
    for name in ("code.py", "dvc.lock", "reports/metrics.json"):
        (tmp_path / name).write_text("0\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "init")
    monkeypatch.setattr(provenance, "REPO_ROOT", tmp_path)
    clean = provenance.git_commit.__wrapped__()
    assert len(clean) == 12 and "dirty" not in clean
    (tmp_path / "dvc.lock").write_text("1\n")
    (tmp_path / "reports/metrics.json").write_text("1\n")
    assert provenance.git_commit.__wrapped__() == clean
    (tmp_path / "code.py").write_text("1\n")
    assert provenance.git_commit.__wrapped__() == f"{clean}-dirty"


def test_atomic_path_removes_the_temporaries_of_a_killed_earlier_attempt(tmp_path):
    from mlaflow.io import atomic_path, write_json

    stale_dir = tmp_path / ".corpus.abc123.tmp"  # a directory output, killed mid-write
    (stale_dir / "sub").mkdir(parents=True)
    stale_file = tmp_path / ".run.json.xyz.tmp.json"  # a file output, killed mid-write
    stale_file.write_text("{")
    other = tmp_path / ".other.json.q.tmp.json"  # another output's temporary: left alone
    other.write_text("{")
    with atomic_path(tmp_path / "corpus") as tmp:
        tmp.mkdir()
    write_json(tmp_path / "run.json", {"a": 1})
    assert not stale_dir.exists() and not stale_file.exists() and other.exists()
    assert (tmp_path / "corpus").is_dir() and (tmp_path / "run.json").read_text().startswith("{")
