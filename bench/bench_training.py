"""Training benchmark: seconds per epoch and per run for each method, on the pipeline's features when they
exist (data/features, data/manifest) and otherwise on random features of the paper's dimensions.

Prints figures; asserts nothing. Usage: python bench/bench_training.py [--epochs 5] [--params params.yaml]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mlaflow import params as P
from mlaflow.data.masks import bernoulli_mask
from mlaflow.train.data import Corpus, load_corpus
from mlaflow.train.loop import train_run


def random_corpus(n: int, dims: list[int], n_classes: int = 4) -> Corpus:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, n_classes, (n,), generator=g)
    features = [torch.randn(n, d, generator=g) for d in dims]
    return Corpus([f"u{i}" for i in range(n)], features, labels, [f"c{i}" for i in range(n_classes)], {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    params = P.load(args.params)
    params["train"]["epochs"] = args.epochs
    torch.set_num_threads(params["train"]["threads"])

    feature_paths = {m: f"data/features/{m}.h5" for m in P.MODALITIES}
    if Path("data/manifest/manifest.csv").exists() and all(Path(p).exists() for p in feature_paths.values()):
        corpus, source = load_corpus("data/manifest/manifest.csv", feature_paths, params), "pipeline features"
    else:
        dims = [params["features"][m]["dim"] for m in P.MODALITIES]
        corpus, source = random_corpus(1350, dims), "random features"
    n = len(corpus.utterance_ids)
    rng = np.random.default_rng(0)
    order = rng.permutation(n)
    split = {"test": order[: n // 5], "val": order[n // 5 : n // 5 + n // 12], "train": order[n // 5 + n // 12 :]}
    print(f"training benchmark on {source}: N={n}, dims={corpus.input_dims}, epochs={args.epochs}, "
          f"threads={torch.get_num_threads()}, device={params['train']['device']}")
    n_runs = (len(params["methods"]) * len(params["masks"]["missing_rates"]) * len(params["train"]["seeds"])
              * len(params["splits"]["folds"]))
    total = 0.0
    for method in params["methods"]:
        for rate in (0.0, 0.5):
            present = bernoulli_mask(n, rate, seed=0)
            started = time.perf_counter()
            record = train_run(method, corpus, present, split, params, seed=0)
            seconds = time.perf_counter() - started
            per_epoch = record["seconds_per_epoch"]
            print(f"  {method:12s} missing_rate={rate:.1f}: {per_epoch * 1000:7.1f} ms/epoch, "
                  f"{seconds:6.2f} s/run of {args.epochs} epochs")
            total += per_epoch / 2
    configured = params["train"]["epochs"] if args.epochs is None else args.epochs
    full_epochs = P.load(args.params)["train"]["epochs"]
    estimate = total / len(params["methods"]) * full_epochs * n_runs
    print(f"default grid: {n_runs} runs x {full_epochs} epochs -> about {estimate:.0f} s of training on one core "
          f"(divide by the number of parallel jobs); measured with {configured}-epoch runs")


if __name__ == "__main__":
    main()
