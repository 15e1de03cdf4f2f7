"""The paper's claims, each judged on every corpus that ran, from paired differences between runs.

A claim compares two methods (or two readings of the same runs) trained with the same seeds and folds: the same
masks, splits and initial seeds. Per (seed, fold) pair the difference of one figure, then the mean difference
and its 95% interval over the pairs (Student's t with n - 1 degrees of freedom, scipy.stats). The verdict is
computed from the interval, never written: **holds** (the interval lies above 0, the paper's direction),
**reversed** (below 0), **not shown** (it contains 0); **not measured** where the runs it needs did not run.
A claim over several comparisons (MLA against every baseline) holds when every comparison holds, is reversed when
one is reversed, and is not shown otherwise; the least favourable comparison is the one shown. Its K intervals are
each at level 1 - 0.05 / K (Bonferroni), so that the claim's verdict keeps a 5% chance of error overall: 77
comparisons at 95% each would exclude 0 about four times by chance alone.

The pairs are seeds x folds. The folds share training data, so the pairs are not independent draws: the interval
is narrower than one over independent repetitions would be, and a verdict is about these runs (these features,
this budget), not about the method in general.

Claims computed from the main grid's stage alone (every complete-modality claim) also go into reports/metrics.json
(`summary_claims`), so that each Table 1 workflow's verdicts reach the main report; the Table 2 claim needs the
missing-modality suite and is judged in the report of the workflow that ran it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from mlaflow.methods import VARIANTS
from mlaflow.pipeline import table1 as table1_entries
from mlaflow.report import markdown as md
from mlaflow.report.complete import joint_methods, table1, weak_modality
from mlaflow.report.context import PAPER_KINDS, ReportContext

CLAIMS_KEY = "claims"  # their key in reports/metrics.json
LEVEL = 0.95
HOLDS, NOT_SHOWN, REVERSED, NOT_MEASURED = "holds", "not shown", "reversed", "not measured"
# the claims' statements, in the report's order: key -> (statement, where the paper makes it)
CLAIMS = {
    "laziness": (
        "MLA removes modality laziness: its weak modality learns more than under the best joint training",
        "section 4.3, Table 1",
    ),
    "beats_complete": ("MLA beats every complete-modality baseline", "Table 1"),
    "beats_missing": ("MLA beats every baseline at every missing rate", "Table 2"),
    "hgm": (
        "Head gradient modification helps MLA (MLA against mla_hgm_off, each tuned with the same budget)",
        "Table 3",
    ),
    "dynamic_fusion": (
        "Test-time dynamic fusion helps MLA (entropy weights against the average of its unimodal predictions)",
        "Table 3",
    ),
    "gap": ("MLA widens the modality gap (against concat)", "Figure 3"),
}


@dataclass(frozen=True)
class Judgement:
    """One claim on one corpus: the mean paired difference (percentage points, or gap units for `gap`), its
    interval, the number of pairs, the verdict, and what was compared."""

    claim: str
    verdict: str
    mean: float = float("nan")
    low: float = float("nan")
    high: float = float("nan")
    n: int = 0
    compared: str = ""

    def cell(self) -> str:
        if self.verdict == NOT_MEASURED:
            return f"not measured ({self.compared})" if self.compared else "not measured"
        return f"**{self.verdict}**: {self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}], n={self.n} ({self.compared})"


def interval(differences: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """Mean and the `level` Student-t interval of paired differences (at least two)."""
    n = len(differences)
    mean = float(np.mean(differences))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * np.std(differences, ddof=1) / np.sqrt(n))
    return mean, mean - half, mean + half


def verdict(low: float, high: float) -> str:
    """From the interval: above 0 the claim holds, below 0 it is reversed, otherwise it is not shown."""
    return HOLDS if low > 0 else REVERSED if high < 0 else NOT_SHOWN


def judge(
    claim: str, differences: np.ndarray, compared: str, scale: float = 100.0, level: float = LEVEL
) -> Judgement:
    """A claim judged on paired differences (scaled: accuracies to points) at interval level `level`."""
    differences = np.asarray(differences, dtype=float) * scale
    if len(differences) < 2:
        return Judgement(claim, NOT_MEASURED, compared=f"{compared}: {len(differences)} pair(s)")
    mean, low, high = interval(differences, level)
    return Judgement(claim, verdict(low, high), mean, low, high, len(differences), compared)


def combine(claim: str, judgements: list[Judgement]) -> Judgement:
    """A claim over several comparisons: holds if each holds, reversed if one is; the least favourable shown."""
    measured = [j for j in judgements if j.verdict != NOT_MEASURED]
    if not measured:
        return Judgement(claim, NOT_MEASURED, compared="no comparison ran")
    verdicts = [j.verdict for j in measured]
    overall = REVERSED if REVERSED in verdicts else HOLDS if set(verdicts) == {HOLDS} else NOT_SHOWN
    worst = min(measured, key=lambda j: j.low)
    counts = f"ahead in {verdicts.count(HOLDS)}, behind in {verdicts.count(REVERSED)} of {len(measured)}" + (
        ", Bonferroni-adjusted" if len(measured) > 1 else ""
    )
    return Judgement(
        claim,
        overall,
        worst.mean,
        worst.low,
        worst.high,
        worst.n,
        f"least favourable: {worst.compared}; {counts}",
    )


def paired(
    runs: pd.DataFrame, a: str, b: str, rate: float, column: str, column_b: str | None = None
) -> np.ndarray:
    """Per (seed, fold) that both ran: method a's `column` minus method b's `column_b` (default the same) at
    missing rate `rate`."""
    column_b = column_b or column
    if column not in runs or column_b not in runs:
        return np.array([])
    at = runs[runs["missing_rate"] == rate]
    left = at[at["method"] == a][["seed", "fold", column]]
    right = at[at["method"] == b][["seed", "fold", column_b]]
    merged = left.merge(right, on=["seed", "fold"], suffixes=("_a", "_b")).dropna()
    a_col, b_col = (f"{column}_a", f"{column_b}_b") if column == column_b else (column, column_b)
    return (merged[a_col] - merged[b_col]).to_numpy(dtype=float)


# ------------------------------------------------------------------------------------------- the claims


def _baselines(runs: pd.DataFrame, rate: float) -> list[str]:
    """The methods MLA is compared with at `rate`: every other method that ran there, but MLA's own variants."""
    methods = dict.fromkeys(runs[runs["missing_rate"] == rate]["method"])
    return [m for m in methods if m != "mla" and m not in VARIANTS]


