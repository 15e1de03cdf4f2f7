"""Cost of every method: one grid cell (all seeds x folds, stacked) of each method at one missing rate, timed in
this one invocation, as seconds per epoch and as a ratio to late fusion. This is what the grid's wall time is
made of: the main job, the missing-modality suite and the isolation analysis each train cells like these.

Uses the pipeline's features when they exist, otherwise random features of the configured dimensions (see
bench_training.py). Prints figures; asserts nothing.

    python bench/bench_methods.py [--epochs 3] [--missing-rate 0.3] [--methods mla late_fusion ...]
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_training import configured, load_inputs, run_specs

from mlaflow.methods import METHODS
from mlaflow.pipeline import experiments as E
from mlaflow.train.loop import train_runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--missing-rate", type=float, default=0.3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    args = parser.parse_args()
    params = configured(args)
    corpus, folds, source = load_inputs(params)
    specs = run_specs(params, corpus, folds, args.missing_rate)
    methods = args.methods or ["late_fusion", *sorted(m for m in METHODS if m != "late_fusion")]
    print(
        f"method cost: one cell = {len(specs)} stacked runs at missing rate {args.missing_rate}, {args.epochs} "
        f"epochs (each with validation and test evaluation), {source} (N={len(corpus.utterance_ids)}, "
        f"dims={corpus.input_dims}), {torch.get_num_threads()} torch thread(s)"
    )
    seconds = {}
    for method in methods:
        started = time.perf_counter()
        train_runs(method, corpus, specs, E.method_settings(params, method))
        seconds[method] = (time.perf_counter() - started) / args.epochs
        ratio = (
            f"{seconds[method] / seconds['late_fusion']:5.1f}x late_fusion"
            if "late_fusion" in seconds
            else ""
        )
        print(f"  {method:12s} {seconds[method]:6.2f} s/epoch per cell  {ratio}", flush=True)


if __name__ == "__main__":
    main()
