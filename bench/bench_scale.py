"""Scale benchmark: training time per epoch at two corpus sizes, and extraction in 1 against N shards.

(a) Training: one grid cell (5 leave-one-session-out folds x 3 seeds, stacked, missing rate 0.3) of a few methods
    on random features of the default widths (params.yaml `features.<m>.dim`: 512/1024/1024), at the default
    corpus's size (1350 utterances, as bench_training.py's fallback) and at 10x that. It prints seconds per
    epoch (the training loop's time / epochs: the epochs' training and their validation and test passes, without
    the set-up and the final test; MMIN's teacher epochs included) at each size, their ratio and the ratio of
    the sizes: time per epoch that grows no faster than the data has a ratio at most the data's.
(b) Extraction: an embedded corpus generated at --utterances (params.yaml `corpus.embedded`, utterances per
    dialog scaled), the embedded encoders of params.yaml (--encoders default) or of .test/tiny.yaml (tiny). For
    each modality, the wall time of one `mlaflow extract` process against N shard processes (`--shard k
    --shards N`, runtime.extraction_shards) started together, as Snakemake would run them, plus the merge
    (`mlaflow merge-features`), and the speed-up; each process has --threads threads (a job's threads), and on
    CUDA the shard processes share the GPU. Also whether the merged store is identical to the unsharded one.
    Each process pays Python's start and the imports (transformers: seconds), as a Snakemake job does: on a small
    corpus that, not the encoding, is most of the time (the "(encode)" columns show the encoding alone).

Figures only, no assertions. The machine and the date come first. The defaults (one epoch; 400 utterances, 2
shards, one thread per process) take about ten minutes on 2 CPU cores, most of it MMIN at 13,500 utterances
(`--methods late_fusion,mla` for a quicker look). On a GPU node, for example:

    python bench/bench_scale.py --device cuda --epochs 5 --shards 4 --utterances 13500 --threads 4
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
# the mlaflow of this checkout runs, here and in the processes started (as in the workflow)
SOURCE = REPO_ROOT / "src"


def machine() -> str:
    """The machine, in a few words: CPU model and cores this process may use, the GPU if any, torch."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = re.findall(r"^model name\s*:\s*(.*)$", cpuinfo.read_text(), re.M)
        cpu = names[0] if names else cpu
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return f"{platform.node()}: {cpu}, {cores} cores usable; {gpu}; torch {torch.__version__}"


# ------------------------------------------------------------------------------------------- (a) training


def random_cell(params: dict, n: int, rate: float, seed: int = 0):
    """A corpus of `n` utterances with random features of the configured widths (as bench_training.py's
    fallback, at any size), and the runs of one grid cell: every seed x fold at missing rate `rate`."""
    from mlaflow.data import corpora
    from mlaflow.data.folds import fold_indices, make_folds
    from mlaflow.data.masks import bernoulli_mask
    from mlaflow.train.data import Corpus
    from mlaflow.train.loop import RunSpec

    modalities, classes = corpora.modalities(params), corpora.classes(params)
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(classes), (n,), generator=generator)
    features = [torch.randn(n, params["features"][m]["dim"], generator=generator) for m in modalities]
    manifest = pd.DataFrame(
        {
            "utterance_id": [f"u{i}" for i in range(n)],
            "session": np.arange(n) % 5 + 1,
            "label_index": labels.numpy(),
        }
    )
    corpus = Corpus(manifest["utterance_id"].tolist(), features, labels, classes, {}, modalities)
    splits = params["splits"]
    folds = make_folds(manifest, splits["folds"], splits["validation_fraction"], 0, classes)
    specs = [
        RunSpec(s * 1000 + fold, bernoulli_mask(n, rate, s), fold_indices(folds, fold))
        for s in params["train"]["seeds"]
        for fold in splits["folds"]
    ]
    return corpus, specs


def seconds_per_epoch(
    method: str, corpus, specs, params: dict, epochs: int, device: str
) -> tuple[float, float]:
    """(seconds per epoch of the training loop, wall seconds of the whole call) for one stacked cell."""
    from mlaflow.pipeline import experiments as E
    from mlaflow.train.loop import train_runs

    params["train"]["epochs"] = epochs
    settings = E.method_settings(params, method)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    records = train_runs(method, corpus, specs, settings, device=device)
    wall = time.perf_counter() - started
    loop = records[0].get("train_seconds", wall / len(records)) * len(records)  # each record: its share
    return loop / epochs, wall


