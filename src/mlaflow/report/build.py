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
from mlaflow.params import MODALITIES, PAPER_VARIANT, RUN_SECTIONS, params_hash, rate_key, variant_params
from mlaflow.provenance import git_commit, versions
from mlaflow.report import complete, fidelity, suite

METRICS = ("accuracy", "unweighted_accuracy", "macro_f1", "weighted_f1")
PAPER_NAMES = {"mla": "mla", "late_fusion": "late_fusion", "qmf": "qmf"}


def load_runs(paths: list[str], params: dict) -> pd.DataFrame:
    """One row per run. A run's params hash must be that of the current params with its variant applied."""
    expected_hash: dict[str, str] = {}
    rows = []
    for path in paths:
        try:
            run = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(path, f"unreadable run metrics ({err})", "re-run its training job (snakemake -R train)")
        variant = run.get("variant", PAPER_VARIANT)
        if variant not in expected_hash:
            expected_hash[variant] = params_hash(variant_params(params, variant), RUN_SECTIONS)
        expected = expected_hash[variant]
        if run.get("params_hash") != expected:
            raise InputError(path, f"stale result: trained with params hash {run.get('params_hash')}, "
                             f"current params hash is {expected}",
                             "re-run training in this workspace (`snakemake all` or `dvc repro`)")
        row = {"variant": variant, **{k: run[k] for k in ("method", "missing_rate", "seed", "fold")}}
        row.update({k: run["metrics"][k] for k in METRICS})
        row.update({f"{m}_accuracy": run["metrics"]["per_modality_accuracy"][m] for m in MODALITIES})
        row["share_all_missing"] = run["metrics"]["share_all_missing"]
        row.update({f"gap_{pair}": gap for pair, gap in run["metrics"].get("modality_gap", {}).items()})
        row.update({f"shift_{label}": acc for label, acc in (run.get("test_time_shift") or {}).items()})
        row["best_epoch"] = run["validation"]["best_epoch"]
        row["seconds_per_epoch"] = run["seconds_per_epoch"]
        selection = run.get("selection", {})
        if "fused" in selection:
            row["test_selected_accuracy"] = selection["fused"]["test_selected"]
            row["optimism"] = selection["fused"]["optimism"]
        for rule, chosen in selection.items():
            if rule != "fused":  # other test-time fusion rules, each at its own validation-selected epoch
                row[f"fusion_{rule}_accuracy"] = chosen["validation_selected"]
        rows.append(row)
    return pd.DataFrame(rows)


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean over folds per seed, then mean and std over seeds; one row per (method, missing_rate)."""
    value_cols = [c for c in runs.columns if c not in ("variant", "method", "missing_rate", "seed", "fold")]
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
            share = {n: float(np.mean([f[k].attrs[f"share_with_k_present.{n}"] for k in seeds])) for n in range(4)}
            out.append({"protocol": str(f.attrs["protocol"]), "missing_rate": float(f.attrs["missing_rate"]),
                        "real_missing_fraction": float(np.mean(real)), "share_all_missing": share[0],
                        **{f"share_{n}_present": share[n] for n in (1, 2, 3)}})
    return sorted(out, key=lambda r: (r["protocol"], r["missing_rate"]))


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


def _main_results(run_paths: list[str], params: dict):
    """All runs, the main grid's runs (variant "paper"), their aggregate, and the paper's Table 2."""
    all_runs = load_runs(run_paths, params)
    runs = all_runs[all_runs["variant"] == PAPER_VARIANT].drop(columns="variant")
    paper_path = Path(params["report"]["paper_results"])
    if not paper_path.exists():
        raise InputError(paper_path, "paper results file not found", "restore it from git or fix report.paper_results")
    paper = _paper_table2(yaml.safe_load(paper_path.read_text()))
    return all_runs, runs, aggregate(runs), paper


def build_summary(run_paths: list[str], params: dict, out_dir: Path) -> None:
    """The main grid's DVC metrics (reports/metrics.json) and plots data and figure."""
    _, runs, summary, paper = _main_results(run_paths, params)
    methods = list(params["methods"])  # the main grid: every missing rate
    rates = sorted(runs["missing_rate"].unique())
    cell = summary.set_index(["method", "missing_rate"])

    # DVC metrics: nested, no dots in keys; every method at the rates it ran (complete-modality ones at 0).
    metrics = {"params_hash": params_hash(params, RUN_SECTIONS)}
    for method, rate in cell.index:
        row = cell.loc[(method, rate)]
        entry = {f"{k}_{stat}": round(float(row[f"{k}_{stat}"]), 6)
                 for k in (*METRICS, *(f"{m}_accuracy" for m in MODALITIES)) for stat in ("mean", "std")}
        entry["n_runs"] = int(row["n_runs"])
        metrics.setdefault(method, {})[rate_key(rate)] = entry
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
    plot(summary[summary["method"].isin(methods)], paper, out_dir / "figures" / "accuracy_vs_missing_rate.png")


