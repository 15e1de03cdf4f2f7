"""The report's inputs, loaded once into one `ReportContext` that every section reads.

Inputs:
- stage indexes (one JSON per stage the workflow ran, written after the stage's runs):
  {"stage": "main_grid", "experiments": [mlaflow.pipeline.experiments.as_dict(e), ...], "runs": [run JSON paths]}.
  The experiments come from them (`mlaflow.pipeline.experiments.from_dict`); nothing here parses an experiment's name.
  The index job has already checked every run's config hash against its experiment's job config.
- the runs: one metrics JSON per run, flattened into one table (`load_runs`, one row per run);
- the paper's published figures (`load_paper`): only the tables of the paper dataset the corpus stands for;
- for provenance: the feature stores' attributes and the mask files' statistics.

A cell an experiment lists in `reused` is not trained in it: `ReportContext.runs_of` puts the main-grid (or
complete-modality) run of the same method, rate, seed and fold in its place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import yaml

from mlaflow.data.masks import open_mask
from mlaflow.errors import InputError
from mlaflow.pipeline.experiments import STAGES, Experiment, from_dict

METRICS = ("accuracy", "unweighted_accuracy", "macro_f1", "weighted_f1")
MAIN_KINDS = ("main", "complete")  # the runs that reused cells stand for
# the paper's settings and the main mask protocol: the main tables
PAPER_KINDS = ("main", "complete", "suite")
KEYS = ("experiment", "kind", "method", "missing_rate", "seed", "fold")


# ------------------------------------------------------------------------------------------- the paper


@dataclass(frozen=True)
class Paper:
    """The paper's figures (percent) for one dataset; empty tables when the corpus stands for none."""

    dataset: str | None = None
    # method -> {paper column ("audio", "image", "multi"...): value}
    table1: dict = field(default_factory=dict)
    # method -> {missing rate: value} (Table 2, missing modalities)
    table2: dict = field(default_factory=dict)
    table3: dict = field(default_factory=dict)  # ("on"|"off" HGM, "on"|"off" DF) -> {paper column: value}
    # later papers' figures on this dataset, each under its own protocol (paper_results.yaml `later_work`): per
    # entry {table, label, source, protocol, accuracy: {missing rate or method: value}}
    later: list = field(default_factory=list)

    # modality -> the paper's column name (IEMOCAP's visual is "image")
    columns: dict = field(default_factory=dict)

    def column(self, modality: str) -> str:
        """The paper's name of a modality's column."""
        return self.columns.get(modality, modality)

    def row(self, table: dict, key, modalities: list[str]) -> list[float] | None:
        """A Table 1 or 3 row in the order (modalities..., multi), or None if the paper has no such row."""
        entry = table.get(key)
        columns = [*(self.column(m) for m in modalities), "multi"]
        if entry is None or any(c not in entry for c in columns):
            return None
        return [entry[c] for c in columns]


def load_paper(path: str | Path, dataset: str | None, columns: dict | None = None) -> Paper:
    """The tables of `dataset` in the paper's results file (data/reference/paper_results.yaml); `dataset` None:
    no paper figures at all (the file is not read)."""
    if dataset is None:
        return Paper()
    path = Path(path)
    if not path.exists():
        raise InputError(
            path, "paper results file not found", "restore it from git or fix report.paper_results"
        )
    doc = yaml.safe_load(path.read_text())

    def by_method(table: dict | None, methods_key: str, rows: dict | None) -> dict:
        if not table or not rows:
            return {}
        return {m: {col: values[i] for col, values in rows.items()} for i, m in enumerate(table[methods_key])}

    t1 = doc.get("table1_complete_modalities") or {}
    table1 = by_method(t1, "methods", t1.get(dataset))
    t2 = doc.get(f"table2_missing_modalities_{dataset.lower()}") or {}
    table2 = {
        name: dict(zip(t2["missing_rates"], values)) for name, values in t2.items() if name != "missing_rates"
    }
    t3 = doc.get("table3_ablation") or {}
    configs = [tuple("on" if flag else "off" for flag in c) for c in t3.get("configs", [])]
    table3 = by_method({"configs": configs}, "configs", t3.get(dataset)) if configs else {}
    later = [entry for entry in doc.get("later_work") or [] if entry.get("dataset") == dataset]
    return Paper(dataset, table1, table2, table3, later=later, columns=dict(columns or {}))


# ------------------------------------------------------------------------------------------- indexes and runs


def load_indexes(paths: list[str]) -> tuple[list[Experiment], list[str], list[str]]:
    """(experiments in stage order, run paths, stages given) of the stage indexes."""
    indexes = []
    for path in paths:
        try:
            index = json.loads(Path(path).read_text())
            indexes.append(
                (index["stage"], [from_dict(d) for d in index["experiments"]], list(index["runs"]))
            )
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise InputError(
                path, f"unreadable stage index ({err!r})", "re-run the stage's index job"
            ) from err
    indexes.sort(key=lambda i: STAGES.index(i[0]) if i[0] in STAGES else len(STAGES))
    experiments = [e for _, exps, _ in indexes for e in exps]
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise InputError(
            None,
            f"an experiment is listed by two stage indexes ({sorted(names)})",
            "re-run the index jobs (each experiment belongs to one stage)",
        )
    runs = list(dict.fromkeys(p for _, _, paths_ in indexes for p in paths_))
    return experiments, runs, [stage for stage, _, _ in indexes]


