"""The report's last sections: the masks actually drawn (real missing fractions) and the provenance block
(commit, config hashes of the report and of every experiment's runs, the corpus that ran as its kind
describes it, encoders or given stores, settings, versions), and the face crops cut from the dialog videos.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from mlaflow import methods as registry
from mlaflow.data import corpora
from mlaflow.errors import InputError
from mlaflow.keys import config_hash
from mlaflow.methods import method_class
from mlaflow.provenance import git_commit, versions
from mlaflow.report import markdown as md
from mlaflow.report.context import ReportContext


def masks(ctx: ReportContext) -> list[str]:
    """Per mask file: protocol, rate, real missing fraction, shares of samples by number of modalities left."""
    if not ctx.masks:
        return ["## Masks", "", "No mask file given.", ""]
    n = max(m["n_modalities"] for m in ctx.masks)
    return [
        "## Masks",
        "",
        *md.table(
            [
                "protocol",
                "missing rate",
                "real missing fraction",
                f"samples with {' / '.join(str(k) for k in range(1, n + 1))} modalities",
                "samples with no modality",
            ],
            [
                [
                    m["protocol"],
                    f"{m['missing_rate']:.2f}",
                    f"{m['real_missing_fraction']:.3f}",
                    " / ".join(
                        f"{100 * m[f'share_{k}_present']:.1f}%" if f"share_{k}_present" in m else "—"
                        for k in range(1, n + 1)
                    ),
                    f"{100 * m['share_all_missing']:.1f}%",
                ]
                for m in ctx.masks
            ],
        ),
        "",
    ]


def run_hashes(ctx: ReportContext) -> list[str]:
    """Per experiment, the config hashes its runs recorded (one per method's job config)."""
    out = []
    for experiment in ctx.experiments:
        runs = ctx.runs[ctx.runs["experiment"] == experiment.name]
        if runs.empty:
            out.append(f"runs:         {experiment.name} ({experiment.root}): none")
            continue
        by_method = runs.groupby("method", sort=False)["config_hash"].unique()
        hashes = ", ".join(f"{method} {'/'.join(map(str, h))}" for method, h in by_method.items())
        out.append(f"runs:         {experiment.name} ({experiment.root}): {hashes}")
    return out


def corpus_lines(ctx: ReportContext) -> list[str]:
    """The corpus that ran, as its kind describes it: a corpus tree (root, label setup), or kind features' label
    table (no root, no label setup: the schema's defaults of those keys are never read); its modalities, and
    per modality the encoder that extracted its store or the store it was given."""
    config = ctx.config
    corpus, kind = config["corpus"], corpora.corpus_kind(config)
    classes = ", ".join(ctx.job_config["classes"])
    table = corpora.label_table(config)
    source = f"{corpus['kind']}, label table {table}" if table else f"{corpus['kind']} ({corpus['root']})"
    if kind.classes is not None:  # the kind's classes come in label setups
        source += f", label setup {corpus['label_setup']}"
    out = [f"corpus:       {source} (classes: {classes})", f"modalities:   {', '.join(ctx.modalities)}"]
    for store in ctx.features:
        out.append(store_line(store, bool(config["features"][store["modality"]]["precomputed"])))
    return out


def store_line(store: dict, given: bool) -> str:
    """One feature store (context.feature_provenance): the encoder that extracted it, or the path of the store
    the config gave, which need not record its encoder (the store schema of docs/data-formats.md asks only for `modality`)."""
    encoder = "encoder not recorded"
    if "encoder" in store:
        encoder = f"encoder {store['encoder']} from {store.get('model_source', 'an unrecorded source')}"
        if "pretrained" in store:
            encoder += f", pretrained={bool(store['pretrained'])}"
    size = f"dim={store['width']}, n={store['n']}"
    if given:
        return f"store:        {store['modality']}: {store['file']}, {encoder}, {size}"
    return (
        f"encoder:      {store['modality']}: {encoder.removeprefix('encoder ')}, {size}, file {store['file']}"
    )


def method_options(config: dict, method: str, modalities: list[str]) -> dict:
    """A method's options as its runs used them: weights by modality name (its class's
    `modality_weight_options`) only for the corpus's modalities (the others are not used,
    mlaflow.methods.base.weights_by_modality), and, without one for every modality, said to be not used at all
    (MLA's fixed fusion rule is then not measured)."""
    options = registry.method_options(config["method_params"], method)
    for key in [key for key in method_class(method).modality_weight_options if key in options]:
        missing = [m for m in modalities if m not in options[key]]
        options[key] = (
            f"not used (no weight for {', '.join(missing)})"
            if missing
            else {m: options[key][m] for m in modalities}
        )
    return options


def provenance(ctx: ReportContext) -> list[str]:
    config = ctx.config
    out = [
        "## Provenance",
        "",
        "```",
        f"generated:    {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        f"git commit:   {git_commit()}",
        f"config hash:  {config_hash(config)} (report job: {config_hash(ctx.job_config)})",
        *run_hashes(ctx),
        *corpus_lines(ctx),
    ]
    out.append(f"training:     {json.dumps(config['train'], sort_keys=True)}")
    for method in dict.fromkeys(ctx.paper_runs["method"]):
        options = method_options(config, method, ctx.modalities)
        out.append(f"method:       {method} {json.dumps(options, sort_keys=True)}")
    out.append("versions:     " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    return out + ["```", "", *face_crops(ctx.job_config.get("faces"))]


def face_crops(faces_dir: str | None) -> list[str]:
    """The faces cut from the dialog videos (corpus.face_frames from_video; mlaflow.data.faces): the detector and
    its settings, the share of utterances with a face per session and per dialog, those without one and what
    became of them, and the contact sheet (a few crops per session, to check by looking)."""
    if not faces_dir:
        return []
    path = Path(faces_dir) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(path, f"unreadable ({err})", "re-run the faces rule (dvc repro)") from err
    settings = summary["settings"]
    policy = {
        "missing": "their visual modality is masked as missing in every mask",
        "error": "an error (on_no_face: error)",
    }[settings["on_no_face"]]
    no_face = summary["no_face"]
    return [
        "### Face crops",
        "",
        f"Cut from the dialog videos by the `faces` rule ({summary['detector']}; {settings['sample_fps']} frames/s of "
        f"each utterance's window, the speaking actor's half, crops of {settings['size']} px with margin "
        f"{settings['margin']}). **{summary['with_face']} of the {summary['n_utterances']} utterances of EmoEvaluation "
        f"({100 * summary['share_with_face']:.1f}%) have a face**; {len(no_face)} have none: {policy}"
        + (f" (first: {', '.join(no_face[:5])})." if no_face else "."),
        "",
        *md.table(["session", "utterances", "with a face", "share"], _face_rows(summary["per_session"])),
        "",
        *md.table(["dialog", "utterances", "with a face", "share"], _face_rows(summary["per_dialog"])),
        "",
        f"![The first crops of each session, a row per session]({Path('..') / faces_dir / 'contact_sheet.png'})",
        "",
    ]


def _face_rows(entries: dict) -> list[list[str]]:
    return [
        [name, str(e["n_utterances"]), str(e["with_face"]), f"{100 * e['share_with_face']:.1f}%"]
        for name, e in entries.items()
    ]
