"""Every job's config file: path -> content, computed from the validated config alone.

Each job reads one `<output>.config.json` with exactly the keys it computes from. The Snakefile's `job_config`
rule writes these files from the config Snakemake was given (workflow/rules/common.smk); `mlaflow settle`
(mlaflow/settle.py) compares them with the files on disk in a copy that Snakemake has no records for. The order
of the keys is part of the content (files are written with `sort_keys=False`).
"""

from __future__ import annotations

from base64 import urlsafe_b64encode
from pathlib import Path

from mlaflow.data import corpora
from mlaflow.features.protocol import encoder_settings
from mlaflow.io import json_text
from mlaflow.methods import options_section
from mlaflow.pipeline import experiments as E
from mlaflow.pipeline import table1
from mlaflow.pipeline.experiments import STAGE_DIRS  # the stages that train and their folders (one source)

# each stage's index, in its folder
INDEX_FILES = {stage: f"{root}/index.json" for stage, root in STAGE_DIRS.items()}


def extracted_modalities(config: dict) -> list[str]:
    """The modalities the workflow extracts (the others are the user's precomputed stores)."""
    return [m for m in corpora.modalities(config) if not config["features"][m]["precomputed"]]


def experiment_of_method(config: dict) -> dict[tuple[str, str], E.Experiment]:
    """(experiment root, method) -> its experiment: the training jobs of every experiment."""
    table = E.experiment_table(config)
    return {(experiment.root, method): experiment for experiment in table for method in experiment.methods}


def mask_specs(config: dict) -> dict[str, E.MaskSpec]:
    """mask folder -> the mask specification of the experiments that read it."""
    return {experiment.masks.folder: experiment.masks for experiment in E.experiment_table(config)}


def summary_config(config: dict) -> dict:
    corpus = corpora.corpus_kind(config)
    return {
        "methods": list(config["methods"]),
        "modalities": corpora.modalities(config),
        "paper_dataset": corpus.paper_dataset,
        "paper_columns": corpus.paper_columns,
    }


def index_config(config: dict, stage: str) -> dict:
    experiments = [experiment for experiment in E.experiment_table(config) if experiment.stage == stage]
    return {
        "stage": stage,
        "experiments": [E.as_dict(experiment) for experiment in experiments],
        "config_hashes": {
            f"{experiment.name}/{method}": E.config_hash(E.train_job_config(config, experiment, method))
            for experiment in experiments
            for method in experiment.methods
        },
        # the methods whose runs must carry the values of data/tuning/<method>.json (the index's inputs)
        "tuned_methods": sorted(
            {method for experiment in experiments for method in experiment.methods}
            & set(E.tuned_methods(config))
        ),
        "seeds": config["train"]["seeds"],
        "folds": config["splits"]["folds"],
    }


def reported_config(config: dict) -> dict:
    """What the report shows of the config (its provenance): every key that changes a result of this grid, so
    not how jobs ran (`runtime`), nor the options of methods it does not train, of encoders it does not use or
    of another corpus kind's generator; changing one of those reruns no report."""
    from mlaflow.pipeline.params import used_methods

    kind, methods = corpora.corpus_kind(config), used_methods(config)
    out = {section: value for section, value in config.items() if section != "runtime"}
    generators = {k.generator_key for k in corpora.CORPORA.values() if k.generator_key}
    out["corpus"] = {
        key: value
        for key, value in config["corpus"].items()
        if key not in generators or key == kind.generator_key
    }
    modalities = corpora.modalities(config)
    out["features"] = {
        key: (
            {**encoder_settings(value), "precomputed": value["precomputed"]}
            if key in modalities and "encoder" in value
            else value
        )
        for key, value in config["features"].items()
        if key in modalities or not isinstance(value, dict)
    }
    sections = {options_section(m) for m in methods}  # a variant's options are its base's section
    out["method_params"] = {m: options for m, options in config["method_params"].items() if m in sections}
    out["train"] = {
        **config["train"],
        "method_optimizers": {m: v for m, v in config["train"]["method_optimizers"].items() if m in methods},
    }
    return out


