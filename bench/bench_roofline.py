"""Roofline: how close each method's training comes to the device's matmul peak, and where its time goes.

1. Peak: float32 matrix products on the device (torch.mm of two square matrices, and the batched product of
   the shape the methods' first layers have), in GFLOP/s, with the settings training uses (TF32 off).
2. Per method: one grid cell (`--cells` cells stacked: all seeds x folds of a method at `--cells` missing
   rates, as a `runtime.job_group: method` job stacks them), trained for `--epochs` epochs with validation and
   test evaluation. FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` in a separate pass; the
   timed pass runs without it. Achieved = FLOPs / seconds, and its fraction of the peak.
3. Where the time goes (torch.profiler, one more pass): the self time of the matrix products, of the
   optimiser's updates (`_foreach_*` and the per-run slices), of the other tensor operations, and the rest
   (Python, launches, waiting) as a share of the wall time.
4. Throughput: cells trained per second. On CUDA it is compared with the same cells on this machine's CPU
   (`--compare-cpu`), one thread per job and `--cpu-cores` jobs in parallel (as Snakemake runs them).

Uses the pipeline's features when they exist (data/features), otherwise random features of the configured
dimensions (bench_training.py). Prints figures; asserts nothing. Machine and date are printed first.

    python bench/bench_roofline.py [--device cpu|cuda] [--epochs 2] [--cells 1] [--methods ...]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from bench_training import configured, load_inputs, run_specs
from machine import describe

from mlaflow.methods import METHODS
from mlaflow.pipeline import experiments as E
from mlaflow.train.loop import train_runs

MATMULS = ("aten::mm", "aten::bmm", "aten::baddbmm", "aten::addmm", "aten::matmul", "aten::linear")
MLP_METHODS = ("late_fusion", "sum", "concat", "mla", "film", "bigated", "ogm_ge", "qmf")


def machine(device: torch.device) -> str:
    gpu = f", on {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return f"{describe()}; {torch.get_num_threads()} torch thread(s){gpu}; torch {torch.__version__}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeat: int = 5) -> float:
    fn()
    sync(device)
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - started) / repeat


def peak(device: torch.device) -> dict[str, float]:
    """GFLOP/s of float32 products: a large square mm, and a batched product of a first layer's shape."""
    n = 4096 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    square = 2 * n**3 / timed(lambda: a @ b, device) / 1e9
    R, B, d_in, d_out = 120, 64, 1024, 128
    x, w = torch.randn(R, B, d_in, device=device), torch.randn(R, d_out, d_in, device=device)
    bias = torch.randn(R, 1, d_out, device=device)
    batched = (
        2 * R * B * d_in * d_out / timed(lambda: torch.baddbmm(bias, x, w.transpose(1, 2)), device) / 1e9
    )
    return {"square mm": square, f"baddbmm {R}x[{B}x{d_in}]x[{d_in}x{d_out}]": batched}


def breakdown(method: str, corpus, specs, settings, device: torch.device) -> dict[str, float]:
    """Self time by kind of operation, as shares of the wall time of one training pass."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    started = time.perf_counter()
    with profile(activities=activities) as prof:
        train_runs(method, corpus, specs, settings, device=str(device))
        sync(device)
    wall = time.perf_counter() - started
    kinds: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        us = event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
        if event.key in MATMULS:
            kinds["matmul"] += us
        elif event.key.startswith("aten::_foreach") or "optim" in event.key:
            kinds["optimizer"] += us
        elif event.key.startswith("aten::"):
            kinds["other ops"] += us
    shares = {kind: us / 1e6 / wall for kind, us in kinds.items()}
    if device.type == "cpu":  # device time is wall time minus the Python between operations
        shares["python and dispatch"] = max(0.0, 1 - sum(shares.values()))
    else:
        shares["device idle (launches, host)"] = max(0.0, 1 - sum(shares.values()))
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cells", type=int, default=1, help="cells stacked (missing rates 0.1, 0.2, ...)")
    parser.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    parser.add_argument("--no-breakdown", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    params = configured(args)
    torch.backends.cuda.matmul.allow_tf32 = False  # what training uses (PyTorch's default)
    corpus, folds, source = load_inputs(params)
    rates = [round(0.1 * (k + 1), 2) for k in range(args.cells)]
    specs = [spec for rate in rates for spec in run_specs(params, corpus, folds, rate)]
    print(f"roofline, {machine(device)}")
    print(
        f"one job = {args.cells} cell(s) x {len(specs) // args.cells} runs stacked, {args.epochs} epochs with "
        f"evaluation; {source} (N={len(corpus.utterance_ids)}, dims={corpus.input_dims})"
    )
    peaks = peak(device)
    top = max(peaks.values())
    for name, gflops in peaks.items():
        print(f"  peak {name}: {gflops:8.1f} GFLOP/s")
    methods = args.methods or ["late_fusion", *sorted(m for m in METHODS if m != "late_fusion")]
    print(
        f"\n  {'method':12s} {'GFLOP':>8s} {'s':>7s} {'GFLOP/s':>8s} {'of peak':>8s} {'cells/s':>8s}  where the time goes"
    )
    from torch.utils.flop_counter import FlopCounterMode

    for method in methods:
        settings = E.method_settings(params, method)
        with FlopCounterMode(display=False) as counter:
            train_runs(method, corpus, specs, settings, device=str(device))
        flops = counter.get_total_flops()
        seconds = timed(
            lambda method=method, settings=settings: train_runs(
                method, corpus, specs, settings, device=str(device)
            ),
            device,
            1,
        )
        achieved = flops / seconds / 1e9
        where = ""
        if not args.no_breakdown:
            shares = breakdown(method, corpus, specs, settings, device)
            where = ", ".join(f"{k} {v:.0%}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1]))
        flag = "" if method not in MLP_METHODS or achieved / top >= 0.5 else "  (below 50%)"
        print(
            f"  {method:12s} {flops / 1e9:8.1f} {seconds:7.2f} {achieved:8.1f} {achieved / top:8.1%} "
            f"{args.cells / seconds:8.3f}  {where}{flag}",
            flush=True,
        )


if __name__ == "__main__":
    main()
