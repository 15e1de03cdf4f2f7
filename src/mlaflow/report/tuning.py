"""The tuning section of the report: each method's search space, budget, chosen values, and its validation
accuracy with the chosen values against params.yaml's own (trial 0 of its study; mlaflow/tune/study.py).

Both accuracies are on the tuning runs' validation split (the folds of `tuning.folds` at the method's tuning
rates), never on test. The tuned figure is the best of the budget's trials on that same split, so the gain is
an optimistic estimate of what tuning buys; the tables of the other sections show the test accuracy the chosen
values reach.
"""

from __future__ import annotations

from mlaflow.report import markdown as md
from mlaflow.report.context import ReportContext


def _value(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _values(values: dict) -> str:
    return ", ".join(f"{key.split('.')[-1]} {_value(v)}" for key, v in values.items())


def section(ctx: ReportContext) -> list[str]:
    title = "## Tuning: every method with the same budget, on validation"
    tuning = ctx.config.get("tuning", {})
    if not ctx.tuning:
        return [
            title,
            "",
            "Not run (tuning.enabled: false): every table shows params.yaml's values."
            if not tuning.get("enabled", False)
            else "No method was tuned.",
            "",
        ]
    first = ctx.tuning[0]
    budgets = {chosen["budget"] for chosen in ctx.tuning}
    rows, spaces = [], []
    for chosen in ctx.tuning:
        untuned = chosen["untuned"]["validation_accuracy"]
        tuned = chosen["validation_accuracy"]
        rows.append(
            [
                chosen["method"],
                str(chosen["budget"]),
                ", ".join(f"{r:.1f}" for r in chosen["missing_rates"]),
                _values(chosen["untuned"]["values"]),
                _values(chosen["values"]),
                f"{100 * untuned:.2f}",
                f"{100 * tuned:.2f}",
                f"{100 * (tuned - untuned):+.2f}",
            ]
        )
        spaces.append(
            [chosen["method"], "; ".join(f"`{key}`: {text}" for key, text in chosen["space"].items())]
        )
    return [
        title,
        "",
        f"Every method of the comparison was tuned with the same budget: {' / '.join(map(str, sorted(budgets)))} "
        f"completed Optuna trials ({first['sampler']} sampler, seed {first['seed']}), the first of them "
        "params.yaml's own values. Objective: the fused validation accuracy at the validation-selected epoch, "
        f"mean over folds {', '.join(map(str, first['folds']))} at the method's tuning missing rates (a "
        "complete-modality method at 0, where it runs), seed "
        f"{ctx.config.get('tuning', {}).get('run_seed', 0)}; the test split is never read (its rows are not "
        'given to the tuning runs). Every table of this report shows the chosen values. "Tuned" is the best '
        "trial on the same validation split that chose it, so the gain is optimistic; with a budget below "
        "TPE's 10 start-up trials the sampler draws at random after trial 0. Raise `tuning.trials` (and "
        '`runtime.tuning_workers` on a cluster) for a real search (docs/operating.md, "Tuning on a cluster").',
        "",
        *md.table(
            [
                "method",
                "trials",
                "tuning rates",
                "untuned values",
                "chosen values",
                "val acc untuned",
                "val acc tuned",
                "gain (points)",
            ],
            rows,
        ),
        "",
        "Search spaces (declared next to each method: `search_space` in its module, plus the shared "
        "optimiser's learning rate and weight decay for the methods that use it; mlaflow/methods/space.py):",
        "",
        *md.table(["method", "searched"], spaces),
        "",
    ]
