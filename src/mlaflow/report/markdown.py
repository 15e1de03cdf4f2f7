"""Markdown building blocks of report.md: tables and the "mean ± std" cells, in percent.

Every section writes its tables with `table` and its cells with `pm` (an accuracy) or `pp` (a signed
difference in percentage points), so a cell reads the same in every section.
"""

from __future__ import annotations

from collections.abc import Sequence


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A GitHub markdown table as lines (no blank line around it)."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def pm(mean: float, std: float) -> str:
    """A fraction as percent, mean ± std: 0.8296, 0.0026 -> '82.96 ± 0.26'."""
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def pp(mean: float, std: float) -> str:
    """A difference of fractions in signed percentage points: -0.0309, 0.0074 -> '-3.09 ± 0.74'."""
    return f"{100 * mean:+.2f} ± {100 * std:.2f}"


def rate(value: float) -> str:
    """A missing rate as a column header: 0.3 -> '0.3'."""
    return f"{value:.1f}"


def later_work(entries: list[dict], table: str, heading: str) -> list[str]:
    """Later papers' figures (paper_results.yaml `later_work`) for one of the paper's tables: one line each, its
    source and protocol named, never a cell of this run's table (their protocols differ)."""
    chosen = [entry for entry in entries if entry.get("table") == table]
    if not chosen:
        return []
    out = [heading, ""]
    for entry in chosen:
        values = ", ".join(f"{key}: {value:.2f}" for key, value in entry["accuracy"].items())
        out.append(f"- {entry['label']}: {values}. Source: {entry['source']}. Protocol: {entry['protocol']}.")
    return [*out, ""]
