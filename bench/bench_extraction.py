"""Benchmark of feature extraction: batching + length sorting vs one utterance at a time, and peak memory.

For each modality it prints utterances/s of the normal (batched, length-sorted) extraction and of a run with
batch_size 1, their ratio, the padding fraction of the sorted batches (and what it would be unsorted), and
the peak resident memory (RSS) of a fresh process extracting two corpus sizes - flat if writes are streamed.

The corpus is generated (noise+tone wavs of 1-2.5 s, ~10-word transcripts, 3 random 64 px face frames per
utterance) unless --manifest points at a manifest CSV with the columns extraction reads. Encoders are the
embedded ones of params.yaml `features` (or of --params). Figures only, no assertions.

    .venv/bin/python bench/bench_extraction.py --n 300
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile
import yaml
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
MODALITIES = ("audio", "visual", "text")
LABELS = ("neu", "hap", "sad", "ang")


def make_corpus(
    root: Path,
    n: int,
    seed: int = 0,
    min_s: float = 1.0,
    max_s: float = 2.5,
    n_frames: int = 3,
    image_size: int = 64,
    words_per_transcript: int = 10,
) -> pd.DataFrame:
    """Write n synthetic utterances under root and return their manifest."""
    from mlaflow.features.wordpiece import ENGLISH_WORDS

    rng = np.random.default_rng(seed)
    vocabulary = ENGLISH_WORDS + ["gonna", "whaddya", "supercalifragilistic"]  # some words outside the vocab
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        utterance_id = f"Ses01F_bench_{i:05d}"
        n_samples = int(rng.uniform(min_s, max_s) * 16_000)
        t = np.arange(n_samples) / 16_000
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.05 * rng.standard_normal(n_samples)
        wav_path = root / f"{utterance_id}.wav"
        soundfile.write(wav_path, wave.astype(np.float32), 16_000, subtype="PCM_16")
        frames_dir = root / utterance_id
        frames_dir.mkdir(exist_ok=True)
        for k in range(n_frames):
            pixels = rng.integers(0, 256, size=(image_size, image_size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(frames_dir / f"{k:03d}.png")
        n_words = max(1, int(rng.normal(words_per_transcript, 3)))
        transcript = " ".join(rng.choice(vocabulary, size=n_words)).capitalize() + "."
        label = LABELS[i % len(LABELS)]
        rows.append(
            {
                "utterance_id": utterance_id,
                "session": 1,
                "speaker": "F",
                "label": label,
                "label_index": LABELS.index(label),
                "wav_path": str(wav_path),
                "transcript": transcript,
                "frames_dir": str(frames_dir),
                "n_frames": n_frames,
            }
        )
    return pd.DataFrame(rows)


def unsorted_padding_fraction(
    manifest: pd.DataFrame, modality: str, features_cfg: dict, model_dir: Path
) -> float:
    """Padding fraction the same batches would have in manifest order (audio: samples, text: tokens)."""
    batch_size, max_length = features_cfg[modality]["batch_size"], features_cfg["text"]["max_length"]
    if modality == "audio":
        lengths = np.array([soundfile.info(p).frames for p in manifest["wav_path"]])
    elif modality == "text":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        lengths = np.array(
            [
                len(ids)
                for ids in tokenizer(
                    manifest["transcript"].fillna("").tolist(), truncation=True, max_length=max_length
                )["input_ids"]
            ]
        )
    else:
        return 0.0  # frames are concatenated, never padded
    real = padded = 0
    for start in range(0, len(lengths), batch_size):
        batch = lengths[start : start + batch_size]
        real += batch.sum()
        padded += batch.max() * len(batch)
    return 1.0 - real / padded


def memory_mib(field: str) -> float:
    """VmRSS (current) or VmHWM (peak) of this process, from /proc (Linux). ru_maxrss is not used: after
    fork+exec it can report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    return float("nan")


def run_extraction(
    modality: str, manifest: pd.DataFrame, model_dir: Path, out: Path, features_cfg: dict, device: str = "cpu"
) -> dict:
    from mlaflow.features.extract import extract_features

    if out.exists():
        out.unlink()
    return extract_features(
        modality, manifest, model_dir, out, features_cfg, params_hash="bench", device=device
    )


