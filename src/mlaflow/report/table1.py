"""The Table 1 and Table 4 analogues (DVC stage table1, mlaflow.pipeline.table1): each entry of params table1 ran the
whole workflow in its own folder (audio-video corpora: ResNet-18 encoders trained end to end; image-text corpora:
frozen ViT and BERT features; the Table 4 entry: CLIP's towers); its report (data/table1/<entry>/reports/report.md)
has the Table 1 section the complete-modality comparison writes for any corpus (mlaflow.report.complete: fused and
per-modality accuracy beside the paper's rows for that dataset, the laziness comparison, the modality gap), and its
fidelity section (the released code's switches at missing rate 0, where fidelity is enabled). The Table 1 section
gathers those sections, with what each entry's report says first (what the numbers come from, the encoders) and how
long its workflow last ran (duration.json). The Table 4 section reads the CLIP entry's metrics (metrics.json) into
the paper's Table 4 layout, beside its figures, and gathers that entry's modality gap (Figure 3 analogue).
Nothing is recomputed here: the numbers are those of each entry's own outputs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mlaflow.pipeline import table1
from mlaflow.report import markdown as md
from mlaflow.report.claims import CLAIMS_KEY
from mlaflow.report.context import ReportContext

TABLE1_HEADING = "## Complete modalities: every method (Table 1 analogue)"
FIDELITY_HEADING = "## Fidelity: the paper's MLA against its released code"
GAP_HEADING = "### Modality gap (Figure 3 analogue)"
# the paper's Table 4 rows and the methods that stand for them here
TABLE4_ROWS = {"clip": "concat", "clip_mla": "mla"}


def _table1_entries(ctx: ReportContext) -> list[str]:
    entries = table1.entries(ctx.config) if "table1" in ctx.config else []
    return [e for e in entries if not e.startswith(table1.CLIP_PREFIX)]


def _table4_entry(ctx: ReportContext) -> str | None:
    entries = table1.entries(ctx.config) if "table1" in ctx.config else []
    return next((e for e in entries if e.startswith(table1.CLIP_PREFIX)), None)


def _setting(kind: str) -> str:
    if table1.is_image_text(kind):
        return (
            "image-text: frozen features, a ViT for the pictures (standing in for the paper's M3AE) and the main "
            "job's BERT for the texts, trained with the MLP encoders"
        )
    return "audio-video: ResNet-18 encoders trained end to end from each clip's prepared inputs"


def section(ctx: ReportContext) -> list[str]:
    out = [
        "## Table 1 analogue on the paper's other corpora: audio-video end to end, image-text on frozen features",
        "",
    ]
    entries = _table1_entries(ctx)
    if not entries:
        return [*out, "Not run (table1.enabled: false, or no corpus in table1.corpora).", ""]
    out += [
        "The paper's Table 1 setting (section 4.1, A.3.1) on its other corpora: for each corpus below the workflow "
        "ran again in its own folder (mlaflow.pipeline.table1); the tables are those of that corpus's report.",
        "",
    ]
    for entry in entries:
        out += [f"### {entry} ({_setting(table1.kind_of(entry))})", ""]
        text = _report_text(entry)
        if text is None:
            out += [_missing(entry), ""]
            continue
        out += _preamble(text)
        body = _section(text, TABLE1_HEADING)
        out += _relinked(_demoted(body), entry) if body else ["Its report has no Table 1 section.", ""]
        fidelity = _section(text, FIDELITY_HEADING)
        if fidelity:  # the released code's switches, end to end (missing rate 0)
            out += [f"#### {entry}: {FIDELITY_HEADING[3:]}", *_relinked(_demoted(fidelity), entry)]
        out += _closing(entry)
    return out


def table4_section(ctx: ReportContext) -> list[str]:
    """The Table 4 analogue: the CLIP entry's image, text and fused accuracy of the paper's two rows (its
    joint baseline, here concat, and MLA), beside the paper's Table 4; every method of the entry below; its modality
    gap (Figure 3 analogue on Food-101)."""
    out = ["## Table 4 analogue: CLIP's image and text towers as encoders", ""]
    entry = _table4_entry(ctx)
    if entry is None:
        return [*out, "Not run (table1.table4.enabled: false, or table1.enabled: false).", ""]
    metrics_path = Path(table1.folder(entry)) / "reports" / "metrics.json"
    text = _report_text(entry)
    if text is None or not metrics_path.is_file():
        return [*out, _missing(entry), ""]
    metrics = json.loads(metrics_path.read_text())
    paper = _paper_table4(ctx)
    out += [
        f"Section 4.3.4 and A.4.3: {table1.kind_of(entry)} with both modalities encoded by one CLIP (image tower and "
        "text tower, each with its projection; mlaflow.features.clip), frozen, trained with the MLP encoders. The "
        "paper's \"CLIP\" row is a joint training on CLIP's features; concat stands for it here (the method its "
        "Figure 3 compares with MLA). Accuracy % at missing rate 0, mean ± std over seeds; the paper's rows "
        "(Table 7, Food-101, CLIP ViT-B/32) beside.",
        "",
        *_preamble(text),
    ]
    rows = []
    for method, cells in metrics.items():
        if method in ("config_hash", CLAIMS_KEY) or "r00" not in cells:
            continue
        m = cells["r00"]
        row = [method, *(_cell(m, f"{col}_accuracy") for col in ("image", "text")), _cell(m, "accuracy")]
        paper_key = next((k for k, v in TABLE4_ROWS.items() if v == method), None)
        figures = paper.get(paper_key) if paper_key else None
        row += [" / ".join(f"{figures[c]:.2f}" for c in ("image", "text", "multi")) if figures else ""]
        rows.append(row)
    out += [
        *md.table(
            ["method", "image acc", "text acc", "multimodal acc", "paper (image / text / multi)"], rows
        ),
        "",
    ]
    if "mla" in metrics and "concat" in metrics:
        mla, concat = metrics["mla"]["r00"], metrics["concat"]["r00"]
        diff = {
            c: 100 * (mla[f"{c}_accuracy_mean"] - concat[f"{c}_accuracy_mean"]) for c in ("image", "text")
        }
        fused = 100 * (mla["accuracy_mean"] - concat["accuracy_mean"])
        out += [
            f"MLA against concat on these features: image {diff['image']:+.2f}, text {diff['text']:+.2f}, "
            f"fused {fused:+.2f} points (the paper: image +9.15, text +1.36, fused +0.40).",
            "",
        ]
    gap = _subsection(text, GAP_HEADING)
    figure = next((i for i, line in enumerate(gap) if line.startswith("![")), None)
    gap = gap if figure is None else [*gap[: figure + 1], ""]  # the table and the figure, not what follows
    if gap:
        out += [f"### {entry}: modality gap (Figure 3 analogue)", *_relinked(gap, entry)]
    return [*out, *_closing(entry)]


def _cell(metrics: dict, column: str) -> str:
    mean = metrics.get(f"{column}_mean")
    return md.pm(mean, metrics.get(f"{column}_std", 0.0)) if mean is not None else "n/a"


def _paper_table4(ctx: ReportContext) -> dict:
    import yaml

    path = Path(ctx.config["report"]["paper_results"])
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text()).get("table4_clip_food101", {})


def _report_text(entry: str) -> str | None:
    report = Path(table1.folder(entry)) / "reports" / "report.md"
    return report.read_text() if report.is_file() else None


def _missing(entry: str) -> str:
    report = Path(table1.folder(entry)) / "reports" / "report.md"
    return f"Its report ({report}) is missing: run `snakemake table1` (or `dvc repro table1`)."


def _closing(entry: str) -> list[str]:
    out = []
    seconds = _stage_seconds(entry)
    if seconds is not None:
        out += [
            f"Its workflow's last run took {seconds:.0f} s (`{table1.duration_path(entry)}`); a run reruns only "
            "what is stale there, so after a report-only change this is the report's time (full costs: "
            "docs/benchmarks.md).",
            "",
        ]
    return [*out, f"Its whole report: `{Path(table1.folder(entry)) / 'reports' / 'report.md'}`.", ""]


def _subsection(text: str, heading: str) -> list[str]:
    """The lines of `text` after the level-3 `heading` to the next heading of level 3 or above."""
    lines = text.splitlines()
    if heading not in lines:
        return []
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if re.match(r"#{1,3} ", lines[i])), len(lines))
    return lines[start:end]


def _preamble(text: str) -> list[str]:
    """The corpus report's read-first note and its encoders line."""
    keep = [line for line in text.splitlines() if line.startswith(("> **Read this first.**", "Encoders:"))]
    return [item for line in keep for item in (line, "")]


def _section(text: str, heading: str) -> list[str]:
    """The lines of `text` from `heading` to the next heading of the same level (exclusive), without the heading."""
    lines = text.splitlines()
    if heading not in lines:
        return []
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def _demoted(lines: list[str]) -> list[str]:
    return [f"#{line}" if line.startswith("#") else line for line in lines]


def _relinked(lines: list[str], entry: str) -> list[str]:
    """Image links of the entry's report are relative to its reports folder; here to reports/."""
    prefix = f"../{table1.folder(entry)}/reports/"
    return [
        re.sub(r"\]\((?!https?:|/)([^)]+)\)", lambda m: f"]({prefix}{m.group(1)})", line) for line in lines
    ]


def _stage_seconds(entry: str) -> float | None:
    path = Path(table1.duration_path(entry))
    return float(json.loads(path.read_text())["seconds"]) if path.is_file() else None