def build_report(run_paths: list[str], params: dict, out_dir: Path, feature_paths: list[str],
                 masks: list[str]) -> None:
    """reports/report.md, and with the fidelity experiment its metrics (reports/fidelity.json) and plots."""
    all_runs, runs, summary, paper = _main_results(run_paths, params)
    fidelity_tables = None
    if params["fidelity"]["enabled"]:
        fidelity_tables = (fidelity.effects(all_runs, params), fidelity.optimism(all_runs),
                           fidelity.by_protocol(all_runs, params))
        write_json(out_dir / "fidelity.json", {"params_hash": params_hash(params, (*RUN_SECTIONS, "fidelity")),
                                               **fidelity.metrics(*fidelity_tables)})
        _write_fidelity_plots(*fidelity_tables, out_dir)
    methods = list(params["methods"])
    rates = sorted(runs[runs["method"].isin(methods)]["missing_rate"].unique())
    paper_all = yaml.safe_load(Path(params["report"]["paper_results"]).read_text())
    complete_tables = (complete.table1(runs), complete.table3(all_runs, params), complete.gap_table(runs))
    complete.plot_gap(complete.load_projections(run_paths, complete.GAP_METHODS), out_dir / "figures" / "modality_gap.png")
    table2 = suite.table2(runs, params)
    suite_tables = (table2, suite.shift_table(runs, suite.strongest(table2)),
                    suite.isolation(all_runs, params) if params["isolation"]["enabled"] else None)
    suite.write_files(*suite_tables, paper, out_dir)
    write_json(out_dir / "missing_suite.json", {"params_hash": params_hash(params, (*RUN_SECTIONS, "missing_suite")),
                                                **suite.metrics(table2)})
    write_text(out_dir / "report.md", render_markdown(summary, runs, paper, params, methods, rates,
                                                      _feature_provenance(feature_paths), _mask_summary(masks),
                                                      fidelity_tables, complete_tables, paper_all, suite_tables))


