"""What survives what (issue 15): damaged outputs are named wherever they are produced or read, missing rates
name their files exactly, a training job fails before training when it cannot write and keeps its finished runs
when it fails later, extraction stops naming the file when a write fails, and a wav cut short is bad input.
Killing a job's shell stops its trainer, and a rerun never runs beside a live earlier attempt (issue 22)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile
import yaml
from job_files import (
    BERNOULLI,
    CLASSES,
    CPU_ONE_AT_A_TIME,
    DIMS,
    NAMES,
    small_params,
    train_config,
    unit_params,
    write_job_files,
)

import mlaflow
from mlaflow.data.masks import bernoulli_mask, write_masks
from mlaflow.errors import InputError, ParamsError
from mlaflow.features.audio_io import declared_wav_frames, read_wave, wav_length
from mlaflow.features.store import FeatureStoreWriter, read_store
from mlaflow.io import write_json
from mlaflow.pipeline import experiments as E
from mlaflow.pipeline import params as P
from mlaflow.pipeline.integrity import verify
from mlaflow.train import job as job_module
from mlaflow.train.job import run_training_job
from mlaflow.tune import study as study_module

# ------------------------------------------------------------------------------------------ missing rates


@pytest.mark.parametrize(
    "rates, message",
    [
        ([0.0, 0.333], r"masks\.missing_rates.*0\.333 has more than two decimals"),
        ([0.0, 0.3, 0.30000001], r"masks\.missing_rates.*0\.30000001 has more than two decimals"),
    ],
)
def test_a_missing_rate_must_be_what_its_file_name_says(rates, message):
    params = unit_params()
    params["masks"]["missing_rates"] = rates
    with pytest.raises(ParamsError, match=message):
        P.validate(params)


def test_paths_the_config_points_at_are_checked_at_parse_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = unit_params()
    params["features"]["audio"]["precomputed"] = "no/such/store.h5"
    with pytest.raises(ParamsError, match=r"features\.audio\.precomputed.*does not exist"):
        P.validate(params)
    params = unit_params()
    params["features"]["text"]["model"] = "no/such/bert"
    with pytest.raises(ParamsError, match=r"features\.text\.model.*not a model directory"):
        P.validate(params)
    params = unit_params()
    params["corpus"].update(kind="iemocap", root="no/such/IEMOCAP_full_release")
    with pytest.raises(ParamsError, match=r"corpus\.root.*not a directory"):
        P.validate(params)


# ------------------------------------------------------------------------------------------ damaged outputs


def _store(path: Path, ids, dim=4, modality="audio") -> Path:
    with FeatureStoreWriter(
        path, ids, ["neu"] * len(ids), dim, {"modality": modality, "params_hash": "x"}
    ) as w:
        w.write(np.arange(len(ids)), np.ones((len(ids), dim), np.float32))
        w.finish()
    return path


def _truncate_keeping_mtime(path: Path) -> None:
    stat = path.stat()
    with open(path, "r+b") as f:
        f.truncate(stat.st_size // 2)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_truncated_feature_store_is_named_where_it_is_read_and_by_verify(tmp_path):
    store = _store(tmp_path / "features" / "audio.h5", [f"u{i}" for i in range(200)], dim=64)
    (tmp_path / "features" / "audio.config.json").write_text("{}")
    assert verify([str(tmp_path / "features")]) == 2
    _truncate_keeping_mtime(store)
    with pytest.raises(InputError, match=r"audio\.h5: not a readable HDF5 file"):
        read_store(store)
    with pytest.raises(
        InputError, match=r"1 output file\(s\) are damaged: .*audio\.h5.*Fix: delete the damaged"
    ):
        verify([str(tmp_path / "features")])


def test_verify_names_a_store_that_misses_utterances_of_the_manifest_and_damaged_json(tmp_path):
    (tmp_path / "manifest").mkdir()
    pd.DataFrame({"utterance_id": ["u0", "u1", "u2"]}).to_csv(
        tmp_path / "manifest" / "manifest.csv", index=False
    )
    _store(tmp_path / "features" / "audio.h5", ["u0", "u1"])
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "run.json").write_text('{"metrics": ')
    with pytest.raises(InputError) as err:
        verify([str(tmp_path / "manifest"), str(tmp_path / "features"), str(tmp_path / "runs")])
    assert "2 output file(s) are damaged" in str(err.value)
    assert "audio.h5: holds 2 rows, the manifest 3 utterances" in str(err.value) and "run.json" in str(
        err.value
    )


def test_verify_checks_each_store_against_its_own_workflows_manifest(tmp_path):
    """The table1 stage's folder holds one workflow per corpus (data/table1/<kind>/data/...): a store is checked
    against the manifest of the workflow it belongs to, not the first manifest found."""
    for kind, n in (("embedded_cremad", 3), ("embedded_ks", 4)):
        data = tmp_path / "table1" / kind / "data"
        (data / "manifest").mkdir(parents=True)
        ids = [f"{kind}_{i}" for i in range(n)]
        pd.DataFrame({"utterance_id": ids}).to_csv(data / "manifest" / "manifest.csv", index=False)
        _store(data / "features" / "audio.h5", ids)
    assert verify([str(tmp_path / "table1")]) == 4
    _store(tmp_path / "table1" / "embedded_ks" / "data" / "features" / "audio.h5", ["embedded_ks_0"])
    with pytest.raises(
        InputError, match=r"1 output file\(s\).*embedded_ks/data/features/audio.h5: holds 1 rows"
    ):
        verify([str(tmp_path / "table1")])


def test_the_report_names_a_damaged_feature_store(tmp_path):
    from mlaflow.report.context import feature_provenance

    store = _store(tmp_path / "audio.h5", [f"u{i}" for i in range(200)], dim=64)
    _truncate_keeping_mtime(store)
    with pytest.raises(InputError, match=r"audio\.h5: cannot be read as a feature store.*dvc repro"):
        feature_provenance([str(store)])


def test_every_dvc_stage_settles_then_verifies_exactly_its_outputs():
    stages = yaml.safe_load((P.REPO_ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        settle, snakemake, verify_cmd = stage["cmd"].split(" && ")
        assert settle == "mlaflow settle" and snakemake == f"snakemake {name}"
        assert verify_cmd.startswith("mlaflow verify ")
        checked = set(verify_cmd.split()[2:])
        outs = {
            next(iter(o)) if isinstance(o, dict) else o
            for key in ("outs", "metrics", "plots")
            for o in stage.get(key, [])
        }
        outs = {
            o for o in outs if not o.endswith(".png") and o != "data/corpus"
        }  # images and wavs: not read back
        covered = {o for o in outs if any(o == c or o.startswith(c.rstrip("/") + "/") for c in checked)}
        assert covered == outs, (name, outs - covered)


# ------------------------------------------------------------------------------------------ a training job


@pytest.fixture
def job_inputs(tmp_path):
    """A tiny corpus as files (manifest, three stores, folds, masks) and a training job's config."""
    args = write_job_files(tmp_path)
    config = train_config(small_params())
    outputs = [
        str(tmp_path / "runs" / "late_fusion" / "missing_0.30" / f"seed{s}_fold{f}.json") for _, s, f in RUNS
    ]
    return config, args, outputs