def _row(run: dict, modalities: list[str]) -> dict:
    """One run's figures: metrics, per-modality accuracy, gaps, test-time shift, selection and fusion rules."""
    metrics = run["metrics"]
    row = {
        "method": run["method"],
        "missing_rate": float(run["missing_rate"]),
        "seed": run["seed"],
        "fold": run["fold"],
        "config_hash": run.get("config_hash"),
    }
    row.update({k: metrics[k] for k in METRICS})
    row.update({f"{m}_accuracy": metrics["per_modality_accuracy"][m] for m in modalities})
    classes = metrics.get("per_modality_predicted_classes", {})
    row.update({f"{m}_constant": float(classes[m] <= 1) for m in modalities if m in classes})
    row["share_all_missing"] = metrics["share_all_missing"]
    row.update({f"gap_{pair}": gap for pair, gap in metrics.get("modality_gap", {}).items()})
    row.update({f"shift_{label}": acc for label, acc in (run.get("test_time_shift") or {}).items()})
    row["prior_accuracy"] = run.get("prior_accuracy", float("nan"))
    row["best_epoch"] = run["validation"]["best_epoch"]
    row["seconds_per_epoch"] = run["seconds_per_epoch"]
    selection = run.get("selection", {})
    if "fused" in selection:
        row["test_selected_accuracy"] = selection["fused"]["test_selected"]
        row["optimism"] = selection["fused"]["optimism"]
    for rule, chosen in selection.items():
        if rule != "fused":  # other test-time fusion rules, each at its own validation-selected epoch
            row[f"fusion_{rule}_accuracy"] = chosen["validation_selected"]
    return row


def load_runs(
    paths: list[str], experiments: list[Experiment], modalities: list[str]
) -> tuple[pd.DataFrame, dict]:
    """(one row per run, embedding projections). Rows are ordered as the experiment table orders its cells
    (experiment, method and rate as listed, then seed, then fold), whatever the order of `paths`: the tables
    list methods in that order. Projections: per (experiment, method, missing rate), the 2-D embedding
    projection of the first run (lowest seed, then fold) that recorded one."""
    position = {e.name: i for i, e in enumerate(experiments)}
    kinds = {e.name: e.kind for e in experiments}
    cells = {e.name: {c: j for j, c in enumerate(e.cells)} for e in experiments}
    rows, order, projections = [], [], {}
    for path in paths:
        try:
            run = json.loads(Path(path).read_text())
            row = _row(run, modalities)
            name = run["experiment"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise InputError(
                path, f"unreadable run metrics ({err!r})", "re-run its training job (snakemake -R train)"
            ) from err
        if name not in position:
            raise InputError(
                path,
                f"run of experiment {name!r}, which no stage index lists",
                "re-run the index job of the run's stage",
            )
        rows.append({"experiment": name, "kind": kinds[name], **row})
        cell = (row["method"], row["missing_rate"])
        order.append((position[name], cells[name].get(cell, len(cells[name])), row["seed"], row["fold"]))
        projection = run["metrics"].get("embedding_projection")
        key, rank = (name, *cell), (row["seed"], row["fold"])
        if projection is not None and (key not in projections or rank < projections[key][0]):
            projections[key] = (rank, projection)
    table = pd.DataFrame([rows[i] for i in sorted(range(len(rows)), key=order.__getitem__)])
    base = [*KEYS, *METRICS, *(f"{m}_accuracy" for m in modalities), "share_all_missing"]
    for column in base:  # an empty table still has the columns the sections select
        if column not in table:
            table[column] = pd.Series(dtype=object if column in ("experiment", "kind", "method") else float)
    return table.reset_index(drop=True), {k: p for k, (_, p) in projections.items()}


# ------------------------------------------------------------------------------------------- provenance inputs


def feature_provenance(feature_paths: list[str]) -> list[dict]:
    """Each feature store's attributes (modality, and those it recorded of encoder, model source, pretrained,
    dim), its number of rows `n` and its `width` (the features' dimension, whatever its attributes say)."""
    out = []
    for path in feature_paths:
        try:
            with h5py.File(path, "r") as f:
                # numpy scalars and arrays (a store of prepared inputs records its input_shape) as Python values
                attrs = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in f.attrs.items()}
                n, width = f["features"].shape
                out.append({"file": path, "n": int(n), "width": int(width), **attrs})
        except (OSError, KeyError) as err:  # truncated or not a feature store
            raise InputError(
                path,
                f"cannot be read as a feature store ({err})",
                "delete it and run `dvc repro` again (it is re-extracted)",
            ) from err
    return out