def rss_child(args: argparse.Namespace) -> None:
    """Child process: extract one modality for the first n utterances and print its peak RSS as JSON."""
    manifest = pd.read_csv(args.manifest).head(args.rss_child_n)
    features_cfg = yaml.safe_load(Path(args.params).read_text())["features"]
    before = memory_mib("VmRSS")
    stats = run_extraction(
        args.rss_child,
        manifest,
        Path(args.work) / "models" / args.rss_child,
        Path(args.work) / f"rss_{args.rss_child}_{args.rss_child_n}.h5",
        features_cfg,
    )
    print(
        json.dumps(
            {"peak_rss_mib": memory_mib("VmHWM"), "rss_before_mib": before, "seconds": stats["seconds"]}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", help="manifest CSV to use instead of a generated corpus")
    parser.add_argument(
        "--n", type=int, default=300, help="utterances of the generated corpus (batched runs)"
    )
    parser.add_argument("--single-n", type=int, default=60, help="utterances timed one at a time")
    parser.add_argument(
        "--rss-sizes", default="", help="two corpus sizes for the peak-RSS runs (default n/4,n)"
    )
    parser.add_argument("--modalities", default=",".join(MODALITIES))
    parser.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    parser.add_argument("--work", help="working directory (default: a temporary one)")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    parser.add_argument("--rss-child-n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.rss_child:
        return rss_child(args)

    import torch

    from mlaflow.features.extract import build_embedded_encoder

    work = Path(args.work or tempfile.mkdtemp(prefix="mlaflow_bench_"))
    features_cfg = yaml.safe_load(Path(args.params).read_text())["features"]
    if args.manifest:
        manifest = pd.read_csv(args.manifest)
        manifest_csv = Path(args.manifest)
    else:
        started = time.perf_counter()
        manifest = make_corpus(work / "corpus", args.n)
        manifest_csv = work / "manifest.csv"
        manifest.to_csv(manifest_csv, index=False)
        print(f"generated {len(manifest)} utterances in {time.perf_counter() - started:.1f} s under {work}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    sizes = [int(s) for s in args.rss_sizes.split(",") if s] or [max(len(manifest) // 4, 1), len(manifest)]

    header = (
        f"{'modality':8} {'batch':>5} {'utt/s batched':>14} {'utt/s single':>13} {'ratio':>6} "
        f"{'padding sorted':>15} {'unsorted':>9} {'build s':>8} {'load s':>7}"
    )
    lines = []
    for modality in args.modalities.split(","):
        model_dir = work / "models" / modality
        started = time.perf_counter()
        if not model_dir.exists():
            build_embedded_encoder(modality, model_dir, features_cfg)
        build_seconds = time.perf_counter() - started
        batched = run_extraction(modality, manifest, model_dir, work / f"{modality}.h5", features_cfg)
        single_cfg = copy.deepcopy(features_cfg)
        single_cfg[modality]["batch_size"] = 1
        single = run_extraction(
            modality, manifest.head(args.single_n), model_dir, work / f"{modality}_single.h5", single_cfg
        )
        ratio = batched["utterances_per_second"] / single["utterances_per_second"]
        unsorted = unsorted_padding_fraction(manifest, modality, features_cfg, model_dir)
        lines.append(
            f"{modality:8} {features_cfg[modality]['batch_size']:>5} {batched['utterances_per_second']:>14.1f} "
            f"{single['utterances_per_second']:>13.1f} {ratio:>6.2f} "
            f"{batched['padding_fraction']:>15.3f} {unsorted:>9.3f} {build_seconds:>8.1f} "
            f"{batched['load_seconds']:>7.1f}"
        )
        print(f"{modality}: {json.dumps(batched)}", flush=True)

    print("\nthroughput (CPU, embedded encoders of params.yaml)")
    print(header)
    print("\n".join(lines))

    # GPU section: same batches on CUDA (fp16 autocast if features.half_precision)
    if torch.cuda.is_available():
        print(f"\nGPU: {torch.cuda.get_device_name(0)}, half_precision={features_cfg['half_precision']}")
        for modality in args.modalities.split(","):
            model_dir = work / "models" / modality
            cpu = run_extraction(modality, manifest, model_dir, work / f"{modality}.h5", features_cfg)
            gpu = run_extraction(
                modality, manifest, model_dir, work / f"{modality}_gpu.h5", features_cfg, "cuda"
            )
            print(
                f"{modality:8} utt/s cuda {gpu['utterances_per_second']:.1f} ({gpu['dtype']}) vs cpu "
                f"{cpu['utterances_per_second']:.1f}: {gpu['utterances_per_second'] / cpu['utterances_per_second']:.1f}x"
            )
    else:
        print("\nno CUDA device: GPU section skipped")

    print(f"\npeak RSS of a fresh extraction process at corpus sizes {sizes}")
    for modality in args.modalities.split(","):
        figures = []
        for size in sizes:
            result = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--rss-child",
                    modality,
                    "--rss-child-n",
                    str(size),
                    "--manifest",
                    str(manifest_csv),
                    "--params",
                    args.params,
                    "--work",
                    str(work),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            figures.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(
            f"{modality:8} "
            + "  ".join(f"n={size}: {fig['peak_rss_mib']:.0f} MiB" for size, fig in zip(sizes, figures))
            + f"   (after imports: {figures[0]['rss_before_mib']:.0f} MiB)"
        )


if __name__ == "__main__":
    main()
