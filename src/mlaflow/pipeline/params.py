"""params.yaml (or any config Snakemake is given): loading and validation, once, at parse time.

`validate` runs the JSON schema (`workflow/schemas/params.schema.yaml`: types, ranges, defaults; see
mlaflow.pipeline.schema) and then the checks across keys that a schema cannot express. The Snakefile calls it before
any job starts; jobs never read params.yaml: each gets the config file of its own job (mlaflow.pipeline.experiments).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from mlaflow.data import corpora
from mlaflow.errors import ParamsError
from mlaflow.keys import format_rate
from mlaflow.methods import METHODS, VARIANTS, method_class, method_options, options_section
from mlaflow.pipeline import schema

REPO_ROOT = Path(__file__).resolve().parents[3]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "params.schema.yaml"


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def validate(params: dict, source: str = "params.yaml", check_files: bool = True) -> dict:
    """`params` validated: a new dict, strings coerced and defaults filled by the schema (mlaflow.pipeline.schema.validate),
    the defaults that follow other keys filled (`fill_following_defaults`), then checked across keys. Raise
    ParamsError naming the offending key and `source`, where the config came from (params.yaml, or the files
    Snakemake merged it from); `params` itself is not changed. `check_files` false skips the checks that the
    files the config names exist (a config read away from its data, as the docs' examples are)."""
    try:
        return _validate(params, check_files)
    except ParamsError as err:
        raise err.from_source(source) from None


# keys that moved to the runtime section: a config that still has one is told where it went
MOVED = {
    "train.device": "runtime.device",
    "features.device": "runtime.device",
    "train.batch_runs": "runtime.batch_runs",
    "train.job_group": "runtime.job_group",
    "tuning.workers": "runtime.tuning_workers",
    "tuning.storage": "runtime.tuning_storage",
    "train.threads": "the rule's threads (a Snakemake profile's set-threads, or --set-threads train=N)",
    "resources.gpu_per_job": "the rules' gpu resource (a Snakemake profile's set-resources: profiles/gpu-node)",
}


def _check_moved(params: dict) -> None:
    for old, new in MOVED.items():
        section, key = old.split(".")
        if isinstance(params.get(section), dict) and key in params[section]:
            raise ParamsError(
                old, f"has moved to {new}: it says how jobs run, not what they compute", f"use {new}"
            )


# the keys of features.<modality>.embedded each encoder's embedded model reads (the schema lists the first
# encoder's; an embedded CLIP, the Table 4 analogue's, takes its own too)
EMBEDDED_KEYS = {
    "bert": {"num_layers", "num_heads", "intermediate_size"},
    "vit": {"patch_size", "num_layers", "num_heads", "intermediate_size"},
    "clip_text": {"width", "num_layers", "num_heads", "patch_size", "image_size"},
    "clip_image": {"width", "num_layers", "num_heads", "patch_size", "image_size"},
}
CLIP_REQUIRED = ("width", "image_size")  # no schema default: an embedded CLIP states them


def _check_embedded_keys(params: dict) -> None:
    """An unknown key of features.<text|image>.embedded, or an embedded CLIP without its width or picture size, is
    named before any job (the schema lets the CLIP's own keys through)."""
    for modality in ("text", "image"):
        settings = params["features"].get(modality)
        if not isinstance(settings, dict) or settings.get("encoder") not in EMBEDDED_KEYS:
            continue
        encoder, embedded = settings["encoder"], settings.get("embedded", {})
        allowed = EMBEDDED_KEYS[encoder] | ({"intermediate_size"} if encoder.startswith("clip") else set())
        for key in sorted(set(embedded) - allowed):
            raise ParamsError(
                f"features.{modality}.embedded.{key}",
                f"unknown key for encoder {encoder}",
                f"use only {', '.join(sorted(EMBEDDED_KEYS[encoder]))}",
            )
        if encoder.startswith("clip") and settings.get("model") == "embedded":
            for key in CLIP_REQUIRED:
                if key not in embedded:
                    raise ParamsError(
                        f"features.{modality}.embedded.{key}",
                        "is not set, and an embedded CLIP needs it",
                        "set it (table1.table4.clip.embedded sets it for the Table 4 analogue)",
                    )


def _validate(params: dict, check_files: bool) -> dict:
    _check_moved(params)
    params = fill_following_defaults(schema.validate(params, load_schema()))
    _check_embedded_keys(params)
    _check_rates(params)
    for method in sorted(used_methods(params)):
        if options_section(method) not in params["method_params"]:
            raise ParamsError(
                f"method_params.{options_section(method)}",
                f"missing for a method listed in `methods` ({method})",
                f"add a `{options_section(method)}:` entry under method_params",
            )
    for generator in dict.fromkeys(k.generator_key for k in corpora.CORPORA.values() if k.generator_key):
        settings = params["corpus"][generator]  # the audio-video look-alikes' clip durations
        if settings.get("min_duration_s", 0) > settings.get("max_duration_s", float("inf")):
            raise ParamsError(f"corpus.{generator}.min_duration_s", "larger than max_duration_s")
    if params["missing_suite"]["methods"]:
        _rates_in_masks(params, "missing_suite", "the suite shares the main grid's masks")
    isolation = params["isolation"]
    if isolation["enabled"]:
        # share 0.0 of the isolation curves is the main grid's complete-data run of each method
        for method in isolation["methods"]:
            at_rate_0 = (
                method in params["methods"] and 0.0 in params["masks"]["missing_rates"]
            ) or method in params["complete_modality_methods"]
            if not at_rate_0:
                raise ParamsError(
                    "isolation.methods",
                    f"{method!r} has no missing-rate-0 run in the main grid",
                    f"add {method!r} to complete_modality_methods (or to methods with 0.0 in "
                    "masks.missing_rates), or remove it from isolation.methods",
                )
    fidelity = params["fidelity"]
    if fidelity["enabled"]:
        # the fidelity experiment compares against the main grid's runs, so those must exist
        needed = {"methods": ["mla", *fidelity["protocol_methods"]]}
        for method in needed["methods"]:
            if method not in params["methods"]:
                raise ParamsError(
                    "methods",
                    f"the fidelity experiment needs {method!r} in the main grid",
                    f"add {method!r} to methods, or set fidelity.enabled: false",
                )
        _rates_in_masks(params, "fidelity", "the main grid's MLA runs are the paper baseline")
    _check_tuning(params)
    _check_corpus(params)
    _check_outputs_inside(params)
    if check_files:
        _check_paths(params)
    _check_experiment_names(params)
    _check_end_to_end(params)
    _check_table1(params, check_files)
    return params


def _check_end_to_end(params: dict) -> None:
    """train.encoder resnet18 (trained from prepared inputs): only for the methods that train through the shared
    encoders, and on unstandardised inputs (spectrograms, pixels)."""
    if params["train"]["encoder"] == "mlp":
        return
    from mlaflow.methods import method_class

    if params["train"]["standardize"]:
        raise ParamsError(
            "train.standardize",
            "is true with train.encoder resnet18: it would z-score every pixel and spectrogram bin",
            "set it to false (frames are normalised with ImageNet's statistics inside the encoder)",
        )
    frozen = sorted(m for m in used_methods(params) if not method_class(m).end_to_end)
    if frozen:
        raise ParamsError(
            "train.encoder",
            f"resnet18, but {frozen} train on frozen features only",
            "remove them from methods, complete_modality_methods and missing_suite.methods, or use encoder mlp",
        )


def _check_table1(params: dict, check_files: bool) -> None:
    """The Table 1 analogue's derived configs (mlaflow.pipeline.table1) validate too, before any job starts: a bad
    key or value under `table1` (its train or corpus overrides) fails here, named as the table1 key it came from."""
    from mlaflow.pipeline import table1

    for entry in table1.entries(params):
        kind = table1.kind_of(entry)
        if kind in table1.REAL_KINDS and not params["table1"]["roots"][kind]:
            raise ParamsError(
                f"table1.roots.{kind}",
                f"is not set, but {kind} is in table1.corpora (or table1.table4.corpus)",
                "set it to the path of the corpus tree, or remove the kind from table1.corpora (table1.table4)",
            )
        sub = table1.sub_config(params, entry, in_folder=False)
        clip_frames = sub["corpus"].get(kind, {}).get("frames_per_clip")  # a look-alike's frames per clip
        if clip_frames is not None and clip_frames < sub["features"]["visual"]["frames"]:
            raise ParamsError(
                "table1.features.frames",
                f"is {sub['features']['visual']['frames']}, but the {kind} look-alike draws {clip_frames} frames "
                f"per clip (corpus.{kind}.frames_per_clip, or table1.corpus.{kind})",
                f"lower table1.features.frames to at most {clip_frames}, or raise table1.corpus.{kind}.frames_per_clip",
            )
        try:
            _validate(sub, check_files)
        except ParamsError as err:
            raise ParamsError(
                "table1",
                f"the config derived for {entry} (mlaflow.pipeline.table1) is not valid: `{err.key}`: {err.problem}",
                f"{err.fix}, in table1's overrides (table1.train, table1.corpus.{kind}) or the keys they come from",
            ) from None


def _nearest(target: float, rates: list[float]) -> float:
    return min(rates, key=lambda rate: (abs(rate - target), rate))


def fill_following_defaults(params: dict) -> dict:
    """The keys whose default follows other keys (`x-default-follows` in the schema), set where the config leaves
    them out: a config that changes the missing rates, folds, seeds or modalities never fails on a default it
    did not write. A method's options that name a modality, or weight each one, follow the corpus (the
    method class's `modality_options`, `modality_weight_options`). Changes and returns `params`
    (schema.validate's new dict)."""
    rates = params["masks"]["missing_rates"]
    above_zero = [rate for rate in rates if rate > 0]
    kind, names = corpora.corpus_kind(params), corpora.modalities(params)
    strongest = kind.strongest if kind.strongest in names else names[0]
    weights = kind.fixed_weights or {m: round(1 / len(names), 6) for m in names}
    following = {
        ("corpus", "label_setup"): lambda: next(iter(kind.classes)) if kind.classes else None,
        ("missing_suite", "missing_rates"): lambda: above_zero,
        ("tuning", "folds"): lambda: params["splits"]["folds"][:2],
        ("tuning", "missing_rates"): lambda: [_nearest(0.3, above_zero)] if above_zero else [0.0],
        ("tuning", "run_seed"): lambda: params["train"]["seeds"][0],
        ("fidelity", "missing_rates"): lambda: list(
            dict.fromkeys(_nearest(t, rates) for t in (0.0, 0.3, 0.7))
        ),
        ("isolation", "modalities"): lambda: list(kind.isolation_modalities or names),
    }
    for method in (m for m in METHODS if m not in VARIANTS):  # a variant reads its base's section
        cls = method_class(method)
        for key in cls.modality_weight_options:
            following[("method_params", method, key)] = lambda: dict(weights)
        for key in cls.modality_options:
            following[("method_params", method, key)] = lambda: strongest
    for path, value in following.items():
        *sections, key = path
        section = params
        for name in sections:
            section = section[name]
        if key not in section:
            section[key] = value()
    return params


def inside_workdir(path: str | Path) -> bool:
    """Whether `path` (relative to the working directory, or absolute) lies inside the working directory, read
    lexically (`..` resolved, symbolic links not followed: a link the user made inside is theirs)."""
    workdir = os.path.abspath(os.getcwd())
    resolved = os.path.abspath(os.path.join(workdir, path))
    return resolved == workdir or resolved.startswith(workdir + os.sep)


def check_outputs_inside(paths, key: str = "<output>") -> None:
    """Every path the workflow writes lies inside the working directory (`snakemake -d` or the checkout)."""
    for path in paths:
        if not inside_workdir(path):
            raise ParamsError(
                key,
                f"the workflow would write {path}, outside the working directory {os.getcwd()}",
                "keep every generated path relative and inside the working directory (no `..`, no absolute path)",
            )


def _check_outputs_inside(params: dict) -> None:
    """What the config names as an output (the generated corpus's root) stays inside the working directory."""
    if corpora.corpus_kind(params).generator_module:
        root = params["corpus"]["root"]
        check_outputs_inside([root, f"{root}.config.json"], "corpus.root")


def _rates_in_masks(params: dict, section: str, why: str) -> None:
    """Every rate of `<section>.missing_rates` is one of masks.missing_rates, whose masks it reads."""
    for rate in params[section]["missing_rates"]:
        if rate not in params["masks"]["missing_rates"]:
            raise ParamsError(
                f"{section}.missing_rates",
                f"{rate} is not in masks.missing_rates",
                f"use rates of masks.missing_rates ({why})",
            )


def _check_tuning(params: dict) -> None:
    tuning = params["tuning"]
    if not tuning["enabled"]:
        return
    for fold in tuning["folds"]:
        if fold not in params["splits"]["folds"]:
            raise ParamsError("tuning.folds", f"{fold} is not in splits.folds", "use folds of splits.folds")
    _rates_in_masks(params, "tuning", "tuning shares the main grid's masks")
    if tuning["run_seed"] not in params["train"]["seeds"]:
        raise ParamsError(
            "tuning.run_seed", f"{tuning['run_seed']} is not in train.seeds", "use one of train.seeds"
        )


RATE_LISTS = (
    "masks.missing_rates",
    "missing_suite.missing_rates",
    "isolation.training_missing_rates",
    "fidelity.missing_rates",
    "tuning.missing_rates",
)


def _check_rates(params: dict) -> None:
    """A missing rate names its files (`missing_0.30`): it must be what its file name says, and unique."""
    for key in RATE_LISTS:
        section, name = key.split(".")
        labels = {}
        for rate in params[section][name]:
            label = format_rate(rate)
            if float(label) != rate:
                raise ParamsError(
                    key,
                    f"{rate} has more than two decimals (its files would be named {label})",
                    f"use {float(label)}, or a rate of two decimals",
                )
            if label in labels:
                raise ParamsError(key, f"{labels[label]} and {rate} are the same rate", "list each rate once")
            labels[label] = rate


FEATURE_OPTIONS = ("half_precision", "embedded_seed")  # features.* keys that are not modalities
SHIPPED_MODALITIES = ("audio", "visual", "text", "image")  # features.* keys with documented defaults


def used_methods(params: dict) -> set[str]:
    return {
        *params["methods"],
        *params["complete_modality_methods"],
        *params["missing_suite"]["methods"],
        *(params["isolation"]["methods"] if params["isolation"]["enabled"] else []),
    }


def _check_corpus(params: dict) -> None:
    """The corpus kind's own keys are set, and option values that name a modality name one of the corpus's
    (a method's options: its class's `check_options`, for the methods that run)."""
    kind = corpora.corpus_kind(params)
    if not params["corpus"][kind.source.key]:
        raise ParamsError(
            f"corpus.{kind.source.key}",
            f"is not set; corpus kind {kind.name!r} reads its manifest from it",
            f"point it at {kind.source.what}",
        )
    names = corpora.modalities(params)
    corpora.classes(params)
    for key in params["features"]:
        if key not in (*FEATURE_OPTIONS, *SHIPPED_MODALITIES, *names):
            raise ParamsError(
                f"features.{key}",
                f"is not a modality of the corpus ({names})",
                "correct the name, or add it to corpus.modalities",
            )
    for modality in names:
        if modality not in params["features"]:
            raise ParamsError(
                f"features.{modality}",
                "is not set",
                f"give its store and width: features.{modality}: {{precomputed: <file.h5>, dim: <d>}}",
            )
        if not kind.extracted and not params["features"][modality]["precomputed"]:
            raise ParamsError(
                f"features.{modality}.precomputed",
                f"is not set; corpus kind {kind.name!r} has no extraction",
                "point it at the modality's HDF5 store",
            )
    used = used_methods(params)
    variants = params["fidelity"]["variants"].values()
    for key in ("methods", "complete_modality_methods", "isolation.methods"):
        section, _, name = key.partition(".")
        listed = params[section][name] if name else params[section]
        for method in listed:
            if method_class(method).needs_conversations and not kind.conversations:
                raise ParamsError(
                    key,
                    f"{method} reads conversations, and corpus kind {kind.name!r} has none",
                    f"remove {method} from {key} (the missing-modality suite leaves it out by itself)",
                )
    for method in (m for m in METHODS if m in used):
        method_class(method).check_options(
            method_options(params["method_params"], method),
            names,
            [variant.get(options_section(method), {}) for variant in variants],
        )
    if params["isolation"]["enabled"]:
        for value in params["isolation"]["modalities"]:
            if value not in names:
                raise ParamsError(
                    "isolation.modalities",
                    f"{value!r} is not a modality of the corpus",
                    f"use some of {names}",
                )


def _check_paths(params: dict) -> None:
    """Files the config points at must be there before any job starts (relative to the working directory)."""
    for path, value in corpora.input_paths(params):  # what the manifest job reads, as the corpus kind says
        if not (Path(value).is_dir() if path.directory else Path(value).is_file()):
            raise ParamsError(
                f"corpus.{path.key}",
                f"{value} {'is not a directory' if path.directory else 'does not exist'}",
                f"point it at {path.what}" + (", or set it to null" if path.optional else ""),
            )
    for modality in corpora.modalities(params):
        cfg = params["features"][modality]
        if cfg["precomputed"]:
            if not Path(cfg["precomputed"]).is_file():
                raise ParamsError(
                    f"features.{modality}.precomputed",
                    f"{cfg['precomputed']} does not exist",
                    "point it at an HDF5 feature store (docs/data-formats.md: HDF5 feature store schema), or set null",
                )
        elif (
            cfg.get("model", "embedded") != "embedded" and not (Path(cfg["model"]) / "config.json").is_file()
        ):
            raise ParamsError(
                f"features.{modality}.model",
                f"{cfg['model']} is not a model directory (no config.json)",
                "set it to `embedded`, or to a local directory written by save_pretrained",
            )


def _check_experiment_names(params: dict) -> None:
    """Every experiment has its own name (it names its folder and its runs)."""
    from mlaflow.pipeline.experiments import experiment_table

    seen: dict[str, str] = {}
    for experiment in experiment_table(params):
        if experiment.name in seen:
            raise ParamsError(
                f"fidelity.variants.{experiment.name}",
                f"the name is taken by the {seen[experiment.name]} experiment",
                "choose another name",
            )
        seen[experiment.name] = experiment.kind


def load(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise ParamsError(str(path), "file not found", "run from the repository root or pass --params")
    return validate(yaml.safe_load(path.read_text()))


def runtime_settings(runtime: dict | None) -> dict:
    """The `runtime` section validated, its defaults filled (a job's MLAFLOW_RUNTIME, or {} outside Snakemake)."""
    full = schema.validate({"runtime": runtime or {}}, _runtime_schema())
    return full["runtime"]


def _runtime_schema() -> dict:
    whole = load_schema()
    return {
        "$defs": whole["$defs"],
        "type": "object",
        "additionalProperties": False,
        "properties": {"runtime": whole["properties"]["runtime"]},
    }