def training_part(args, params: dict) -> None:
    sizes = [int(size) for size in args.sizes.split(",")]
    methods = args.methods.split(",")
    print(
        f"\n(a) training: one cell per method ({len(params['train']['seeds'])} seeds x "
        f"{len(params['splits']['folds'])} folds stacked, missing rate {args.missing_rate}), random features "
        f"{[params['features'][m]['dim'] for m in ('audio', 'visual', 'text')]}, {args.epochs} epoch(s), "
        f"device {args.device}, {torch.get_num_threads()} torch thread(s)"
    )
    cells = {n: random_cell(params, n, args.missing_rate) for n in sizes}
    n_train = {
        n: int(np.mean([len(spec.split["train"]) for spec in specs])) for n, (_, specs) in cells.items()
    }
    header = (
        f"{'method':12}" + "".join(f" {f's/epoch N={n}':>16}" for n in sizes) + f" {'ratio':>7} {'data':>6}"
    )
    lines = []
    for method in methods:
        corpus, specs = cells[sizes[0]]
        seconds_per_epoch(method, corpus, specs[:1], params, 1, args.device)  # warm-up: one run, one epoch
        figures = []
        for n in sizes:
            corpus, specs = cells[n]
            per_epoch, wall = seconds_per_epoch(method, corpus, specs, params, args.epochs, args.device)
            figures.append(per_epoch)
            print(f"  {method} N={n}: {per_epoch:.3f} s/epoch (call {wall:.1f} s)", flush=True)
        lines.append(
            f"{method:12}"
            + "".join(f" {value:>16.3f}" for value in figures)
            + f" {figures[-1] / figures[0]:>6.2f}x {sizes[-1] / sizes[0]:>5.1f}x"
        )
    print(f"training rows per run: {', '.join(f'N={n}: {n_train[n]}' for n in sizes)}")
    print(header)
    print("\n".join(lines))


# ------------------------------------------------------------------------------------------- (b) extraction


def extraction_config(args) -> dict:
    """The validated config of the extraction benchmark: the encoders of params.yaml or .test/tiny.yaml, the
    embedded corpus scaled to about --utterances (about 90% of the generated utterances have a 4-class label)."""
    from mlaflow.pipeline import params as P

    if args.encoders == "tiny":
        config = P.validate(yaml.safe_load((REPO_ROOT / ".test" / "tiny.yaml").read_text()))
    else:
        config = P.load(args.params)
    embedded = config["corpus"]["embedded"]
    dialogs = embedded["sessions"] * embedded["dialogs_per_session"]
    embedded["utterances_per_dialog"] = max(1, math.ceil(args.utterances / 0.9 / dialogs))
    return P.validate(config)


def prepare_extraction(config: dict, work: Path) -> dict[str, dict]:
    """Corpus, manifest, encoders and the job config files under `work`, as the workflow makes them; the
    extraction job configs per modality."""
    from mlaflow.data.manifest import write_manifest
    from mlaflow.features.extract import build_encoder_job
    from mlaflow.pipeline.jobconfigs import extracted_modalities, job_configs

    configs = job_configs(config)
    corpus_root = work / "corpus"
    if not corpus_root.exists():
        import importlib

        corpus_config = configs[f"{config['corpus']['root']}.config.json"]
        generate = importlib.import_module(corpus_config["generator"]).generate_corpus
        started = time.perf_counter()
        generate(corpus_root, corpus_config["settings"], threads=len(os.sched_getaffinity(0)))
        print(f"  corpus generated in {time.perf_counter() - started:.1f} s", flush=True)
    if not (work / "manifest.csv").exists():
        write_manifest(configs["data/manifest/manifest.config.json"], corpus_root, work / "manifest.csv")
    jobs = {}
    for modality in extracted_modalities(config):
        model_dir = work / "models" / modality
        if not model_dir.exists():
            build_encoder_job(configs[f"data/models/{modality}.config.json"], model_dir)
        job = configs[f"data/features/{modality}.config.json"]
        (work / f"{modality}.config.json").write_text(json.dumps(job))
        jobs[modality] = job
    return jobs


def run_steps(commands: list[list[str]], env: dict) -> tuple[float, list[float]]:
    """Start the commands together and wait for all: (wall seconds, each one's own encoding seconds)."""
    started = time.perf_counter()
    processes = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd in commands
    ]
    outputs = [process.communicate() for process in processes]
    wall = time.perf_counter() - started
    encoding = []
    for process, (stdout, stderr) in zip(processes, outputs):
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(commands[0][:4])} failed:\n{stdout[-2000:]}\n{stderr[-4000:]}")
        found = re.search(r"'seconds': ([\d.]+)", stderr)
        encoding.append(float(found[1]) if found else float("nan"))
    return wall, encoding


def same_store(a: Path, b: Path) -> bool:
    with h5py.File(a, "r") as x, h5py.File(b, "r") as y:
        if set(x) != set(y) or dict(x.attrs) != dict(y.attrs):
            return False
        return all(np.array_equal(x[name][()], y[name][()]) for name in x)


