"""Training benchmark: one process per run, against grouped (one process, runs one after another), against
batched (one process, runs stacked into one model), for one cell of the default grid (a method at a missing
rate, all seeds x folds). Ratios are taken in this one invocation, on this machine.

Uses the pipeline's features when they exist (data/features, data/manifest, data/splits), otherwise random
features of the configured dimensions. Prints figures; asserts nothing.

    python bench/bench_training.py [--method mla] [--epochs 5] [--per-process-runs 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mlaflow.data import corpora
from mlaflow.data.folds import fold_indices, make_folds
from mlaflow.data.masks import bernoulli_mask
from mlaflow.pipeline import experiments as E
from mlaflow.pipeline import params as P
from mlaflow.train.data import Corpus, load_corpus
from mlaflow.train.loop import RunSpec, train_runs


def load_inputs(params: dict) -> tuple[Corpus, pd.DataFrame, str]:
    modalities = corpora.modalities(params)
    features = {m: f"data/features/{m}.h5" for m in modalities}
    dims = {m: params["features"][m]["dim"] for m in modalities}
    if Path("data/manifest/manifest.csv").exists() and all(Path(p).exists() for p in features.values()):
        corpus = load_corpus(
            "data/manifest/manifest.csv", features, corpora.classes(params), modalities, dims
        )
        manifest = pd.read_csv("data/manifest/manifest.csv")
        return (
            corpus,
            make_folds(
                manifest,
                params["splits"]["folds"],
                params["splits"]["validation_fraction"],
                params["splits"]["seed"],
                corpora.classes(params),
            ),
            "pipeline features",
        )
    n, g = 1350, torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (n,), generator=g)
    features = [torch.randn(n, dims[m], generator=g) for m in modalities]
    manifest = pd.DataFrame(
        {
            "utterance_id": [f"u{i}" for i in range(n)],
            "session": np.arange(n) % 5 + 1,
            "label_index": labels.numpy(),
        }
    )
    corpus = Corpus(
        manifest["utterance_id"].tolist(), features, labels, corpora.classes(params), {}, modalities
    )
    return (
        corpus,
        make_folds(
            manifest,
            params["splits"]["folds"],
            params["splits"]["validation_fraction"],
            0,
            corpora.classes(params),
        ),
        "random features",
    )


def run_specs(params: dict, corpus: Corpus, folds: pd.DataFrame, rate: float) -> list[RunSpec]:
    n = len(corpus.utterance_ids)
    return [
        RunSpec(seed * 1000 + fold, bernoulli_mask(n, rate, seed), fold_indices(folds, fold))
        for seed in params["train"]["seeds"]
        for fold in params["splits"]["folds"]
    ]


def configured(args) -> dict:
    params = P.load(args.params)
    params["train"]["epochs"] = args.epochs
    torch.set_num_threads(1)  # as a training job (the rule's threads)
    return params


def one_run_in_this_process(args) -> None:
    """What one process per run does: start, import, load the features, train one run, exit."""
    params = configured(args)
    corpus, folds, _ = load_inputs(params)
    train_runs(
        args.method,
        corpus,
        run_specs(params, corpus, folds, args.missing_rate)[args.one : args.one + 1],
        E.method_settings(params, args.method),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--method", default="mla")
    parser.add_argument("--missing-rate", type=float, default=0.3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--per-process-runs", type=int, default=3, help="runs timed one process each")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        return one_run_in_this_process(args)

    params = configured(args)
    corpus, folds, source = load_inputs(params)
    specs = run_specs(params, corpus, folds, args.missing_rate)
    print(
        f"training benchmark: {args.method} at missing rate {args.missing_rate}, {len(specs)} runs "
        f"(seeds x folds), {args.epochs} epochs, {source} (N={len(corpus.utterance_ids)}, dims={corpus.input_dims}), "
        f"{torch.get_num_threads()} torch thread(s), device {params['runtime']['device']}"
    )

    started = time.perf_counter()
    for i in range(args.per_process_runs):
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--params",
                args.params,
                "--method",
                args.method,
                "--missing-rate",
                str(args.missing_rate),
                "--epochs",
                str(args.epochs),
                "--one",
                str(i),
            ],
            check=True,
        )
    per_process = (time.perf_counter() - started) / args.per_process_runs

    started = time.perf_counter()
    for spec in specs:
        train_runs(args.method, corpus, [spec], E.method_settings(params, args.method))
    grouped = (time.perf_counter() - started) / len(specs)

    started = time.perf_counter()
    train_runs(args.method, corpus, specs, E.method_settings(params, args.method))
    batched = (time.perf_counter() - started) / len(specs)

    print(
        f"  one process per run : {per_process:6.2f} s/run  ({1 / per_process:6.2f} runs/s; timed over "
        f"{args.per_process_runs} runs)"
    )
    print(f"  grouped, one process: {grouped:6.2f} s/run  ({1 / grouped:6.2f} runs/s)")
    print(f"  batched (stacked)   : {batched:6.2f} s/run  ({1 / batched:6.2f} runs/s)")
    print(
        f"  throughput ratios: batched / one-process-per-run = {per_process / batched:.1f}x, "
        f"batched / grouped = {grouped / batched:.1f}x, grouped / one-process-per-run = {per_process / grouped:.1f}x"
    )
    if torch.cuda.is_available():
        print("  (CUDA present: device 'auto' trains on the GPU)")


if __name__ == "__main__":
    main()
