"""Report assembly: per-run metrics JSONs -> reports/metrics.json (DVC metrics), CSVs for DVC plots,
reports/report.md (tables beside the paper's figures, a plot, provenance).

Aggregation follows the paper's Table 2: for each seed the mean over folds, then mean +- std (sample std,
ddof=1) over seeds. Runs whose recorded params hash differs from the current params are refused: a stale
result never reaches a table.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import yaml

from mlaflow.errors import InputError
from mlaflow.io import atomic_path, write_json, write_text
from mlaflow.params import MODALITIES, RUN_SECTIONS, params_hash, rate_key
from mlaflow.provenance import git_commit, versions

METRICS = ("accuracy", "unweighted_accuracy", "macro_f1", "weighted_f1")
PAPER_NAMES = {"mla": "mla", "late_fusion": "late_fusion"}


def load_runs(paths: list[str], params: dict) -> pd.DataFrame:
    expected = params_hash(params, RUN_SECTIONS)
    rows = []
    for path in paths:
        try:
            run = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(path, f"unreadable run metrics ({err})", "re-run its training job (snakemake -R train)")
        if run.get("params_hash") != expected:
            raise InputError(path, f"stale result: trained with params hash {run.get('params_hash')}, "
                             f"current params hash is {expected}",
                             "re-run training in this workspace (`snakemake all` or `dvc repro`)")
        row = {k: run[k] for k in ("method", "missing_rate", "seed", "fold")}
        row.update({k: run["metrics"][k] for k in METRICS})
        row.update({f"{m}_accuracy": run["metrics"]["per_modality_accuracy"][m] for m in MODALITIES})
        row["share_all_missing"] = run["metrics"]["share_all_missing"]
        row["best_epoch"] = run["validation"]["best_epoch"]
        row["seconds_per_epoch"] = run["seconds_per_epoch"]
        rows.append(row)
    return pd.DataFrame(rows)


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean over folds per seed, then mean and std over seeds; one row per (method, missing_rate)."""
    value_cols = [c for c in runs.columns if c not in ("method", "missing_rate", "seed", "fold")]
    per_seed = runs.groupby(["method", "missing_rate", "seed"], sort=False)[value_cols].mean()
    grouped = per_seed.groupby(level=["method", "missing_rate"], sort=False)
    out = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).fillna(0.0).add_suffix("_std"))
    out["n_seeds"] = grouped.size()
    out["n_runs"] = runs.groupby(["method", "missing_rate"], sort=False).size()
    return out.reset_index()


