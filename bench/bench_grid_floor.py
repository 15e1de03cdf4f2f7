"""The floor under the main job's training time: the floating-point work the default grid asks for, and the time it
would take at the device's matmul peak.

Every training the workflow runs (the experiment table: main grid, complete-modality baselines, missing-modality
suite, isolation, fidelity; and every tuning trial) is one run of a method at a missing rate for train.epochs
epochs, with its evaluations. This script counts the FLOPs of ONE run of each distinct (experiment, method,
missing rate) with `torch.utils.flop_counter.FlopCounterMode` (seed 0, the first fold, the experiment's mask
protocol and overrides), at 1 and at 2 epochs: the difference is the cost of an epoch (training and the
per-epoch evaluation), the rest is what a run pays once (a teacher, a closed-form fit, the final evaluation).
A run of E epochs costs once + E x epoch; the grid is the sum over its runs (seeds x folds per cell). One run
alone has no padding to a stacked partner's batch count, and FlopCounterMode counts products and convolutions,
not decompositions (CCA's eigh and SVD, DCCA's Cholesky), so this is a lower bound on what the jobs compute.
Tuning trials are counted at trial 0's settings (a trial with other values, a wider CCA for instance, costs
somewhat more or less).

Then: the time all of it takes at the measured float32 peak (`--peak-gflops`, or measured here as
bench_roofline.py does), on `--cores` cores each at that peak: the time no implementation of this grid can beat
on the machine, against the issue's target for the whole `make reproduce` (20 minutes on 2 cores), which also
holds installing, feature extraction and the report.

Uses the pipeline's features when they exist (data/features), otherwise random features of the configured
dimensions (bench_training.py). Prints figures; asserts nothing. Takes a few minutes on 2 CPU cores.

    python bench/bench_grid_floor.py [--params params.yaml] [--cores 2] [--peak-gflops 28.6]
"""

from __future__ import annotations

import argparse
import copy
import time
from collections import defaultdict

import numpy as np
import torch
from bench_roofline import peak
from bench_training import load_inputs
from machine import describe
from torch.utils.flop_counter import FlopCounterMode

from mlaflow.data.folds import fold_indices
from mlaflow.data.masks import draw_mask, training_only
from mlaflow.pipeline import experiments as E
from mlaflow.pipeline import params as P
from mlaflow.train.loop import RunSpec, train_runs


def run_flops(method, corpus, spec, settings, epochs, test) -> float:
    """FLOPs of one run of `method` trained for `epochs` epochs (its evaluations included)."""
    settings = copy.deepcopy(settings)
    settings["train"]["epochs"] = epochs
    with FlopCounterMode(display=False) as counter:
        train_runs(method, corpus, [spec], settings, test=test)
    return float(counter.get_total_flops())


def one_run(config, corpus, folds, masks: E.MaskSpec, rate: float, fold: int, shift: bool, test: bool):
    """The RunSpec of seed 0 on `fold` under the experiment's mask protocol (a tuning run: no test rows)."""
    n, modalities = len(corpus.utterance_ids), corpus.modalities
    seed = config["train"]["seeds"][0]
    split = fold_indices(folds, fold)
    if not test:
        split = {**split, "test": split["test"][:0]}
    present = draw_mask(masks.as_dict(), modalities, n, rate, seed, config["masks"]["all_missing"])
    if masks.training_only:
        present = training_only(present, split)
    shifted = {
        f"{r:.2f}": draw_mask(masks.as_dict(), modalities, n, r, seed, config["masks"]["all_missing"])
        for r in config["masks"]["missing_rates"]
    }
    return RunSpec(seed * 1000 + fold, present, split, shifted if shift else {})