def laziness(runs: pd.DataFrame, modalities: list[str]) -> Judgement:
    zero = runs[runs["missing_rate"] == 0.0]
    if zero.empty or "mla" not in set(zero["method"]):
        return Judgement("laziness", NOT_MEASURED, compared="no MLA run at missing rate 0")
    table = table1(zero, modalities)
    weak = weak_modality(table, modalities)
    column = f"{weak}_accuracy"
    joint = [m for m in joint_methods(table.index) if not pd.isna(table.loc[m, f"{column}_mean"])]
    if not joint:
        return Judgement("laziness", NOT_MEASURED, compared="no joint-training method ran")
    best = max(joint, key=lambda m: table.loc[m, f"{column}_mean"])
    return judge("laziness", paired(zero, "mla", best, 0.0, column), f"{weak} accuracy, MLA − {best}")


def _against_every(claim: str, runs: pd.DataFrame, rates: list[float]) -> Judgement:
    """MLA against every baseline at every rate of `rates`, each interval Bonferroni-adjusted."""
    comparisons = [(rate, other) for rate in rates for other in _baselines(runs, rate)]
    level = 1 - (1 - LEVEL) / max(1, len(comparisons))
    where = (lambda rate: f" at {md.rate(rate)}") if len(rates) > 1 else (lambda rate: "")
    return combine(
        claim,
        [
            judge(
                claim,
                paired(runs, "mla", other, rate, "accuracy"),
                f"MLA − {other}{where(rate)}",
                level=level,
            )
            for rate, other in comparisons
        ],
    )


def beats_complete(runs: pd.DataFrame) -> Judgement:
    return _against_every("beats_complete", runs, [0.0])


def beats_missing(runs: pd.DataFrame) -> Judgement:
    return _against_every("beats_missing", runs, sorted(r for r in runs["missing_rate"].unique() if r > 0))