def _pm(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _paper_table2(paper: dict) -> dict[str, dict[float, float]]:
    table = paper["table2_missing_modalities_iemocap"]
    rates = table["missing_rates"]
    return {name: dict(zip(rates, table[name])) for name in table if name != "missing_rates"}


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _feature_provenance(feature_paths: list[str]) -> list[dict]:
    out = []
    for path in feature_paths:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
            out.append({"file": path, "n": int(f["features"].shape[0]), **attrs})
    return out


def _mask_summary(mask_paths: list[str]) -> list[dict]:
    out = []
    for path in mask_paths:
        with h5py.File(path, "r") as f:
            seeds = [k for k in f.keys() if k.startswith("seed_")]
            real = [float(f[k].attrs["missing_fraction"]) for k in seeds]
            none = [float(f[k].attrs["share_with_k_present.0"]) for k in seeds]
            out.append({"missing_rate": float(f.attrs["missing_rate"]), "real_missing_fraction": float(np.mean(real)),
                        "share_all_missing": float(np.mean(none))})
    return sorted(out, key=lambda r: r["missing_rate"])


def plot(summary: pd.DataFrame, paper: dict[str, dict[float, float]], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (method, group) in enumerate(summary.groupby("method", sort=False)):
        color = f"C{i}"
        ax.errorbar(group["missing_rate"], 100 * group["accuracy_mean"], yerr=100 * group["accuracy_std"],
                    marker="o", capsize=3, color=color, label=f"{method} (this run)")
        if PAPER_NAMES.get(method) in paper:
            ref = paper[PAPER_NAMES[method]]
            ax.plot(list(ref), list(ref.values()), ls="--", marker="x", color=color, alpha=0.6,
                    label=f"{method} (paper, IEMOCAP)")
    ax.set_xlabel("missing rate (each modality of each sample, train = val = test)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy against missing rate (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out_png, ".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def build_report(run_paths: list[str], params: dict, out_dir: Path, feature_paths: list[str],
                 masks: list[str]) -> None:
    runs = load_runs(run_paths, params)
    summary = aggregate(runs)
    paper_path = Path(params["report"]["paper_results"])
    if not paper_path.exists():
        raise InputError(paper_path, "paper results file not found", "restore it from git or fix report.paper_results")
    paper_all = yaml.safe_load(paper_path.read_text())
    paper = _paper_table2(paper_all)
    methods = list(dict.fromkeys(runs["method"]))
    rates = sorted(runs["missing_rate"].unique())
    cell = summary.set_index(["method", "missing_rate"])

    # DVC metrics: nested, no dots in keys.
    metrics = {"params_hash": params_hash(params, RUN_SECTIONS)}
    for method in methods:
        metrics[method] = {}
        for rate in rates:
            row = cell.loc[(method, rate)]
            entry = {f"{k}_{stat}": round(float(row[f"{k}_{stat}"]), 6)
                     for k in (*METRICS, *(f"{m}_accuracy" for m in MODALITIES)) for stat in ("mean", "std")}
            entry["n_runs"] = int(row["n_runs"])
            metrics[method][rate_key(rate)] = entry
    write_json(out_dir / "metrics.json", metrics)

    # DVC plots data: one column per method (this run) and per paper curve.
    plot_rows = []
    for rate in rates:
        row = {"missing_rate": rate}
        for method in methods:
            row[method] = round(100 * float(cell.loc[(method, rate), "accuracy_mean"]), 4)
            ref = paper.get(PAPER_NAMES.get(method, ""), {})
            row[f"paper_{method}"] = ref.get(rate, "")
        plot_rows.append(row)
    with atomic_path(out_dir / "plots" / "accuracy_vs_missing_rate.csv", ".csv") as tmp:
        pd.DataFrame(plot_rows).to_csv(tmp, index=False)
    plot(summary, paper, out_dir / "figures" / "accuracy_vs_missing_rate.png")

    write_text(out_dir / "report.md", render_markdown(summary, runs, paper, params, methods, rates,
                                                      _feature_provenance(feature_paths), _mask_summary(masks)))


def render_markdown(summary, runs, paper, params, methods, rates, features, mask_summary) -> str:
    cell = summary.set_index(["method", "missing_rate"])
    n_seeds, n_folds = len(params["train"]["seeds"]), len(params["splits"]["folds"])
    any_pretrained = any(bool(f.get("pretrained")) for f in features)
    corpus = params["corpus"]
    out = ["# mlaflow report: learning with missing modalities (MLA, CVPR 2024, Table 2 protocol)", ""]
    if corpus["kind"] == "embedded" or not any_pretrained:
        out += ["> **Read this first.** " + (
            "These numbers come from the *embedded synthetic corpus* (generated, IEMOCAP layout), "
            if corpus["kind"] == "embedded" else f"These numbers come from the corpus at `{corpus['root']}`, ")
            + ("with **randomly initialised, not pretrained** encoders. " if not any_pretrained else "")
            + "They test that the workflow runs and how the methods behave relative to each other; they are "
              "**not comparable** to the paper's IEMOCAP figures, which are shown beside them for reference only.", ""]
    out += [f"Accuracy is overall test accuracy (WA). Each cell: for each seed the mean over {n_folds} "
            f"leave-one-session-out folds, then mean ± std over {n_seeds} seeds. Model selection on validation "
            f"only (validation drawn from the training sessions). Masks: `{params['masks']['protocol']}`, same rate on "
            f"train, validation and test; samples with no modality left: `{params['masks']['all_missing']}`.", ""]

    header = ["method"] + [f"{r:.1f}" for r in rates]
    rows = []
    for method in methods:
        rows.append([f"**{method}**"] + [_pm(cell.loc[(method, r), "accuracy_mean"], cell.loc[(method, r), "accuracy_std"])
                                         for r in rates])
        ref = paper.get(PAPER_NAMES.get(method, ""))
        if ref:
            rows.append([f"{method} (paper)"] + [f"{ref[r]:.2f}" if r in ref else "—" for r in rates])
    out += ["## Accuracy (%) against missing rate", "", _markdown_table(header, rows), "",
            "Paper rows: Table 2 (IEMOCAP, missing rates 0.1-0.7; the paper has no 0.0 column in this protocol).", "",
            "![accuracy against missing rate](figures/accuracy_vs_missing_rate.png)", ""]

    out += ["## All metrics (%, mean ± std over seeds)", ""]
    header = ["method", "missing rate", "WA", "UA", "macro F1", "weighted F1", *[f"{m} acc" for m in MODALITIES],
              "all-missing share", "runs"]
    rows = []
    for method in methods:
        for r in rates:
            c = cell.loc[(method, r)]
            rows.append([method, f"{r:.1f}", *[_pm(c[f"{k}_mean"], c[f"{k}_std"]) for k in METRICS],
                         *[_pm(c[f"{m}_accuracy_mean"], c[f"{m}_accuracy_std"]) for m in MODALITIES],
                         f"{100 * c['share_all_missing_mean']:.1f}", str(int(c["n_runs"]))])
    out += [_markdown_table(header, rows), "",
            "Per-modality accuracy: each modality's own prediction (MLA: the shared head on that modality's "
            "encoder; late fusion: that modality's classifier), on the test samples where the modality is present.", ""]

    out += ["## Masks", "", _markdown_table(
        ["missing rate", "real missing fraction", "samples with no modality"],
        [[f"{m['missing_rate']:.2f}", f"{m['real_missing_fraction']:.3f}", f"{100 * m['share_all_missing']:.1f}%"]
         for m in mask_summary]), ""]

    out += ["## Provenance", "", "```"]
    out += [f"generated:    {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
            f"git commit:   {git_commit()}",
            f"params hash:  {params_hash(params)} (runs: {params_hash(params, RUN_SECTIONS)})",
            f"corpus:       {corpus['kind']} ({corpus['root']}), label setup {corpus['label_setup']}"]
    for f in features:
        out.append(f"encoder:      {f.get('modality')}: {f.get('encoder')} from {f.get('model_source')}, "
                   f"pretrained={bool(f.get('pretrained'))}, dim={f.get('dim')}, n={f['n']}, file {f['file']}")
    out.append(f"training:     {json.dumps(params['train'], sort_keys=True)}")
    for method in methods:
        out.append(f"method:       {method} {json.dumps(params['method_params'].get(method, {}), sort_keys=True)}")
    out.append("versions:     " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    out += ["```", ""]
    return "\n".join(out)
