"""The report's last sections: the masks actually drawn (real missing fractions) and the provenance block
(commit, config hashes of the report and of every experiment's runs, corpus, encoders, settings, versions).
"""

from __future__ import annotations

import datetime as dt
import json

from mlaflow.keys import config_hash
from mlaflow.provenance import git_commit, versions
from mlaflow.report import markdown as md
from mlaflow.report.context import ReportContext


def masks(ctx: ReportContext) -> list[str]:
    """Per mask file: protocol, rate, real missing fraction, shares of samples by number of modalities left."""
    if not ctx.masks:
        return ["## Masks", "", "No mask file given.", ""]
    n = max(m["n_modalities"] for m in ctx.masks)
    return [
        "## Masks",
        "",
        *md.table(
            [
                "protocol",
                "missing rate",
                "real missing fraction",
                f"samples with {' / '.join(str(k) for k in range(1, n + 1))} modalities",
                "samples with no modality",
            ],
            [
                [
                    m["protocol"],
                    f"{m['missing_rate']:.2f}",
                    f"{m['real_missing_fraction']:.3f}",
                    " / ".join(
                        f"{100 * m[f'share_{k}_present']:.1f}%" if f"share_{k}_present" in m else "—"
                        for k in range(1, n + 1)
                    ),
                    f"{100 * m['share_all_missing']:.1f}%",
                ]
                for m in ctx.masks
            ],
        ),
        "",
    ]


def run_hashes(ctx: ReportContext) -> list[str]:
    """Per experiment, the config hashes its runs recorded (one per method's job config)."""
    out = []
    for experiment in ctx.experiments:
        runs = ctx.runs[ctx.runs["experiment"] == experiment.name]
        if runs.empty:
            out.append(f"runs:         {experiment.name} ({experiment.root}): none")
            continue
        by_method = runs.groupby("method", sort=False)["config_hash"].unique()
        hashes = ", ".join(f"{method} {'/'.join(map(str, h))}" for method, h in by_method.items())
        out.append(f"runs:         {experiment.name} ({experiment.root}): {hashes}")
    return out


def provenance(ctx: ReportContext) -> list[str]:
    config = ctx.config
    corpus = config["corpus"]
    classes = ", ".join(ctx.job_config.get("classes", []))
    out = [
        "## Provenance",
        "",
        "```",
        f"generated:    {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        f"git commit:   {git_commit()}",
        f"config hash:  {config_hash(config)} (report job: {config_hash(ctx.job_config)})",
        *run_hashes(ctx),
        f"corpus:       {corpus['kind']} ({corpus['root']}), label setup {corpus['label_setup']}"
        + (f" (classes: {classes})" if classes else ""),
    ]
    for f in ctx.features:
        out.append(
            f"encoder:      {f.get('modality')}: {f.get('encoder')} from {f.get('model_source')}, "
            f"pretrained={bool(f.get('pretrained'))}, dim={f.get('dim')}, n={f['n']}, file {f['file']}"
        )
    out.append(f"training:     {json.dumps(config['train'], sort_keys=True)}")
    for method in dict.fromkeys(ctx.paper_runs["method"]):
        out.append(
            f"method:       {method} {json.dumps(config['method_params'].get(method, {}), sort_keys=True)}"
        )
    out.append("versions:     " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    return out + ["```", ""]
