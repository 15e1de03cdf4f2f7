"""A config value is data: names that become paths or jobs match one pattern (checked at parse time, the error
naming the key and the file the config came from), every path reaches a shell quoted, and nothing is written
outside the working directory. The hostile names and paths are the ones a review found running commands
(`v --help;touch /tmp/PWNED;`) and writing outside the work folder (`../../../escaped`).

The end-to-end run of a config whose paths hold spaces and shell characters is in tests/test_workflow.py
(`test_your_own_features_run_end_to_end_...`)."""

from __future__ import annotations

import copy
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny_workflow import TINY_CONFIG, write_feature_corpus

from mlaflow.errors import ParamsError
from mlaflow.pipeline import params as P

REPO = P.REPO_ROOT
BIN = Path(sys.executable).parent

HOSTILE_NAMES = [
    "v --help;touch {sentinel};",
    "../../../escaped",
    "a b",
    "x/y",
    "$(touch {sentinel})",
    "`touch {sentinel}`",
    "..",
    "a.b",
    "-rf",
    "x" * 65,
]


def tiny() -> dict:
    return yaml.safe_load((REPO / TINY_CONFIG).read_text())


def features_config(folder: str = "own") -> dict:
    config = yaml.safe_load((REPO / ".test" / "features.yaml").read_text())
    config["corpus"]["table"] = f"{folder}/labels.csv"
    for modality in config["corpus"]["modalities"]:
        config["features"][modality]["precomputed"] = f"{folder}/{modality}.h5"
    return config


def hostile_configs(sentinel: Path) -> list[tuple[str, dict]]:
    """(the key the error must name, a config) for a hostile name in every key whose value becomes part of a path
    or a job: fidelity variants, the modalities of kind features (and their features.<name> entries), and the
    root of a generated corpus."""
    cases = []
    for raw in HOSTILE_NAMES:
        name = raw.format(sentinel=sentinel)
        config = tiny()
        config["fidelity"]["variants"][name] = {"mla": {"alpha": 0.5}}
        cases.append((f"fidelity.variants.{name}", config))
        config = features_config()
        config["corpus"]["modalities"][0] = name
        config["features"][name] = config["features"].pop("speech")
        cases.append(("corpus.modalities", config))
        config = features_config()
        config["features"][name] = {"precomputed": "own/speech.h5", "dim": 12}
        cases.append((f"features.{name}", config))
    for root in ("../../../escaped", "/tmp/escaped-corpus", "data/../../escaped"):
        config = tiny()
        config["corpus"]["root"] = root
        cases.append(("corpus.root", config))
    return cases


def test_a_hostile_name_or_output_path_fails_validation_naming_its_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_feature_corpus(tmp_path)
    for key, config in hostile_configs(tmp_path / "PWNED"):
        with pytest.raises(ParamsError) as err:
            P.validate(config, source="my.yaml")
        message = str(err.value)
        assert message.startswith("my.yaml: "), message
        assert key in message, (key, message)
    # every name of the shipped configs passes
    for config in (tiny(), features_config()):
        P.validate(config)


def test_names_follow_one_documented_pattern():
    schema = P.load_schema()
    pattern = schema["$defs"]["name"]["pattern"]
    assert pattern in schema["$defs"]["name"]["description"]
    fidelity = schema["properties"]["fidelity"]["properties"]["variants"]
    assert fidelity["propertyNames"] == {"$ref": "#/$defs/name"}
    assert schema["$defs"]["modality"]["$ref"] == "#/$defs/name"
    assert schema["properties"]["features"]["propertyNames"] == {"$ref": "#/$defs/name"}


def snakemake(workdir: Path, configfile: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO / "src")}
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    cmd += ["--configfile", str(configfile), "--replace-workflow-config", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=workdir)


