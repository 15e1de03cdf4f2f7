"""One training job (`mlaflow train`): the runs of one method at one missing rate that the rule groups
(train.job_group), read from the job's config file and its input files, trained stacked (or one at a time),
one metrics JSON written per run.

The job's config (written by the workflow from the config Snakemake was given; see
`mlaflow.experiments.train_job_config`) holds everything the runs compute from besides the input files; every
run records that config's hash, so the report can refuse a run trained under other settings.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from mlaflow.data.folds import fold_indices
from mlaflow.data.masks import all_missing_forbidden_by, mask_missing_rate, read_mask, training_only
from mlaflow.errors import InputError
from mlaflow.keys import config_hash, format_rate
from mlaflow.io import write_json
from mlaflow.provenance import git_commit
from mlaflow.train.data import load_corpus
from mlaflow.train.loop import RunSpec, train_runs

log = logging.getLogger(__name__)


def run_training_job(config: dict, missing_rate: float, seeds: list[int], folds: list[int], manifest: str | Path,
                     feature_paths: list[str], folds_path: str | Path, masks_path: str | Path,
                     shift_mask_paths: list[str], outputs: list[str]) -> None:
    """Train the runs seeds x folds (seeds outer) of the config's method at `missing_rate`; write outputs[i]
    for run i. `shift_mask_paths`: the mask files of `config["test_time_shift"]` (test-time shift)."""
    runs = [(seed, fold) for seed in seeds for fold in folds]
    if len(outputs) != len(runs):
        raise SystemExit(f"expected {len(runs)} output paths (seeds x folds), got {len(outputs)}")
    modalities = config["modalities"]
    if len(feature_paths) != len(modalities):
        raise SystemExit(f"expected one feature store per modality {modalities}, got {len(feature_paths)}")
    torch.set_num_threads(config["train"]["threads"])
    corpus = load_corpus(manifest, dict(zip(modalities, feature_paths)), config["classes"], config["feature_dims"])
    folds_table = pd.read_csv(folds_path, dtype={"utterance_id": str})
    if folds_table["utterance_id"].tolist() != corpus.utterance_ids:
        raise InputError(folds_path, "utterance ids differ from the manifest's",
                         "regenerate folds after the manifest changed (snakemake --forcerun folds)")
    spec = config["experiment"]["masks"]
    forbid = all_missing_forbidden_by(spec, config["masks"]["all_missing"])
    ids = corpus.utterance_ids
    masks = {seed: read_mask(masks_path, seed, ids, spec, forbid) for seed in seeds}
    shift = {}
    for path in shift_mask_paths:
        label = format_rate(mask_missing_rate(path))
        shift[label] = {seed: read_mask(path, seed, ids, spec, forbid) for seed in seeds}
    if sorted(shift) != sorted(config["test_time_shift"]):
        raise SystemExit(f"test-time shift masks {sorted(shift)} do not match the config's {config['test_time_shift']}")
    specs = []
    for seed, fold in runs:
        split = fold_indices(folds_table, fold)
        present = training_only(masks[seed], split) if spec["training_only"] else masks[seed]
        specs.append(RunSpec(seed * 1000 + fold, present, split, {label: m[seed] for label, m in shift.items()}))
    method = config["method"]
    settings = {"train": config["train"], "method_params": config["method_params"]}
    if config["train"]["batch_runs"]:
        records = train_runs(method, corpus, specs, settings)
    else:
        records = [record for s in specs for record in train_runs(method, corpus, [s], settings)]
    run_hash, commit = config_hash(config), git_commit()
    for (seed, fold), record, out in zip(runs, records, outputs):
        record.update(method=method, experiment=config["experiment"]["name"],
                      experiment_kind=config["experiment"]["kind"], missing_rate=missing_rate, seed=seed, fold=fold,
                      masks=spec, all_missing=config["masks"]["all_missing"],
                      masked_input=config["train"]["masked_input"],
                      method_params=config["method_params"].get(method, {}), config_hash=run_hash, git_commit=commit,
                      encoders={m: {k: corpus.feature_attrs[m].get(k) for k in ("encoder", "pretrained", "model_source")}
                                for m in modalities})
        write_json(out, record)
        log.info("%s rate=%.2f seed=%d fold=%d: test acc %.4f (val %.4f at epoch %d)", method, missing_rate,
                 seed, fold, record["metrics"]["accuracy"], record["validation"]["accuracy"],
                 record["validation"]["best_epoch"])