def trainings(config: dict):
    """(stage, method, rate, masks, overrides, runs, test, shift) for every cell the default grid trains, and for
    every method's tuning trials."""
    seeds, folds = config["train"]["seeds"], config["splits"]["folds"]
    for experiment in E.experiment_table(config):
        for method, rate in experiment.cells:
            yield (
                experiment.stage,
                method,
                rate,
                experiment.masks,
                experiment.overrides,
                len(seeds) * len(folds),
                True,
                experiment.test_time_shift,
            )
    tuning = config["tuning"]
    for method in E.tuned_methods(config):
        experiment = E.tuning_experiment(config, method)
        tuning_folds = tuning["folds"]  # resolved by params.load
        for rate in E.tuning_rates(config, method):
            yield (
                "tuning",
                method,
                rate,
                experiment.masks,
                {},
                tuning["trials"] * len(tuning_folds),
                False,
                False,
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument(
        "--cores", type=int, default=2, help="cores, each at the peak (the jobs Snakemake runs at once)"
    )
    parser.add_argument(
        "--peak-gflops", type=float, default=None, help="one core's float32 peak; default: measure it"
    )
    parser.add_argument("--target-minutes", type=float, default=20.0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a training job
    config = P.load(args.params)
    corpus, folds, source = load_inputs(config)
    print(f"grid floor, {describe()}; 1 torch thread; torch {torch.__version__}")
    print(f"  {source} (N={len(corpus.utterance_ids)}, dims={corpus.input_dims}), params {args.params}")
    first_fold = config["splits"]["folds"][0]
    per_stage: dict[str, float] = defaultdict(float)
    per_method: dict[str, float] = defaultdict(float)
    started = time.perf_counter()
    print(
        f"\n  {'stage':14s} {'method':12s} {'rate':>5s} {'runs':>5s} {'GFLOP once':>10s} {'GFLOP/epoch':>11s} {'GFLOP':>9s}"
    )
    for stage, method, rate, masks, overrides, runs, test, shift in trainings(config):
        settings = E.method_settings(config, method, overrides)
        epochs = settings["train"]["epochs"]
        spec = one_run(config, corpus, folds, masks, rate, first_fold, shift, test)
        f1 = run_flops(method, corpus, spec, settings, 1, test)
        f2 = run_flops(method, corpus, spec, settings, 2, test)
        per_epoch, once = f2 - f1, 2 * f1 - f2
        total = runs * (once + epochs * per_epoch)
        per_stage[stage] += total
        per_method[method] += total
        print(
            f"  {stage:14s} {method:12s} {rate:5.2f} {runs:5d} {once / 1e9:10.2f} {per_epoch / 1e9:11.2f} "
            f"{total / 1e9:9.0f}",
            flush=True,
        )
    grand = sum(per_stage.values())
    peak_gflops = args.peak_gflops or max(peak(torch.device("cpu")).values())
    measured = "given" if args.peak_gflops else "measured now"
    print(
        f"\n  counted in {time.perf_counter() - started:.0f} s; peak {peak_gflops:.1f} GFLOP/s per core ({measured})"
    )
    print(f"  {'stage':14s} {'TFLOP':>8s} {'min at peak on ' + str(args.cores) + ' cores':>24s}")
    for stage, flops in per_stage.items():
        print(f"  {stage:14s} {flops / 1e12:8.2f} {flops / (peak_gflops * 1e9 * args.cores) / 60:24.1f}")
    floor_min = grand / (peak_gflops * 1e9 * args.cores) / 60
    print(f"  {'all training':14s} {grand / 1e12:8.2f} {floor_min:24.1f}")
    print(
        "\n  by method (TFLOP): "
        + ", ".join(f"{m} {f / 1e12:.2f}" for m, f in sorted(per_method.items(), key=lambda kv: -kv[1]))
    )
    verdict = "within" if floor_min <= args.target_minutes else "ABOVE"
    print(
        f"\n  the training alone, at 100% of the peak on every core with no other cost, takes {floor_min:.1f} min: "
        f"{verdict} the {args.target_minutes:.0f}-minute target for the whole job"
    )


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