@pytest.mark.integration
def test_a_dry_run_with_hostile_names_executes_nothing_and_writes_nothing_outside(tmp_path):
    """Through Snakemake itself: every hostile config stops at parse time, naming the key and the config file;
    no sentinel appears and nothing is written outside the working directory (the variant name and the corpus
    root that escaped before are among them)."""
    sentinel = tmp_path / "PWNED"
    outside = tmp_path / "outside"
    workdir = outside / "a" / "b" / "c" / "work"
    workdir.mkdir(parents=True)
    write_feature_corpus(workdir)
    # the two that ran a command and escaped before, and one of each other kind of key (the unit test above
    # covers every hostile name in every key; each Snakemake start costs seconds)
    cases = hostile_configs(sentinel)
    cases = [cases[0], cases[3], cases[1], cases[2], cases[-1]]
    assert cases[1][0] == "fidelity.variants.../../../escaped"
    for i, (key, config) in enumerate(cases):
        configfile = tmp_path / f"hostile{i}.yaml"
        configfile.write_text(yaml.safe_dump(config))
        before = sorted(p for p in tmp_path.rglob("*") if workdir not in p.parents and p != workdir)
        proc = snakemake(workdir, configfile, "-n", "-p", "all")
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0, (key, output[-2000:])
        assert key in output and configfile.name in output, (key, output[-2000:])
        assert not sentinel.exists() and not Path("/tmp/PWNED").exists()
        after = sorted(p for p in tmp_path.rglob("*") if workdir not in p.parents and p != workdir)
        assert after == before, (key, set(after) - set(before))


@pytest.mark.integration
def test_paths_with_spaces_and_shell_characters_reach_the_commands_quoted(tmp_path):
    """The paths of kind features' table and stores, with spaces and `;touch ...;#` in them: every command
    Snakemake would run names them as one quoted word, and the manifest and folds jobs run for real without
    executing anything."""
    folder = "own data --help;touch PWNED;#"
    write_feature_corpus(tmp_path, folder=folder)
    configfile = tmp_path / "my config.yaml"
    configfile.write_text(yaml.safe_dump(features_config(folder)))
    proc = snakemake(tmp_path, configfile, "-n", "-p", "all")
    assert proc.returncode == 0, proc.stderr[-3000:]
    commands = [
        line.split("Shell command: ", 1)[1]
        for line in proc.stdout.splitlines()
        if "Shell command: mlaflow" in line
    ]
    assert any("manifest" in c for c in commands) and any(" train " in f" {c} " for c in commands)
    quoted = shlex.quote(f"{folder}/labels.csv")
    assert any(quoted in c for c in commands)
    for command in commands:
        words = shlex.split(command.split(">")[0])  # as the shell splits it, up to the log redirection
        assert not any(w.startswith(("touch", "PWNED")) for w in words), command
        assert all(folder in w for w in words if "own data" in w), command
    proc = snakemake(tmp_path, configfile, "-c1", "data/splits/folds.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(tmp_path.rglob("PWNED")) and not (REPO / "PWNED").exists()
    assert len((tmp_path / "data" / "manifest" / "manifest.csv").read_text().splitlines()) == 301


def test_a_config_error_names_the_files_the_config_came_from(tmp_path):
    config = copy.deepcopy(tiny())
    config["train"]["epochz"] = 3
    with pytest.raises(ParamsError, match=r"^params.yaml \+ my.yaml \+ --config: `train.epochz`"):
        P.validate(config, source="params.yaml + my.yaml + --config")
    with pytest.raises(ParamsError, match=r"^params.yaml: `train.epochz`"):
        P.validate(config)


@pytest.mark.integration
def test_snakemake_names_the_configfile_of_a_bad_key(tmp_path):
    config = tiny()
    config["train"]["epochs"] = 1e12
    configfile = tmp_path / "mine.yaml"
    configfile.write_text(json.dumps(config))
    proc = snakemake(tmp_path, configfile, "-n")
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    # --replace-workflow-config: the config is mine.yaml alone (params.yaml is not merged)
    assert "mine.yaml: `train.epochs`" in output and "params.yaml + " not in output, output[-2000:]
    assert "greater than the maximum of 100000" in output
