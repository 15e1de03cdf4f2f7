"""The one command-line interface the Snakemake rules call: `python -m mlaflow <step> ...`.

Every step reads params.yaml (validated against the schema) and writes its outputs atomically.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mlaflow import params as params_mod
from mlaflow.errors import MlaflowError

log = logging.getLogger("mlaflow")


def _corpus(args, params):
    from mlaflow.data.synthetic import generate_corpus

    summary = generate_corpus(Path(args.out), params["corpus"]["embedded"], threads=args.threads)
    log.info("embedded corpus written to %s: %s", args.out, summary)


def _manifest(args, params):
    from mlaflow.data.iemocap import build_manifest
    from mlaflow.io import atomic_path

    manifest, counts = build_manifest(Path(args.corpus_root), params["corpus"]["label_setup"])
    log.info("manifest: %d utterances kept; counts: %s", len(manifest), counts)
    with atomic_path(args.out, ".csv") as tmp:
        manifest.to_csv(tmp, index=False)


def _folds(args, params):
    import pandas as pd

    from mlaflow.data.folds import make_folds
    from mlaflow.io import atomic_path

    manifest = pd.read_csv(args.manifest, dtype={"utterance_id": str})
    cfg = params["splits"]
    table = make_folds(manifest, cfg["folds"], cfg["validation_fraction"], cfg["seed"])
    for fold in cfg["folds"]:
        log.info("fold %d: %s", fold, table[f"fold{fold}"].value_counts().to_dict())
    with atomic_path(args.out, ".csv") as tmp:
        table.to_csv(tmp, index=False)


def _masks(args, params):
    import pandas as pd

    from mlaflow.data.masks import draw_mask, mask_stats, write_masks

    ids = pd.read_csv(args.manifest, dtype={"utterance_id": str})["utterance_id"].tolist()
    cfg = params["masks"]
    protocol = args.protocol or cfg["protocol"]
    masks = {seed: draw_mask(protocol, len(ids), args.missing_rate, seed, cfg["all_missing"])
             for seed in params["train"]["seeds"]}
    for seed, present in masks.items():
        log.info("missing_rate=%.2f seed=%d: %s", args.missing_rate, seed, mask_stats(present))
    write_masks(args.out, ids, masks, args.missing_rate, protocol, cfg["all_missing"])


def _build_encoder(args, params):
    from mlaflow.features.extract import build_embedded_encoder

    build_embedded_encoder(args.modality, Path(args.out), params["features"])
    log.info("embedded (randomly initialised, NOT pretrained) %s encoder saved to %s", args.modality, args.out)


def _extract(args, params):
    import pandas as pd

    from mlaflow.features.extract import extract_features

    manifest = pd.read_csv(args.manifest, dtype={"utterance_id": str, "transcript": str})
    stats = extract_features(args.modality, manifest, Path(args.model), Path(args.out), params["features"],
                             params_mod.params_hash(params, params_mod.FEATURE_SECTIONS), threads=args.threads)
    log.info("%s features: %s", args.modality, stats)


def _train(args, params):
    import pandas as pd

    from mlaflow.train.data import load_corpus
    from mlaflow.train.loop import train_group

    params = params_mod.variant_params(params, args.variant)
    feature_paths = dict(zip(params_mod.MODALITIES, args.features))
    corpus = load_corpus(args.manifest, feature_paths, params)
    folds_table = pd.read_csv(args.folds, dtype={"utterance_id": str})
    if folds_table["utterance_id"].tolist() != corpus.utterance_ids:
        from mlaflow.errors import InputError
        raise InputError(args.folds, "utterance ids differ from the manifest's",
                         "regenerate folds after the manifest changed (snakemake --forcerun folds)")
    seeds = args.seed_list or params["train"]["seeds"]
    folds = args.fold_list or params["splits"]["folds"]
    for key, chosen, allowed in (("train.seeds", seeds, params["train"]["seeds"]),
                                 ("splits.folds", folds, params["splits"]["folds"])):
        if not set(chosen) <= set(allowed):
            from mlaflow.errors import ParamsError
            raise ParamsError(key, f"{sorted(set(chosen) - set(allowed))} not in {allowed}", "train only configured runs")
    runs = [(seed, fold) for seed in seeds for fold in folds]
    if len(args.out) != len(runs):
        raise SystemExit(f"expected {len(runs)} output paths (seeds x folds), got {len(args.out)}")
    from mlaflow.data.masks import mask_missing_rate
    shift_masks = {params_mod.format_rate(mask_missing_rate(path)): path for path in args.shift_masks}
    train_group(args.method, args.missing_rate, corpus, folds_table, args.masks, dict(zip(runs, args.out)), params,
                args.variant, shift_masks)


def _summary(args, params):
    from mlaflow.report.build import build_summary

    build_summary(args.runs, params, Path(args.out_dir))


def _report(args, params):
    from mlaflow.report.build import build_report

    build_report(args.runs, params, Path(args.out_dir), feature_paths=args.features, masks=args.masks)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlaflow", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    sub = parser.add_subparsers(dest="step", required=True)

    p = sub.add_parser("corpus", help="generate the embedded corpus in the IEMOCAP layout")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: up to 2)")
    p.set_defaults(func=_corpus)

    p = sub.add_parser("manifest", help="parse an IEMOCAP-layout corpus into a manifest CSV")
    p.add_argument("--corpus-root", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_manifest)

    p = sub.add_parser("folds", help="leave-one-session-out folds with a validation split")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_folds)

    p = sub.add_parser("masks", help="missing-modality masks for one missing rate and every seed")
    p.add_argument("--manifest", required=True)
    p.add_argument("--missing-rate", type=float, required=True)
    p.add_argument("--protocol", choices=params_mod.MASK_PROTOCOLS + params_mod.ISOLATION_PROTOCOLS, default=None,
                   help="mask protocol (default: masks.protocol)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_masks)

    p = sub.add_parser("build-encoder", help="build an embedded (random, not pretrained) encoder")
    p.add_argument("--modality", choices=params_mod.MODALITIES, required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_build_encoder)

    p = sub.add_parser("extract", help="extract utterance-level features of one modality into HDF5")
    p.add_argument("--modality", choices=params_mod.MODALITIES, required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.set_defaults(func=_extract)

    p = sub.add_parser("train", help="train all seeds and folds of one method at one missing rate")
    p.add_argument("--method", required=True)
    p.add_argument("--missing-rate", type=float, required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--features", nargs=3, required=True, metavar=("AUDIO", "VISUAL", "TEXT"))
    p.add_argument("--folds", required=True)
    p.add_argument("--masks", required=True)
    p.add_argument("--seed-list", type=int, nargs="+", default=None, help="seeds of this job (default: train.seeds)")
    p.add_argument("--fold-list", type=int, nargs="+", default=None, help="folds of this job (default: splits.folds)")
    p.add_argument("--variant", default=params_mod.PAPER_VARIANT,
                   help="a fidelity variant: paper (default), a name under fidelity.variants, or masks_<protocol>")
    p.add_argument("--shift-masks", nargs="*", default=[],
                   help="mask files of other missing rates: also test every run under each (test-time shift)")
    p.add_argument("--out", nargs="+", required=True, help="one metrics JSON per (seed, fold), seeds outer")
    p.set_defaults(func=_train)

    p = sub.add_parser("summary", help="the main grid's metrics and plots (reports/metrics.json, plots/)")
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--out-dir", default="reports")
    p.set_defaults(func=_summary)

    p = sub.add_parser("report", help="reports/report.md, with the fidelity section and its metrics")
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--features", nargs=3, required=True)
    p.add_argument("--masks", nargs="+", required=True)
    p.add_argument("--out-dir", default="reports")
    p.set_defaults(func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        params = params_mod.load(args.params)
        args.func(args, params)
    except MlaflowError as err:
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
