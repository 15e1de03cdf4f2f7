"""The Table 1 analogue of the paper's audio-video setting (DVC stage table1, mlaflow.pipeline.table1): each corpus
of params table1 ran the whole workflow in its own folder with ResNet-18 encoders trained end to end; its report
(data/table1/<kind>/reports/report.md) has the Table 1 section the complete-modality comparison writes for any
corpus (mlaflow.report.complete: fused and per-modality accuracy beside the paper's rows for that dataset, the
laziness comparison, the modality gap), and its fidelity section (the released code's switches at missing rate 0,
where fidelity is enabled). This section gathers those sections, with what each corpus's report
says first (what the numbers come from, the encoders) and how long its workflow last ran (duration.json).
Nothing is recomputed here: the numbers are those of the corpus's own report.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mlaflow.pipeline import table1
from mlaflow.report.context import ReportContext

TABLE1_HEADING = "## Complete modalities: every method (Table 1 analogue)"
FIDELITY_HEADING = "## Fidelity: the paper's MLA against its released code"


def section(ctx: ReportContext) -> list[str]:
    out = ["## Table 1 analogue, end to end: ResNet-18 encoders on the audio-video look-alikes", ""]
    kinds = table1.kinds(ctx.config) if "table1" in ctx.config else []
    if not kinds:
        return [*out, "Not run (table1.enabled: false, or no corpus in table1.corpora).", ""]
    out += [
        "The paper's Table 1 setting for audio and video (section 4.1, A.3.1): for each corpus below the workflow "
        "ran again in its own folder, its encoders trained end to end from each clip's prepared inputs "
        "(mlaflow.pipeline.table1); the tables are those of that corpus's report.",
        "",
    ]
    for kind in kinds:
        report = Path(table1.folder(kind)) / "reports" / "report.md"
        out += [f"### {kind}", ""]
        if not report.is_file():
            out += [f"Its report ({report}) is missing: run `snakemake table1` (or `dvc repro table1`).", ""]
            continue
        text = report.read_text()
        out += _preamble(text)
        body = _section(text, TABLE1_HEADING)
        out += (
            _relinked(_demoted(body), kind)
            if body
            else [f"Its report ({report}) has no Table 1 section.", ""]
        )
        fidelity = _section(text, FIDELITY_HEADING)
        if fidelity:  # the released code's switches, end to end (missing rate 0)
            out += [f"#### {kind}: {FIDELITY_HEADING[3:]}", *_relinked(_demoted(fidelity), kind)]
        seconds = _stage_seconds(kind)
        if seconds is not None:
            out += [f"Its workflow's last run took {seconds:.0f} s (`{table1.duration_path(kind)}`).", ""]
        out += [f"Its whole report: `{report}`.", ""]
    return out


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


def _relinked(lines: list[str], kind: str) -> list[str]:
    """Image links of the corpus's report are relative to its reports folder; here to reports/."""
    prefix = f"../{table1.folder(kind)}/reports/"
    return [
        re.sub(r"\]\((?!https?:|/)([^)]+)\)", lambda m: f"]({prefix}{m.group(1)})", line) for line in lines
    ]


def _stage_seconds(kind: str) -> float | None:
    path = Path(table1.duration_path(kind))
    return float(json.loads(path.read_text())["seconds"]) if path.is_file() else None
