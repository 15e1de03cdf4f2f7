"""Figures and DVC plots data of the report: matplotlib without a display, the errorbar-lines plot every
accuracy-against-rate figure uses, atomic PNG and CSV writes (a killed job never leaves half a file), and the
long format of the DVC plots data (`write_series`, see mlaflow.report.catalog).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mlaflow.io import atomic_path
from mlaflow.report.catalog import SERIES, Output


def new_figure(width: float = 6.4, height: float = 4.2, panels: int = 1):
    """(figure, list of `panels` axes side by side), on the Agg backend (jobs run without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(width * panels, height), squeeze=False)
    return fig, list(axes[0])


def errorbar_lines(ax, frame: pd.DataFrame, x: str, mean: str, std: str, **style) -> None:
    """One curve in percent: `frame[mean]` ± `frame[std]` (fractions) against `frame[x]`."""
    ax.errorbar(frame[x], 100 * frame[mean], yerr=100 * frame[std], marker="o", **style)


def finish(ax, xlabel: str, ylabel: str, title: str, legend_size: int = 8, **legend) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size, **legend)


def save_png(fig, path: Path, dpi: int = 120) -> None:
    """Lay out, write atomically, close (figures are never shown)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


def placeholder_png(path: Path, message: str) -> None:
    """An empty panel saying why there is no figure: the file is a declared output of the report job."""
    fig, (ax,) = new_figure()
    ax.text(0.5, 0.5, message, ha="center", va="center")
    ax.set_axis_off()
    save_png(fig, path)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """A table (no index column)."""
    with atomic_path(path, ".csv") as tmp:
        frame.to_csv(tmp, index=False)


def write_series(wide: pd.DataFrame, output: Output, out_dir: Path) -> None:
    """A DVC plot's data, in the long format its template draws without naming a series: `wide` (the plot's x
    column, then one column per series: a method, a variant, a paper curve) as rows of the catalog's columns
    (x, series, y), series after series in column order, each at the x values where it has a value."""
    long = wide.melt(id_vars=[output.x], var_name=SERIES, value_name=output.y)
    long = long[long[output.y].notna() & (long[output.y] != "")]
    write_csv(long[output.columns], output.at(out_dir))
