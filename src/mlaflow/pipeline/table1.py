"""The Table 1 analogue of the paper's audio-video setting in the main job (DVC stage `table1`, params `table1`).

The paper's Table 1 (section 4.1, A.3.1) trains ResNet-18 encoders end to end on CREMA-D and Kinetics-Sounds;
the main job's corpus is another one (the IEMOCAP look-alike, frozen features). So for each corpus kind of
`table1.corpora` the whole workflow runs again, in its own folder `data/table1/<kind>/`, on a config derived here
from the main one (`sub_config`):
- that corpus: a look-alike with its settings (corpus.<kind>, then table1.corpus.<kind> over them), or a real
  tree (table1.roots.<kind>);
- its prepared inputs: features.audio fbank_spectrogram, features.visual frames (table1.features);
- training: train.encoder resnet18 (standardize off: the inputs are spectrograms and pixels), table1.train over
  train, table1.seeds, one fold (the first speaker group of a look-alike of CREMA-D; the split of a
  Kinetics-Sounds tree);
- the methods: MLA, late fusion and complete_modality_methods, at missing rate 0 only (Table 1 has no masks);
  the missing-modality suite and the isolation analysis do not run there (they need masks); tuning and fidelity
  run as the main config says (same budget, same variants of the released code), on that corpus: fidelity at
  missing rate 0, where a variant that only changes masks or masked inputs is the paper's run itself (reused,
  not trained: mlaflow.pipeline.experiments);
- the method options that name a modality: the kind's defaults (the config's own name the main corpus's
  modalities).
Its report is the workflow's usual report; the main report gathers each one's Table 1 section
(mlaflow.report.table1). The derived config is a job config like the others (data/table1/<kind>.config.json):
a change to what it is derived from reruns that corpus's workflow, which decides itself what is stale in it.
"""

from __future__ import annotations

import copy
import os

FOLDER = "data/table1"
ROOTS = {"embedded_cremad": "data/corpus/CREMA-D", "embedded_ks": "data/corpus/KineticsSounds"}
MODALITY_OPTIONS = {"film": ("condition",), "bigated": ("gate",), "mla": ("fixed_weights",)}
MAIN_METHODS = ["mla", "late_fusion"]
# the suite must name a method, but with no missing rate above 0 it runs none
SUITE_METHODS = ["qmf"]


def _methods(config: dict) -> list[str]:
    """Every method a derived workflow names: the main ones, the complete-modality baselines, the suite's."""
    return list(dict.fromkeys([*MAIN_METHODS, *config["complete_modality_methods"], *SUITE_METHODS]))


def folder(kind: str) -> str:
    return f"{FOLDER}/{kind}"


def config_path(kind: str) -> str:
    return f"{FOLDER}/{kind}.config.json"


def kinds(config: dict) -> list[str]:
    """The corpora the stage runs (none when table1.enabled is false)."""
    table1 = config["table1"]
    return list(table1["corpora"]) if table1["enabled"] else []