RUNS = [("0.30", 0, 1), ("0.30", 0, 2), ("0.30", 1, 1), ("0.30", 1, 2)]  # (missing rate, seed, fold)


def _run(config, files, outputs):
    run_training_job(config, files, RUNS, outputs, CPU_ONE_AT_A_TIME)


def _resume_folder(outputs) -> Path:
    """Where the job keeps its finished runs and its lock: beside the method's folder (train.job.resume_path)."""
    return job_module.resume_path(outputs[0], "x").parent


def test_a_job_that_cannot_write_fails_before_training(job_inputs, tmp_path, monkeypatch):
    config, args, _ = job_inputs
    (tmp_path / "blocked").write_text("a file where the runs' folder should be")
    trained = []
    monkeypatch.setattr(job_module, "train_runs", lambda *a, **k: trained.append(a) or [])
    with pytest.raises(
        InputError,
        match=r"blocked/\.done/m/missing_0\.30: cannot write the runs' results here.*nothing was trained",
    ):
        _run(
            config,
            args,
            [str(tmp_path / "blocked" / "m" / "missing_0.30" / f"seed{s}_fold{f}.json") for _, s, f in RUNS],
        )
    assert not trained


def test_a_failed_job_keeps_its_finished_runs_and_the_rerun_trains_only_the_rest(job_inputs, monkeypatch):
    config, args, outputs = job_inputs
    real = job_module.train_runs
    calls = []

    def failing_on_the_third(method, corpus, specs, settings, **how):
        calls.append(len(specs))
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(method, corpus, specs, settings, **how)

    monkeypatch.setattr(job_module, "train_runs", failing_on_the_third)
    with pytest.raises(RuntimeError, match="killed"):
        _run(config, args, outputs)
    done = sorted(_resume_folder(outputs).glob("*.json"))
    assert [p.name.split(".")[0] for p in done] == ["seed0_fold1", "seed0_fold2"]  # kept, in a hidden folder
    calls.clear()
    monkeypatch.setattr(job_module, "train_runs", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    _run(config, args, outputs)
    assert calls == [1, 1]  # only the two runs not finished before
    resumed = [json.loads(Path(o).read_text()) for o in outputs]
    # removed once every output is whole (the folder stays: other jobs of the folder may be using it)
    assert not any(_resume_folder(outputs).iterdir())
    for out in outputs:
        Path(out).unlink()
    monkeypatch.setattr(job_module, "train_runs", real)
    _run(config, args, outputs)  # from scratch: the same numbers
    fresh = [json.loads(Path(o).read_text()) for o in outputs]
    for a, b in zip(resumed, fresh):
        assert a["metrics"] == b["metrics"] and a["validation"] == b["validation"]


def test_a_full_disk_while_writing_a_run_names_the_file(job_inputs, monkeypatch):
    config, args, outputs = job_inputs

    def full(path, obj):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(job_module, "write_json", full)
    with pytest.raises(
        InputError, match=r"seed0_fold1\.[0-9a-f]+\.json: cannot be written \(No space left on device\)"
    ):
        _run(config, args, outputs)


# ------------------------------------------------------------------------------------------ a live attempt

# `mlaflow train` whose training waits, once started, until the file argv[2] exists; it first writes its pid to
# argv[1] (so a test knows the job is running, past its checks, and which process trains)
GATED_TRAINER = """
import os, sys, time
from pathlib import Path
from mlaflow.train import job

running, gate = Path(sys.argv[1]), Path(sys.argv[2])
real = job.train_runs

def gated(*args, **kwargs):
    tmp = running.with_name(running.name + ".tmp")
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, running)
    while not gate.exists():
        time.sleep(0.05)
    return real(*args, **kwargs)

job.train_runs = gated
from mlaflow.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _env() -> dict:
    src = str(Path(mlaflow.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}


def _gated_trainer(tmp_path, config, args, outputs) -> list[str]:
    write_json(tmp_path / "train.config.json", config)
    return [
        sys.executable,
        "-c",
        GATED_TRAINER,
        str(tmp_path / "running"),
        str(tmp_path / "go"),
        "train",
        "--config",
        str(tmp_path / "train.config.json"),
        "--manifest",
        args.manifest,
        "--features",
        *args.features,
        "--folds",
        args.folds,
        "--masks",
        *args.masks,
        "--out",
        *outputs,
    ]


def _wait_for(condition, what: str, timeout: float = 60, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(
                f"waited {timeout:g} s for {what}" + (f"; its log:\n{log.read_text()}" if log else "")
            )
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Whether process `pid` runs. A zombie (dead, not yet reaped by whoever adopted it) does not, once its other
    threads have exited too: its main thread turns zombie first, the others still hold its files (and locks)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        return state not in ("Z", "X") or len(os.listdir(f"/proc/{pid}/task")) > 1
    except FileNotFoundError:
        return False


def test_a_rerun_beside_a_live_earlier_attempt_fails_at_once_and_leaves_it_alone(
    job_inputs, tmp_path, monkeypatch
):
    config, args, outputs = job_inputs
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        first = subprocess.Popen(
            _gated_trainer(tmp_path, config, args, outputs), stdout=out, stderr=subprocess.STDOUT, env=_env()
        )
    try:
        _wait_for((tmp_path / "running").exists, "the first attempt to start training", log=log)
        monkeypatch.setattr(job_module, "train_runs", lambda *a, **k: pytest.fail("trained beside it"))
        with pytest.raises(
            InputError,
            match=rf"runs/\.done/late_fusion/missing_0\.30/seed0_fold1\.lock: an earlier attempt of this job \(pid {first.pid}\b.*\) is "
            r"still running\. Fix: wait for it or kill it, then re-run",
        ):
            _run(config, args, outputs)
    finally:
        (tmp_path / "go").touch()
        try:
            first.wait(timeout=120)
        finally:
            first.kill()
    assert first.returncode == 0, log.read_text()
    runs = [json.loads(Path(out).read_text()) for out in outputs]
    assert [(run["seed"], run["fold"]) for run in runs] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert not any(_resume_folder(outputs).iterdir())  # entries and lock removed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_killing_the_shell_of_a_job_stops_its_trainer_and_the_rerun_is_not_blocked(job_inputs, tmp_path):
    config, args, outputs = job_inputs
    log = tmp_path / "first.log"
    # `; true`: bash waits for the trainer instead of exec'ing it, as a Snakemake job's shell may
    command = (
        f"{shlex.join(_gated_trainer(tmp_path, config, args, outputs))} > {shlex.quote(str(log))} 2>&1; true"
    )
    shell = subprocess.Popen(["bash", "-c", command], env=_env())
    trainer = None
    try:
        _wait_for((tmp_path / "running").exists, "the trainer to start training", log=log)
        trainer = int((tmp_path / "running").read_text())
        assert trainer != shell.pid and _alive(trainer)
        shell.send_signal(signal.SIGKILL)
        shell.wait(timeout=30)
        _wait_for(lambda: not _alive(trainer), "the trainer to stop once its shell was killed", 30, log)
    finally:
        shell.kill()
        if trainer is not None and _alive(trainer):
            os.kill(trainer, signal.SIGKILL)
    _run(config, args, outputs)  # the killed attempt's lock does not block the rerun
    assert [json.loads(Path(out).read_text())["fold"] for out in outputs] == [1, 2, 1, 2]
    assert not any(_resume_folder(outputs).iterdir())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_step_whose_parent_died_before_it_could_watch_it_does_not_start(tmp_path):
    code = """
import os, sys, time
from pathlib import Path
from mlaflow import cli

ready, go, outcome = map(Path, sys.argv[1:])
ready.write_text("ready")
while not go.exists():
    time.sleep(0.05)
try:
    cli.die_with_parent()
    result = "went on"
except SystemExit as err:
    result = f"exit: {err}"
except Exception as err:
    result = f"error: {err!r}"
outcome.with_name("tmp").write_text(result)
os.replace(outcome.with_name("tmp"), outcome)
"""
    ready, go, outcome = tmp_path / "ready", tmp_path / "go", tmp_path / "outcome"
    argv = [sys.executable, "-c", code, str(ready), str(go), str(outcome)]
    shell = subprocess.Popen(["bash", "-c", f"{shlex.join(argv)} & wait"], env=_env())
    try:
        _wait_for(ready.exists, "the step to start")
        shell.send_signal(signal.SIGKILL)
        shell.wait(timeout=30)
    finally:
        go.touch()
        shell.kill()
    _wait_for(outcome.exists, "the step to check its parent", 30)
    assert outcome.read_text() == (
        f"exit: mlaflow: the process that started this step (pid {shell.pid}) is gone: not starting"
    )


def test_a_tuning_worker_refuses_to_run_beside_a_live_earlier_attempt(tmp_path, monkeypatch):
    files = write_job_files(tmp_path)
    config = E.tuning_job_config(small_params(), "late_fusion") | {"classes": CLASSES, "feature_dims": DIMS}
    out = tmp_path / "tuning" / "late_fusion" / "worker0.json"
    lock = out.parent / ".done" / "worker0.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:  # an earlier attempt: this process, through another open file
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(f"{os.getpid()} host\n")
        held.flush()
        monkeypatch.setattr(study_module, "load_job_inputs", lambda *a, **k: pytest.fail("tuned beside it"))
        with pytest.raises(
            InputError,
            match=rf"\.done/worker0\.lock: an earlier attempt of this job \(pid {os.getpid()} on host\) is "
            "still running",
        ):
            study_module.run_worker(
                config,
                0,
                files,
                tmp_path / "tuning" / "late_fusion" / "study.journal",
                out,
                CPU_ONE_AT_A_TIME,
            )


# ------------------------------------------------------------------------------------------ extraction


def test_a_failed_write_during_extraction_stops_it_naming_the_partial_file(tmp_path, monkeypatch):
    ids = [f"u{i}" for i in range(10)]
    attrs = {"modality": "audio", "params_hash": "h"}
    writer = FeatureStoreWriter(tmp_path / "audio.h5", ids, ["neu"] * 10, 4, attrs)
    writer.open()
    writer.write(np.arange(5), np.ones((5, 4), np.float32))

    def full(self):
        raise OSError(errno.ENOSPC, "Can't synchronously write data (errno = 28, 'No space left on device')")

    monkeypatch.setattr(h5py.File, "flush", full)
    with pytest.raises(
        InputError, match=r"audio\.partial\.h5: cannot be written \(No space left on device\).*kept"
    ):
        writer.write(np.arange(5, 10), np.ones((5, 4), np.float32))
    monkeypatch.undo()
    writer.close()
    reopened = FeatureStoreWriter(tmp_path / "audio.h5", ids, ["neu"] * 10, 4, attrs)
    reopened.open()
    assert list(reopened.pending_rows()) == [5, 6, 7, 8, 9]  # the rows written before are kept
    reopened.close()


FULL_DISK_WRITER = """
import json, os, sys
from pathlib import Path

import numpy as np

from mlaflow.features.store import FeatureStoreWriter

ids = [f"u{i}" for i in range(10)]
features = np.arange(40, dtype=np.float32).reshape(10, 4)
try:
    with FeatureStoreWriter(sys.argv[1], ids, ["neu"] * 10, 4, {"modality": "audio", "params_hash": "h"}) as writer:
        for batch in ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9]):  # as extraction writes: batch by batch, then finish
            writer.write(batch, features[batch])
            Path(os.environ["FULL_DISK_FLAG"]).touch()  # the disk is full from now on
        writer.finish()