def render_markdown(summary, runs, paper, params, methods, rates, features, mask_summary, fidelity_tables=None,
                    complete_tables=None, paper_all=None, suite_tables=None) -> str:
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
    for method, r in cell.index:
        c = cell.loc[(method, r)]
        rows.append([method, f"{r:.1f}", *[_pm(c[f"{k}_mean"], c[f"{k}_std"]) for k in METRICS],
                     *[_pm(c[f"{m}_accuracy_mean"], c[f"{m}_accuracy_std"]) for m in MODALITIES],
                     f"{100 * c['share_all_missing_mean']:.1f}", str(int(c["n_runs"]))])
    out += [_markdown_table(header, rows), "",
            "Per-modality accuracy: each modality's own prediction (MLA: the shared head on that modality's "
            "encoder; late fusion: that modality's classifier), on the test samples where the modality is present.", ""]

    if complete_tables is not None:
        out += render_complete(*complete_tables, paper_all)

    if suite_tables is not None:
        out += suite.render(*suite_tables, paper, params)

    if fidelity_tables is not None:
        out += render_fidelity(*fidelity_tables, params)

    out += ["## Masks", "", _markdown_table(
        ["protocol", "missing rate", "real missing fraction", "samples with 1 / 2 / 3 modalities",
         "samples with no modality"],
        [[m["protocol"], f"{m['missing_rate']:.2f}", f"{m['real_missing_fraction']:.3f}",
          " / ".join(f"{100 * m[f'share_{k}_present']:.1f}%" for k in (1, 2, 3)), f"{100 * m['share_all_missing']:.1f}%"]
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
    for method in dict.fromkeys(runs["method"]):
        out.append(f"method:       {method} {json.dumps(params['method_params'].get(method, {}), sort_keys=True)}")
    out.append("versions:     " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    out += ["```", ""]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------- fidelity


def _pp(mean: float, std: float) -> str:
    """A difference in percentage points, signed."""
    return f"{100 * mean:+.2f} ± {100 * std:.2f}"


def _write_fidelity_plots(effects: pd.DataFrame, optimism: pd.DataFrame, by_protocol: pd.DataFrame,
                          out_dir: Path) -> None:
    wide = effects.pivot(index="missing_rate", columns="difference", values="delta_mean")
    wide = (100 * wide[list(dict.fromkeys(effects["difference"]))]).round(4).reset_index()
    with atomic_path(out_dir / "plots" / "fidelity_effects.csv", ".csv") as tmp:
        wide.to_csv(tmp, index=False)
    table = by_protocol.assign(series=by_protocol["method"] + "_" + by_protocol["protocol"])
    wide = (100 * table.pivot(index="missing_rate", columns="series", values="mean")).round(4).reset_index()
    with atomic_path(out_dir / "plots" / "accuracy_vs_missing_rate_by_protocol.csv", ".csv") as tmp:
        wide.to_csv(tmp, index=False)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, method in enumerate(dict.fromkeys(by_protocol["method"])):
        for protocol, style in zip(dict.fromkeys(by_protocol["protocol"]), ("-", "--")):
            group = by_protocol[(by_protocol["method"] == method) & (by_protocol["protocol"] == protocol)]
            ax.errorbar(group["missing_rate"], 100 * group["mean"], yerr=100 * group["std"], ls=style, marker="o",
                        capsize=3, color=f"C{i}", label=f"{method}, {protocol} masks")
    ax.set_xlabel("missing rate")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy under both mask protocols (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out_dir / "figures" / "accuracy_vs_missing_rate_by_protocol.png", ".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def render_fidelity(effects: pd.DataFrame, optimism: pd.DataFrame, by_protocol: pd.DataFrame, params: dict) -> list[str]:
    rates = sorted(effects["missing_rate"].unique())
    cell = effects.set_index(["difference", "missing_rate"])
    out = ["## Fidelity: the paper's MLA against its released code", "",
           "Each row changes the paper's MLA (eq. 1-8, the first table's `mla`) in one way the released code "
           "differs, or in all of them (`released_code`); `README.md`, section \"Paper against released code\", "
           "explains each. Cell: the variant's accuracy, and in brackets its difference to the paper's MLA in "
           "percentage points, paired on seed and fold (per seed the mean over folds, then mean ± std over seeds). "
           "**Optimistic** rows pick the epoch on the test set: their figures are not comparable to "
           "validation-selected ones. Per-batch and fixed fusion and test-set selection act after training; they "
           "are measured on the paper runs themselves. At missing rate 0.0 nothing is masked, so variants that only "
           "change the masks or how masked inputs are fed equal the paper runs there and are not retrained.", ""]
    paper = effects.groupby("missing_rate")["paper_accuracy_mean"].first()
    rows = [["**paper** (eq. 1-8)"] + [f"{100 * paper[r]:.2f}" for r in rates]]
    for difference in dict.fromkeys(effects["difference"]):
        first = cell.loc[difference].iloc[0]
        label = f"{difference}" + (" **(optimistic)**" if first["optimistic"] else "")
        rows.append([f"{label}<br><sub>{first['what']}</sub>"] + [
            f"{100 * cell.loc[(difference, r), 'accuracy_mean']:.2f} ({_pp(cell.loc[(difference, r), 'delta_mean'], cell.loc[(difference, r), 'delta_std'])})"
            if (difference, r) in cell.index else "—" for r in rates])
    out += [_markdown_table(["difference"] + [f"missing rate {r:.1f}" for r in rates], rows), ""]
    out += ["The training budget (optimiser, learning rate, epochs) is this workflow's for every row; the released "
            "code's own (lr 1e-3, 100 epochs) is not part of this comparison.", ""]

    opt_rates = sorted(optimism["missing_rate"].unique())
    opt = optimism.set_index(["method", "missing_rate"])
    out += ["### Optimism of test-set model selection", "",
            "Best-test-epoch accuracy minus the test accuracy at the validation-selected epoch, same runs "
            "(percentage points, mean ± std over seeds). This is what picking epochs on the test set adds.", "",
            _markdown_table(["method"] + [f"{r:.1f}" for r in opt_rates],
                            [[m] + [_pp(opt.loc[(m, r), "mean"], opt.loc[(m, r), "std"]) if (m, r) in opt.index
                                    else "—" for r in opt_rates]
                             for m in dict.fromkeys(optimism["method"])]), ""]

    prot_rates = sorted(by_protocol["missing_rate"].unique())
    prot = by_protocol.set_index(["method", "protocol", "missing_rate"])
    keys = list(dict.fromkeys(zip(by_protocol["method"], by_protocol["protocol"])))
    out += ["### Accuracy under both mask protocols", "",
            "`bernoulli`: each modality of each sample missing independently with probability = missing rate (the "
            "paper's words). `cpm`: CPM-Net's protocol, every sample keeps at least one modality (what the public "
            "code used). Accuracy %, mean ± std over seeds.", "",
            _markdown_table(["method", "masks"] + [f"{r:.1f}" for r in prot_rates],
                            [[m, p] + [_pm(prot.loc[(m, p, r), "mean"], prot.loc[(m, p, r), "std"])
                                       if (m, p, r) in prot.index else "—" for r in prot_rates] for m, p in keys]), "",
            "![accuracy under both mask protocols](figures/accuracy_vs_missing_rate_by_protocol.png)", ""]
    return out


# ------------------------------------------------------------------------------ complete modalities


def render_complete(table1: pd.DataFrame, table3: pd.DataFrame | None, gaps: pd.DataFrame, paper_all: dict) -> list[str]:
    """Table 1 and Table 3 analogues at missing rate 0, beside the paper's IEMOCAP rows; bold: best of ours."""
    paper1 = paper_all["table1_complete_modalities"]
    paper_rows = dict(zip(paper1["methods"], zip(*(paper1["IEMOCAP"][complete.PAPER_MODALITY.get(m, m)]
                                                   for m in (*MODALITIES, "multi")))))
    best = {c: table1[f"{c}_mean"].max() for c in complete.COLUMNS}
    header = ["method", *[f"{m} acc" for m in MODALITIES], "multimodal acc", "paper (IEMOCAP): " +
              " / ".join([*(complete.PAPER_MODALITY[m] for m in MODALITIES), "multi"])]
    rows = []
    for method, row in table1.iterrows():
        cells = []
        for c in complete.COLUMNS:
            text = _pm(row[f"{c}_mean"], row[f"{c}_std"])
            cells.append(f"**{text}**" if row[f"{c}_mean"] == best[c] else text)
        ref = paper_rows.get(method)
        rows.append([method, *cells, " / ".join(f"{v:.2f}" for v in ref) if ref else "—"])
    out = ["## Complete modalities: every method (Table 1 analogue)", "",
           "Missing rate 0, accuracy % (mean ± std over seeds of the fold means). Unimodal accuracy as section "
           "4.1.1 says: fusion methods with the other modalities deactivated, `sum` one modality through its "
           "layer, `concat` the head split into per-modality sub-heads, MLA the shared head on one encoder, late "
           "fusion and QMF each modality's classifier. Bold: the best of this run per column.", "",
           _markdown_table(header, rows), "", complete.laziness_statement(table1), ""]
    pairs = [c[: -len("_mean")] for c in gaps.columns if c.endswith("_mean")]
    out += ["### Modality gap (Figure 3 analogue)", "",
            "Distance between the centroids of the L2-normalised encoder outputs of two modalities on the test set "
            "(Liang et al. 2022), missing rate 0, mean ± std over seeds. The figure projects one run's embeddings "
            "(seed and fold first in order) on their two principal axes.", "",
            _markdown_table(["method", *[p.replace("gap_", "") for p in pairs]],
                            [[m, *[f"{row[f'{p}_mean']:.3f} ± {row[f'{p}_std']:.3f}" for p in pairs]]
                             for m, row in gaps.iterrows()]), "",
            "![modality gap](figures/modality_gap.png)", ""]
    if table3 is None:
        out += ["MLA ablations (Table 3 analogue): need the fidelity variant `hgm_off` at missing rate 0.", ""]
        return out
    paper3 = paper_all["table3_ablation"]
    configs = [tuple("on" if flag else "off" for flag in c) for c in paper3["configs"]]
    paper3_rows = dict(zip(configs, zip(*(paper3["IEMOCAP"][complete.PAPER_MODALITY.get(m, m)]
                                          for m in (*MODALITIES, "multi")))))
    rows = []
    for (hgm, df), row in table3.iterrows():
        ref = paper3_rows.get((hgm, df))
        rows.append([hgm, df, *[_pm(row[f"{c}_mean"], row[f"{c}_std"]) for c in (*complete.COLUMNS[:-1], "multi")],
                     " / ".join(f"{v:.2f}" for v in ref) if ref else "—"])
    out += ["### MLA ablations (Table 3 analogue)", "",
            "Head gradient modification (HGM, eq. 3-5) and dynamic fusion (DF, eq. 6-8) on and off, missing rate "
            "0. HGM off: the fidelity variant `hgm_off`; DF off: the average of the unimodal predictions, measured "
            "on the same runs (fusion acts after training).", "",
            _markdown_table(["HGM", "DF", *[f"{m} acc" for m in MODALITIES], "multimodal acc",
                             "paper (IEMOCAP): " + " / ".join([*(complete.PAPER_MODALITY[m] for m in MODALITIES), "multi"])],
                            rows), ""]
    return out

