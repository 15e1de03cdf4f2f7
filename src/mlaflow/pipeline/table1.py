"""The Table 1 and Table 4 analogues in the main job (DVC stage `table1`, params `table1`).

The paper's Table 1 (section 4.1, A.3.1) trains ResNet-18 encoders end to end on CREMA-D and Kinetics-Sounds and
encodes Food-101 and MVSA with a pretrained M3AE; its Table 4 (4.3.4, A.4.3) repeats Food-101 with CLIP's towers.
The main job's corpus is another one (the IEMOCAP look-alike, frozen features). So for each entry of the stage the
whole workflow runs again, in its own folder `data/table1/<entry>/`, on a config derived here from the main one
(`sub_config`). The entries (`entries`): each corpus kind of `table1.corpora`, and `clip_<kind>` for the Table 4
corpus (table1.table4) where it is enabled:
- that corpus: a look-alike with its settings (corpus.<kind>, then table1.corpus.<kind> over them), or a real
  tree (table1.roots.<kind>);
- audio-video kinds: their prepared inputs (features.audio fbank_spectrogram, features.visual frames:
  table1.features) and train.encoder resnet18 (standardize off: the inputs are spectrograms and pixels), one fold
  (the first speaker group of a look-alike of CREMA-D; the split of a Kinetics-Sounds tree);
- image-text kinds (Food-101, MVSA): frozen features as in the main job, trained with its MLP encoders: the image
  encoder of features.image (a ViT: M3AE is in no maintained library) and the text encoder of features.text (a
  BERT), with table1.image_text.image and .text over them, the corpus's own split (one fold);
- the Table 4 entry: the same image-text corpus, both modalities encoded by CLIP's towers (table1.table4.clip,
  mlaflow.features.clip), and the methods of table1.table4.methods;
- table1.train over train for every entry, table1.seeds;
- the methods: MLA, late fusion and complete_modality_methods (Table 4: its methods), at missing rate 0 only
  (Table 1 has no masks); the missing-modality suite and the isolation analysis do not run there (they need
  masks); tuning runs as the main config says (same budget), and fidelity too on the audio-video corpora (the
  image-text ones keep the stage within its time), at missing rate 0, where a variant that only changes masks or
  masked inputs is the paper's run itself (reused, not trained: mlaflow.pipeline.experiments);
- the method options that name a modality: the kind's defaults (the config's own name the main corpus's
  modalities).
Its report is the workflow's usual report; the main report gathers each one's Table 1 section
(mlaflow.report.table1). The derived config is a job config like the others (data/table1/<entry>.config.json):
a change to what it is derived from reruns that entry's workflow, which decides itself what is stale in it.
"""

from __future__ import annotations

import copy
import os

FOLDER = "data/table1"
# where each look-alike's workflow generates its corpus (inside its folder)
ROOTS = {
    "embedded_cremad": "data/corpus/CREMA-D",
    "embedded_ks": "data/corpus/KineticsSounds",
    "embedded_food101": "data/corpus/Food-101",
    "embedded_mvsa": "data/corpus/MVSA",
}
REAL_KINDS = ("cremad", "kinetics", "food101", "mvsa")  # read from table1.roots.<kind>
CLIP_PREFIX = "clip_"  # the Table 4 entry of a corpus kind: clip_<kind>
MODALITY_OPTIONS = {"film": ("condition",), "bigated": ("gate",), "mla": ("fixed_weights",)}
MAIN_METHODS = ["mla", "late_fusion"]
# the suite must name a method, but with no missing rate above 0 it runs none
SUITE_METHODS = ["qmf"]


def kind_of(entry: str) -> str:
    """The corpus kind of an entry (`clip_<kind>` -> kind)."""
    return entry[len(CLIP_PREFIX) :] if entry.startswith(CLIP_PREFIX) else entry


def is_image_text(kind: str) -> bool:
    from mlaflow.data import corpora

    return "image" in (corpora.CORPORA[kind].modalities or ())


def _complete_methods(config: dict, entry: str) -> list[str]:
    if entry.startswith(CLIP_PREFIX):
        return [m for m in config["table1"]["table4"]["methods"] if m not in MAIN_METHODS]
    return list(config["complete_modality_methods"])


def _methods(config: dict, entry: str) -> list[str]:
    """Every method an entry's workflow names: the main ones, the complete-modality baselines, the suite's."""
    return list(dict.fromkeys([*MAIN_METHODS, *_complete_methods(config, entry), *SUITE_METHODS]))


def folder(entry: str) -> str:
    return f"{FOLDER}/{entry}"


def config_path(entry: str) -> str:
    return f"{FOLDER}/{entry}.config.json"


def entries(config: dict) -> list[str]:
    """The workflows the stage runs: table1.corpora's kinds, then the Table 4 entry (none when table1.enabled is
    false)."""
    table1 = config["table1"]
    if not table1["enabled"]:
        return []
    table4 = table1["table4"]
    return [*table1["corpora"], *([CLIP_PREFIX + table4["corpus"]] if table4["enabled"] else [])]