except Exception as err:
    print(json.dumps({"type": type(err).__name__, "message": str(err)}))
"""


def test_a_full_disk_under_hdf5_stops_the_writer_naming_the_file_and_keeps_the_rows(tmp_path, full_disk):
    """On a real full disk h5py raises RuntimeError (not OSError) from a flush, and a write that HDF5 cached
    and fails to write when a dataset closes is only printed, its rows dropped: finish() then found rows never
    written, and closing the file failed again (or crashed)."""
    out, partial = tmp_path / "audio.h5", tmp_path / "audio.partial.h5"
    error = full_disk.run(FULL_DISK_WRITER, out)
    assert error["type"] == "InputError", error
    assert error["message"].startswith(f"{partial}: cannot be written (No space left on device). Fix: free")
    assert "the rows written so far are kept" in error["message"]

    with h5py.File(partial, "r") as handle:  # the first batch, written before the disk filled, is kept
        assert handle["written"][()].tolist() == [True] * 5 + [False] * 5
        np.testing.assert_array_equal(handle["features"][:5], np.arange(20, dtype=np.float32).reshape(5, 4))
    ids = [f"u{i}" for i in range(10)]
    with FeatureStoreWriter(out, ids, ["neu"] * 10, 4, {"modality": "audio", "params_hash": "h"}) as writer:
        assert writer.n_resumed == 5 and list(writer.pending_rows()) == [5, 6, 7, 8, 9]
        writer.write([5, 6, 7, 8, 9], np.arange(20, 40, dtype=np.float32).reshape(5, 4))
        writer.finish()
    np.testing.assert_array_equal(read_store(out).features, np.arange(40, dtype=np.float32).reshape(10, 4))


def test_a_rerun_on_a_disk_still_full_keeps_the_partial_file(tmp_path, full_disk):
    """Reopening a partial file to resume it writes to it: on a disk still full that must not pass for a
    damaged file (which is deleted and started over)."""
    out, partial = tmp_path / "audio.h5", tmp_path / "audio.partial.h5"
    ids = [f"u{i}" for i in range(10)]
    with FeatureStoreWriter(out, ids, ["neu"] * 10, 4, {"modality": "audio", "params_hash": "h"}) as writer:
        writer.write([0, 1, 2], np.ones((3, 4), np.float32))
    reopen = FULL_DISK_WRITER.replace("try:", "Path(os.environ['FULL_DISK_FLAG']).touch()\ntry:", 1)
    error = full_disk.run(reopen, out)
    assert error["type"] == "InputError", error
    assert error["message"].startswith(f"{partial}: cannot be written (No space left on device)")
    with h5py.File(partial, "r") as handle:
        assert handle["written"][()].tolist() == [True] * 3 + [False] * 7


# ------------------------------------------------------------------------------------------ wav files


def test_a_wav_cut_short_mid_file_is_bad_input(tmp_path):
    path = tmp_path / "cut.wav"
    soundfile.write(
        path, np.random.default_rng(0).standard_normal(23074).astype("float32") * 0.1, 16000, subtype="PCM_16"
    )
    assert declared_wav_frames(path) == 23074 and read_wave(path, 16000, 10**9, 400).shape == (23074,)
    with open(path, "r+b") as f:
        f.truncate(44 + 9978 * 2)  # the header still declares 23,074 frames
    assert soundfile.info(str(path)).frames == 9978
    with pytest.raises(
        InputError, match=r"cut\.wav: cut short: its header declares 23074 frames, the file holds 9978"
    ):
        wav_length(path, 16000, 10**9, 400)
    with pytest.raises(InputError, match="cut short"):
        read_wave(path, 16000, 10**9, 400)


def test_a_mask_whose_columns_are_other_modalities_is_refused(tmp_path):
    from mlaflow.data.masks import read_mask

    ids = [f"u{i}" for i in range(10)]
    write_masks(
        tmp_path / "m.h5",
        ids,
        {0: bernoulli_mask(10, 0.3, 0)},
        0.3,
        BERNOULLI,
        "prior",
        ["audio", "text", "visual"],
    )
    with pytest.raises(
        InputError,
        match=r"m\.h5: its columns are the modalities \['audio', 'text', 'visual'\], "
        r"the run's are \['audio', 'visual', 'text'\]",
    ):
        read_mask(tmp_path / "m.h5", 0, ids, BERNOULLI, None, NAMES)
