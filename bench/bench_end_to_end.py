"""End-to-end training throughput (the paper's Table 1 setting, train.encoder resnet18): clips per second through
two ResNet-18 encoders (audio: a one-channel filterbank image; visual: `--frames` frames per clip), forward,
backward and SGD step of a method (MLA by default: one modality per step, as eq. 1), for runs stacked as a
training job stacks them (`--runs`: the seeds of a cell), in the precision training uses: float32 on CPU, the
ResNets under bfloat16 autocast on CUDA (`train.amp`; `--no-amp` for float32 there too).

Two sizes: the main job's (`--size embedded`: first-stage width 4, 32 x 32 frames, a 128 x 32 filterbank image)
and the released code's (`--size paper`: torchvision's ResNet-18, 224 x 224 frames, 1024 x 128; on a GPU node).
Random inputs of the right shapes (the throughput does not depend on the values). Prints figures; asserts nothing.

    python bench/bench_end_to_end.py [--device cpu|cuda] [--size embedded|paper] [--runs 3] [--steps 20]
    python bench/bench_end_to_end.py --device cuda --size paper --batch-size 64 [--no-amp]   # a GPU node
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from machine import describe

from mlaflow.methods import build_method
from mlaflow.methods.base import RunGroup
from mlaflow.methods.optim import StackedOptimizer

SIZES = {
    "embedded": {"width": 4, "image": 32, "frames": 3, "spectrogram": (128, 32)},
    "paper": {"width": 64, "image": 224, "frames": 3, "spectrogram": (1024, 128)},
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=list(SIZES), default="embedded")
    parser.add_argument("--method", default="mla")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="train.amp")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, size = torch.device(args.device), SIZES[args.size]
    frames, spectrogram = (size["frames"], 3, size["image"], size["image"]), (1, *size["spectrogram"])
    n = args.batch_size * 8
    g = torch.Generator().manual_seed(0)
    features = [
        torch.randn(n, int(np.prod(spectrogram)), generator=g),
        torch.rand(n, int(np.prod(frames)), generator=g),
    ]
    labels = torch.randint(0, 6, (n,), generator=g)
    rows = torch.arange(n)
    generators = [torch.Generator().manual_seed(s) for s in range(args.runs)]
    data = RunGroup(
        features=[x.to(device) for x in features],
        labels=labels.to(device),
        present=torch.ones(args.runs, n, 2, dtype=torch.bool, device=device),
        splits=[{"train": rows.to(device), "val": rows[:0].to(device), "test": rows[:0].to(device)}]
        * args.runs,
        generators=generators,
        standardize=False,
    )
    train = {
        "encoder": "resnet18",
        "resnet_width": size["width"],
        "amp": args.amp,
        "hidden_dim": 128,
        "dropout": 0.0,
        "batch_size": args.batch_size,
        "optimizer": "sgd",
        "lr": 1e-3,
        "momentum": 0.9,
        "weight_decay": 1e-4,
    }
    options = {
        "mla": {
            "alpha": 0.1,
            "alpha_schedule": "constant",
            "head_gradient_modification": "paper",
            "head_update": "project_gradient",
            "alternation": "per_step",
            "fusion": "per_sample",
            "fixed_weights": {"audio": 0.5, "visual": 0.5},
        }
    }.get(args.method, {})
    method = build_method(
        args.method,
        {"audio": spectrogram, "visual": frames},
        6,
        {"train": train, "method_params": {args.method: options}},
        generators,
    ).to(device)
    optimizer = StackedOptimizer(list(method.parameters()), train, args.runs)
    print(
        f"end-to-end throughput, {describe()}; {torch.get_num_threads()} thread(s); torch {torch.__version__}"
        + (f"; {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")
    )
    print(
        f"  {args.method}, size {args.size} (width {size['width']}, frames {frames}, audio {spectrogram}), "
        f"{args.runs} runs stacked, batch {args.batch_size}, "
        + ("bfloat16 autocast" if args.amp and device.type == "cuda" else "float32")
    )

    def steps(count: int) -> int:
        done, clips = 0, 0
        method.train()
        while done < count:
            for step in method.training_steps(data, args.batch_size, 0):
                optimizer.zero_grad()
                step.loss.sum().backward()
                method.after_backward(step)
                optimizer.step(step.stepping)
                method.after_step(step)
                clips += int(step.active.sum()) * args.batch_size
                done += 1
                if done == count:
                    break
        return clips

    steps(2)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    clips = steps(args.steps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    print(
        f"  {args.steps} steps in {seconds:.2f} s: {clips / seconds:.1f} clip-modality passes/s "
        f"({seconds / args.steps * 1000:.1f} ms/step; a step trains one modality of every run, eq. 1)"
    )


if __name__ == "__main__":
    main()