def _features(config: dict, kind: str, clip: bool) -> dict:
    """The features section of an entry's config: prepared inputs (audio-video), ViT + BERT or CLIP (image-text)."""
    table1 = config["table1"]
    common = {
        "half_precision": config["features"]["half_precision"],
        "embedded_seed": config["features"]["embedded_seed"],
    }
    if clip:
        settings = table1["table4"]["clip"]
        tower = {"model": settings["model"], "dim": settings["dim"], "batch_size": settings["batch_size"]}
        embedded = copy.deepcopy(settings["embedded"])
        return {
            **common,
            "image": {
                "encoder": "clip_image",
                **tower,
                "image_size": settings["image_size"],
                "embedded": embedded,
            },
            "text": {
                "encoder": "clip_text",
                **tower,
                "max_length": settings["max_length"],
                "embedded": embedded,
            },
        }
    if is_image_text(kind):
        return {
            **common,
            "image": {
                **{k: copy.deepcopy(v) for k, v in config["features"]["image"].items() if k != "precomputed"},
                **copy.deepcopy(table1["image_text"]["image"]),
            },
            "text": {
                **{k: copy.deepcopy(v) for k, v in config["features"]["text"].items() if k != "precomputed"},
                **copy.deepcopy(table1["image_text"]["text"]),
            },
        }
    prepared = table1["features"]
    return {
        **common,
        "audio": {
            "encoder": "fbank_spectrogram",
            "dim": prepared["n_mels"] * prepared["spectrogram_frames"],
            "n_mels": prepared["n_mels"],
            "spectrogram_frames": prepared["spectrogram_frames"],
        },
        "visual": {
            "encoder": "frames",
            "dim": prepared["frames"] * 3 * prepared["image_size"] ** 2,
            "frames": prepared["frames"],
            "image_size": prepared["image_size"],
        },
    }


def sub_config(config: dict, entry: str, in_folder: bool = True) -> dict:
    """The config of `entry`'s workflow (unvalidated: its workflow validates it, filling the defaults). A real
    tree's root (table1.roots) is given relative to the main working directory; `in_folder`: as the workflow in
    data/table1/<entry>/ reads it (relative to that folder, an absolute path as it is), else as given."""
    table1 = config["table1"]
    kind, clip = kind_of(entry), entry.startswith(CLIP_PREFIX)
    root = table1["roots"].get(kind) or ROOTS.get(kind)
    if in_folder and kind not in ROOTS and not os.path.isabs(root):
        root = os.path.relpath(root, folder(entry))
    corpus = {"kind": kind, "root": root}  # label_setup: the kind's own (its first)
    if kind in ROOTS:
        corpus[kind] = {**config["corpus"][kind], **table1["corpus"].get(kind, {})}
    train = {**config["train"], **table1["train"]}
    if not is_image_text(kind):  # trained end to end from the prepared inputs
        train.update({"encoder": "resnet18", "standardize": False})
    train["seeds"] = list(table1["seeds"])
    methods = _methods(config, entry)
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
    fidelity = {k: v for k, v in config["fidelity"].items() if k != "missing_rates"}  # its rate: 0
    if is_image_text(kind):  # the released code's switches are checked on the audio-video corpora
        fidelity = {"enabled": False}
    return {
        "corpus": corpus,
        "features": _features(config, kind, clip),
        "splits": {
            "folds": [1],
            "validation_fraction": config["splits"]["validation_fraction"],
            "seed": config["splits"]["seed"],
        },
        "masks": {**config["masks"], "missing_rates": [0.0]},
        "methods": list(MAIN_METHODS),
        "complete_modality_methods": _complete_methods(config, entry),
        "missing_suite": {"methods": list(SUITE_METHODS)},  # its rates: masks.missing_rates above 0, none
        "tuning": tuning,
        "isolation": {"enabled": False},
        "fidelity": fidelity,
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

    modules = set(STEP_MODULES) if entries(config) else set()
    for entry in entries(config):
        sub = sub_config(config, entry)
        corpus = corpora.CORPORA[kind_of(entry)]
        modules.add(corpus.adapter.split(":")[0])
        if corpus.generator_module:
            modules.add(corpus.generator_module)
        if corpus.classes_from:
            modules.add(corpus.classes_from.split(":")[0])
        modules |= {
            encoder_module(cfg["encoder"], modality)
            for modality, cfg in sub["features"].items()
            if isinstance(cfg, dict)
        }
        modules |= {method_module(method) for method in _methods(config, entry)}
    return sorted(modules)


def sub_configs(config: dict) -> dict[str, dict]:
    """config path -> the derived config, for every corpus the stage runs."""
    return {config_path(entry): sub_config(config, entry) for entry in entries(config)}


def duration_path(entry: str) -> str:
    """Where the table1 rule records how long the entry's workflow ran (the report shows it)."""
    return f"{folder(entry)}/reports/duration.json"