def sub_config(config: dict, kind: str, in_folder: bool = True) -> dict:
    """The config of `kind`'s workflow (unvalidated: its workflow validates it, filling the defaults). A real
    tree's root (table1.roots) is given relative to the main working directory; `in_folder`: as the workflow in
    data/table1/<kind>/ reads it (relative to that folder, an absolute path as it is), else as given."""
    table1 = config["table1"]
    root = table1["roots"].get(kind) or ROOTS.get(kind)
    if in_folder and kind not in ROOTS and not os.path.isabs(root):
        root = os.path.relpath(root, folder(kind))
    corpus = {"kind": kind, "root": root}  # label_setup: the kind's own (its first)
    if kind in ROOTS:
        corpus[kind] = {**config["corpus"][kind], **table1["corpus"].get(kind, {})}
    prepared = table1["features"]
    audio_dim = prepared["n_mels"] * prepared["spectrogram_frames"]
    visual_dim = prepared["frames"] * 3 * prepared["image_size"] ** 2
    features = {
        "half_precision": config["features"]["half_precision"],
        "embedded_seed": config["features"]["embedded_seed"],
        "audio": {
            "encoder": "fbank_spectrogram",
            "dim": audio_dim,
            "n_mels": prepared["n_mels"],
            "spectrogram_frames": prepared["spectrogram_frames"],
        },
        "visual": {
            "encoder": "frames",
            "dim": visual_dim,
            "frames": prepared["frames"],
            "image_size": prepared["image_size"],
        },
    }
    train = {**config["train"], **table1["train"], "encoder": "resnet18", "standardize": False}
    train["seeds"] = list(table1["seeds"])
    methods = _methods(config)
    # the options of the methods it trains only (another method's option is not its input: changing it reruns
    # nothing here); those that name a modality take the kind's defaults (the main corpus's names do not apply)
    method_params = {
        method: copy.deepcopy(options)
        for method, options in config["method_params"].items()
        if method in methods
    }
    for method, keys in MODALITY_OPTIONS.items():
        for key in keys:
            method_params.get(method, {}).pop(key, None)
    tuning = {k: v for k, v in config["tuning"].items() if k not in ("folds", "missing_rates", "run_seed")}
    return {
        "corpus": corpus,
        "features": features,
        "splits": {
            "folds": [1],
            "validation_fraction": config["splits"]["validation_fraction"],
            "seed": config["splits"]["seed"],
        },
        "masks": {**config["masks"], "missing_rates": [0.0]},
        "methods": list(MAIN_METHODS),
        "complete_modality_methods": list(config["complete_modality_methods"]),
        "missing_suite": {"methods": list(SUITE_METHODS)},  # its rates: masks.missing_rates above 0, none
        "tuning": tuning,
        "isolation": {"enabled": False},
        "fidelity": {k: v for k, v in config["fidelity"].items() if k != "missing_rates"},  # its rate: 0
        "method_params": method_params,
        "train": train,
        "report": config["report"],
        "table1": {"enabled": False},  # runtime: the main config's, passed apart (it reruns nothing)
    }


# the modules every derived workflow's jobs start from, whatever its corpus and methods (mlaflow.pipeline.codedeps)
STEP_MODULES = (
    "mlaflow.data.manifest",
    "mlaflow.data.folds",
    "mlaflow.data.masks",
    "mlaflow.features.extract",
    "mlaflow.tune.study",
    "mlaflow.train.job",
    "mlaflow.train.index",
    "mlaflow.report.build",
)


def code_entries(config: dict) -> list[str]:
    """The mlaflow modules the jobs of the Table 1 workflows run from (the table1 rule's code inputs, through
    mlaflow.pipeline.codedeps): each corpus's generator and adapter, its prepared-input encoders, the pipeline's
    steps and the modules of the methods it trains. An edit anywhere else (another method, cli.py) reruns none of
    them."""
    from mlaflow.data import corpora
    from mlaflow.features.protocol import encoder_module
    from mlaflow.methods import method_module

    entries = set(STEP_MODULES) if kinds(config) else set()
    for kind in kinds(config):
        sub = sub_config(config, kind)
        corpus = corpora.CORPORA[kind]
        entries.add(corpus.adapter.split(":")[0])
        if corpus.generator_module:
            entries.add(corpus.generator_module)
        entries |= {
            encoder_module(cfg["encoder"], modality)
            for modality, cfg in sub["features"].items()
            if isinstance(cfg, dict)
        }
        entries |= {method_module(method) for method in _methods(config)}
    return sorted(entries)


def sub_configs(config: dict) -> dict[str, dict]:
    """config path -> the derived config, for every corpus the stage runs."""
    return {config_path(kind): sub_config(config, kind) for kind in kinds(config)}


def duration_path(kind: str) -> str:
    """Where the table1 rule records how long the corpus's workflow ran (the report shows it)."""
    return f"{folder(kind)}/reports/duration.json"