def mask_summary(mask_paths: list[str], modalities: list[str]) -> list[dict]:
    """Per mask file: protocol, missing rate, real missing fraction and the share of samples with k modalities
    present (k = 0..M), each the mean over seeds."""
    out = []
    for path in mask_paths:
        with open_mask(path) as f:
            n_modalities = len(f.attrs.get("modalities", modalities))
            seeds = [k for k in f if k.startswith("seed_")]
            real = [float(f[k].attrs["missing_fraction"]) for k in seeds]
            share = {
                n: float(np.mean([f[k].attrs[f"share_with_k_present.{n}"] for k in seeds]))
                for n in range(n_modalities + 1)
            }
            out.append(
                {
                    "protocol": str(f.attrs["protocol"]),
                    "missing_rate": float(f.attrs["missing_rate"]),
                    "real_missing_fraction": float(np.mean(real)),
                    "share_all_missing": share[0],
                    "n_modalities": n_modalities,
                    **{f"share_{n}_present": share[n] for n in range(1, n_modalities + 1)},
                }
            )
    return sorted(out, key=lambda r: (r["protocol"], r["missing_rate"]))


# ------------------------------------------------------------------------------------------- the context


@dataclass
class ReportContext:
    """Everything a section reads. `job_config` is the job's config file: for the report
    {"config": <the validated params config>, "modalities", "classes", "paper_dataset"}, for the summary
    {"methods", "modalities", "paper_dataset"}."""

    job_config: dict
    experiments: list[Experiment]
    runs: pd.DataFrame
    paper: Paper
    out_dir: Path
    stages: list[str] = field(default_factory=list)
    projections: dict = field(default_factory=dict)
    features: list[dict] = field(default_factory=list)
    masks: list[dict] = field(default_factory=list)
    tuning: list[dict] = field(
        default_factory=list
    )  # each tuned method's chosen values (data/tuning/<m>.json)

    @property
    def config(self) -> dict:
        return self.job_config.get("config", {})

    @property
    def modalities(self) -> list[str]:
        return list(self.job_config["modalities"])

    @property
    def settings_note(self) -> str:
        """Which hyperparameters the tables show: the tuning stage's or params.yaml's."""
        if not self.tuning:
            return "Hyperparameters: params.yaml's values for every method (tuning.enabled: false)."
        return (
            f"Hyperparameters: each method's values chosen by the tuning stage ({self.tuning[0]['budget']} "
            'Optuna trials per method on validation accuracy; section "Tuning"). Learning rates and '
            "options named elsewhere in the text are params.yaml's, where each search starts."
        )

    def of_kind(self, *kinds: str) -> list[Experiment]:
        return [e for e in self.experiments if e.kind in kinds]

    def runs_of_kind(self, *kinds: str) -> pd.DataFrame:
        return self.runs[self.runs["kind"].isin(kinds)]

    @property
    def paper_runs(self) -> pd.DataFrame:
        """Runs under the paper's settings and the main masks: the main grid, complete modalities, the suite."""
        return self.runs_of_kind(*PAPER_KINDS)

    @property
    def main_methods(self) -> list[str]:
        """The main grid's methods (every missing rate), in the table's order."""
        return list(dict.fromkeys(m for e in self.of_kind("main") for m in e.methods))

    def runs_of(self, experiment: Experiment) -> pd.DataFrame:
        """An experiment's runs, with the main-grid (or complete-modality) runs standing in for its reused
        cells, ordered by method, missing rate, seed and fold."""
        own = self.runs[self.runs["experiment"] == experiment.name]
        main = self.runs_of_kind(*MAIN_KINDS)
        reused = set(experiment.reused)
        stand_in = main.loc[[(m, r) in reused for m, r in zip(main["method"], main["missing_rate"])]]
        frame = pd.concat(
            [own, stand_in.assign(experiment=experiment.name, kind=experiment.kind)], ignore_index=True
        )
        methods = {
            m: i for i, m in enumerate(dict.fromkeys(m for m, _ in (*experiment.cells, *experiment.reused)))
        }
        return frame.sort_values(
            ["method", "missing_rate", "seed", "fold"],
            kind="stable",
            ignore_index=True,
            key=lambda c: c.map(methods) if c.name == "method" else c,
        )


def load_context(
    job_config: dict,
    index_paths: list[str],
    paper_path: str | Path,
    out_dir: Path,
    feature_paths: list[str] = (),
    mask_paths: list[str] = (),
    tuned_paths: list[str] = (),
) -> ReportContext:
    experiments, run_paths, stages = load_indexes(list(index_paths))
    modalities = list(job_config["modalities"])
    runs, projections = load_runs(run_paths, experiments, modalities)
    return ReportContext(
        job_config,
        experiments,
        runs,
        load_paper(paper_path, job_config.get("paper_dataset"), job_config.get("paper_columns")),
        Path(out_dir),
        stages,
        projections,
        feature_provenance(list(feature_paths)),
        mask_summary(list(mask_paths), modalities),
        [_read_json(path, "re-run the tuning stage (dvc repro)") for path in tuned_paths],
    )


def _read_json(path: str | Path, fix: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(path, f"unreadable ({err})", fix) from err