def hgm(runs: pd.DataFrame) -> Judgement:
    return judge("hgm", paired(runs, "mla", "mla_hgm_off", 0.0, "accuracy"), "accuracy, MLA − mla_hgm_off")


def dynamic_fusion(runs: pd.DataFrame) -> Judgement:
    return judge(
        "dynamic_fusion",
        paired(runs, "mla", "mla", 0.0, "accuracy", "fusion_average_accuracy"),
        "MLA's accuracy, entropy weights − average",
    )


def gap(runs: pd.DataFrame) -> Judgement:
    pairs = [c for c in runs.columns if c.startswith("gap_")]
    if not pairs:
        return Judgement("gap", NOT_MEASURED, compared="no modality gap recorded")
    frame = runs.assign(mean_gap=runs[pairs].mean(axis=1))
    return judge("gap", paired(frame, "mla", "concat", 0.0, "mean_gap"), "mean gap, MLA − concat", scale=1.0)


def judge_all(runs: pd.DataFrame, modalities: list[str], with_suite: bool) -> dict[str, Judgement]:
    """Every claim on one workflow's runs (those under the paper's settings); the Table 2 claim only where the
    suite's runs are among them."""
    out = {
        "laziness": laziness(runs, modalities),
        "beats_complete": beats_complete(runs),
        "hgm": hgm(runs),
        "dynamic_fusion": dynamic_fusion(runs),
        "gap": gap(runs),
    }
    if with_suite:
        out["beats_missing"] = beats_missing(runs)
    return {key: out[key] for key in CLAIMS if key in out}


def summary_claims(runs: pd.DataFrame, modalities: list[str]) -> dict:
    """The complete-modality claims as reports/metrics.json holds them (DVC metrics: numbers, and the verdict)."""
    return {
        key: {
            k: v for k, v in asdict(j).items() if k != "claim" and not (isinstance(v, float) and np.isnan(v))
        }
        for key, j in judge_all(runs, modalities, with_suite=False).items()
    }


def _from_metrics(entry: str) -> dict[str, Judgement] | None:
    path = Path(table1_entries.folder(entry)) / "reports" / "metrics.json"
    if not path.is_file():
        return None
    stored = json.loads(path.read_text()).get("claims")
    if stored is None:
        return None
    return {key: Judgement(key, **values) for key, values in stored.items()}


# ------------------------------------------------------------------------------------------- the section


def section(ctx: ReportContext) -> list[str]:
    """Each claim of the paper in one line, and per corpus that ran its verdict computed from paired runs."""
    runs = ctx.runs_of_kind(*PAPER_KINDS)
    corpora = {f"{ctx.config['corpus']['kind']} (main)": judge_all(runs, ctx.modalities, with_suite=True)}
    missing = []
    for entry in table1_entries.entries(ctx.config) if "table1" in ctx.config else []:
        judged = _from_metrics(entry)
        if judged is None:
            missing.append(entry)
        else:
            corpora[entry] = judged
    out = [
        "## The paper's claims, judged here",
        "",
        "Each claim of the paper in one line; for each corpus that ran, the mean paired difference with its "
        f"{int(100 * LEVEL)}% interval over the seed x fold pairs (same seeds, same folds: same masks and splits), "
        "in accuracy points (the gap: in its own units), and the verdict computed from the interval: **holds** "
        "(above 0), **reversed** (below 0), **not shown** (it contains 0). A claim over several comparisons shows "
        "the least favourable one, its intervals Bonferroni-adjusted for their number. The folds share training data, so the pairs are not independent and the "
        "intervals are narrow; the corpora are look-alikes with randomly initialised encoders unless the config "
        "names real ones: a verdict is about these runs, not about the method (mlaflow.report.claims).",
        "",
    ]
    for key, (statement, where) in CLAIMS.items():
        out += [f"**{statement}** ({where})", ""]
        rows = [[corpus, judged[key].cell()] for corpus, judged in corpora.items() if key in judged]
        out += [*md.table(["corpus", "verdict: mean [95% interval], pairs (compared)"], rows), ""]
    if missing:
        out += [f"Not judged (their workflows have not run): {', '.join(missing)}.", ""]
    return out