def job_configs(config: dict) -> dict[str, dict]:
    """path -> content of every job's config file, for the validated `config` (mlaflow.pipeline.params.validate)."""
    corpus = corpora.corpus_kind(config)
    configs = {
        "data/manifest/manifest.config.json": corpora.manifest_config(config),
        "data/splits/folds.config.json": {
            "splits": config["splits"],
            # every fold must train on every class; an error names the label table the rows come from
            "classes": corpora.classes(config),
            "table": corpora.label_table(config),
        },
        "reports/summary.config.json": summary_config(config),
        "reports/report.config.json": {
            "config": reported_config(config),
            "modalities": corpora.modalities(config),
            "classes": corpora.classes(config),
            "paper_dataset": corpus.paper_dataset,
            "paper_columns": corpus.paper_columns,
            "faces": corpora.FACES_DIR if corpora.cuts_faces(config) else None,
        },
    }
    if corpora.cuts_faces(config):
        configs[f"{corpora.FACES_DIR}.config.json"] = {"settings": config["corpus"]["faces"]}
    if corpus.generator_module:
        configs[f"{config['corpus']['root']}.config.json"] = {
            "generator": corpus.generator_module,
            "settings": config["corpus"][corpus.generator_key],
        }
    for modality in extracted_modalities(config):
        # the options of the modality's own encoder only (features.protocol.ENCODER_OPTIONS)
        settings = encoder_settings(config["features"][modality])
        if settings["model"] == "embedded":
            configs[f"data/models/{modality}.config.json"] = {
                "modality": modality,
                "embedded_seed": config["features"]["embedded_seed"],
                "encoder": {k: v for k, v in settings.items() if k not in ("model", "batch_size")},
            }
        configs[f"data/features/{modality}.config.json"] = {
            "modality": modality,
            "half_precision": config["features"]["half_precision"],
            "model_source": settings["model"],
            "encoder": settings,
        }
    for folder, spec in mask_specs(config).items():
        configs[f"data/splits/masks/{folder}.config.json"] = E.mask_job_config(config, spec)
    for method in E.tuned_methods(config):
        configs[f"data/tuning/{method}.config.json"] = E.tuning_job_config(config, method)
    configs["data/tuning/summary.config.json"] = {
        "enabled": config["tuning"]["enabled"],
        "methods": E.tuned_methods(config),
    }
    for (_root, method), experiment in experiment_of_method(config).items():
        configs[E.job_config_path(experiment, method)] = E.train_job_config(config, experiment, method)
    for stage, index in INDEX_FILES.items():
        configs[index.replace(".json", ".config.json")] = index_config(config, stage)
    configs.update(table1.sub_configs(config))
    return configs


def config_text(content: dict) -> str:
    """A job config file's text (the key order kept)."""
    return json_text(content, sort_keys=False)


def stale_unrecorded_job_configs(configs: dict[str, dict], root: Path = Path(".")) -> list[str]:
    """The job config files on disk whose content is not the one the config gives and that Snakemake has no
    record of (a copy DVC restored, `dvc exp run --queue`'s or a clone after `dvc pull`). The Snakefile removes
    them at parse time, so that the `job_config` rule writes them again and everything computed from them
    reruns. Where Snakemake has a record, its params trigger does the same without touching the file (a dry
    run changes nothing)."""
    return [
        path
        for path, content in configs.items()
        if (root / path).is_file()
        and not has_snakemake_record(path, root)
        and (root / path).read_text() != config_text(content)
    ]


def has_snakemake_record(path: str, root: Path = Path(".")) -> bool:
    """Whether Snakemake's metadata holds a record of output `path` (its file persistence: the path's urlsafe
    base64, cut into pieces of at most 254 characters, all but the last prefixed with @)."""
    name = urlsafe_b64encode(path.encode()).decode()
    pieces = [name[i : i + 254] for i in range(0, len(name), 254)]
    return (root / ".snakemake" / "metadata").joinpath(*["@" + p for p in pieces[:-1]], pieces[-1]).is_file()