def extraction_part(args) -> None:
    config = extraction_config(args)
    work = Path(args.work or tempfile.mkdtemp(prefix="mlaflow_bench_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"\n(b) extraction: {args.encoders} embedded encoders, 1 process against {args.shards} shard processes "
        f"started together (+ merge), {args.threads} thread(s) each, device {args.device}; work folder {work}"
    )
    jobs = prepare_extraction(config, work)
    n = len(pd.read_csv(work / "manifest.csv"))
    print(f"  manifest: {n} utterances", flush=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SOURCE), os.environ.get("PYTHONPATH")])),
        "MLAFLOW_RUNTIME": json.dumps({"device": args.device}),
        "HF_HUB_OFFLINE": "1",
    }

    def extract(modality: str, out: Path, threads: int, shard: tuple[int, int] = (1, 1)) -> list[str]:
        for stale in (out, out.with_name(out.name.replace(".h5", ".partial.h5"))):
            stale.unlink(missing_ok=True)
        return [
            sys.executable, "-m", "mlaflow", "extract", "--config", str(work / f"{modality}.config.json"),
            "--manifest", str(work / "manifest.csv"), "--model", str(work / "models" / modality),
            "--out", str(out), "--threads", str(threads), "--shard", str(shard[0]), "--shards", str(shard[1]),
        ]  # fmt: skip

    def merge(modality: str, shards: list[Path], out: Path) -> list[str]:
        return [
            sys.executable, "-m", "mlaflow", "merge-features", "--config", str(work / f"{modality}.config.json"),
            "--manifest", str(work / "manifest.csv"), "--shards", *map(str, shards), "--out", str(out),
        ]  # fmt: skip

    header = (
        f"{'modality':8} {'1 job s':>8} {'(encode)':>9} {f'{args.shards} shards s':>11} {'(encode)':>9} "
        f"{'merge s':>8} {'speed-up':>9} {'identical':>9}"
    )
    lines, totals = [], [0.0, 0.0]
    for modality in jobs:
        whole = work / f"{modality}.h5"
        one_wall, (one_encode,) = run_steps([extract(modality, whole, args.threads)], env)
        shards = [work / "shards" / modality / f"{k}of{args.shards}.h5" for k in range(1, args.shards + 1)]
        commands = [
            extract(modality, path, args.threads, (k, args.shards)) for k, path in enumerate(shards, 1)
        ]
        shard_wall, shard_encode = run_steps(commands, env)
        merged = work / f"{modality}.merged.h5"
        merged.unlink(missing_ok=True)
        merge_wall, _ = run_steps([merge(modality, shards, merged)], env)
        sharded = shard_wall + merge_wall
        totals[0] += one_wall
        totals[1] += sharded
        line = (
            f"{modality:8} {one_wall:>8.1f} {one_encode:>9.1f} {shard_wall:>11.1f} {max(shard_encode):>9.1f} "
            f"{merge_wall:>8.1f} {one_wall / sharded:>8.2f}x {'yes' if same_store(whole, merged) else 'NO':>9}"
        )
        print(f"  {line}", flush=True)
        lines.append(line)
        if args.threads_baseline:
            more_wall, (more_encode,) = run_steps([extract(modality, whole, args.threads * args.shards)], env)
            lines.append(
                f"{'':8} (one job with {args.threads * args.shards} threads instead: {more_wall:.1f} s, encoding "
                f"{more_encode:.1f} s; the shards' speed-up over it {more_wall / sharded:.2f}x)"
            )
    print(f"utterances: {n}; wall seconds of whole processes (start-up, encoder loading, encoding, writing)")
    print(header)
    print("\n".join(lines))
    print(
        f"{'all':8} {totals[0]:>8.1f} {'':>9} {totals[1]:>11.1f} {'':>9} {'':>8} {totals[0] / totals[1]:>8.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["training", "extraction", "both"], default="both")
    parser.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    parser.add_argument("--device", default="cpu", help="cpu (default) | cuda | cuda:N")
    parser.add_argument("--epochs", type=int, default=1, help="(a) epochs timed per size and method")
    parser.add_argument("--methods", default="late_fusion,mla,mmin", help="(a) comma-separated")
    parser.add_argument("--sizes", default="1350,13500", help="(a) the two corpus sizes (utterances)")
    parser.add_argument("--missing-rate", type=float, default=0.3, help="(a)")
    parser.add_argument("--shards", type=int, default=2, help="(b) shard processes")
    parser.add_argument("--utterances", type=int, default=400, help="(b) size of the generated corpus")
    parser.add_argument("--encoders", choices=["tiny", "default"], default="default", help="(b)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of each process (a job's threads)"
    )
    parser.add_argument(
        "--threads-baseline",
        action="store_true",
        help="(b) also time one process with --shards x --threads threads (on CPU: sharding against more threads)",
    )
    parser.add_argument("--work", help="(b) working folder, kept (default: a new temporary folder)")
    args = parser.parse_args()
    sys.path.insert(0, str(SOURCE))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mlaflow.pipeline import params as P

    torch.set_num_threads(args.threads)

    print(f"bench_scale.py, {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"machine: {machine()}")
    print(f"command: {' '.join(sys.argv[1:]) or '(defaults)'}")
    if args.part in ("training", "both"):
        training_part(args, P.load(args.params))
    if args.part in ("extraction", "both"):
        extraction_part(args)


if __name__ == "__main__":
    main()
