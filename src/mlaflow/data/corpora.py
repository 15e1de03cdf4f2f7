"""The corpus registry: what each `corpus.kind` supplies to the rest of the workflow.

A kind names its modalities (the order of every mask's columns and of every method's encoders), its classes
per label setup (the order of `label_index`), the adapter that builds its manifest, the generator that writes
it (the embedded kinds), whether its features are extracted or given, the paper's dataset it stands for (whose
figures the report shows beside its tables, or None) and how that dataset's tables name its modalities.
Everything downstream reads these through `modalities(config)` and `classes(config)`, never constants.

| kind            | modalities           | classes                        | manifest from            | features  |
|-----------------|----------------------|--------------------------------|--------------------------|-----------|
| embedded        | audio, visual, text  | IEMOCAP 4class / 6class        | generated IEMOCAP tree   | extracted |
| iemocap         | audio, visual, text  | IEMOCAP 4class / 6class        | corpus.root              | extracted |
| embedded_cremad | audio, visual        | neu hap sad fea dis ang        | generated CREMA-D tree   | extracted |
| cremad          | audio, visual        | neu hap sad fea dis ang        | corpus.root              | extracted |
| features        | corpus.modalities    | corpus.classes                 | corpus.table             | given     |
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlaflow.data.cremad import CLASS_NAMES as CREMAD_CLASSES
from mlaflow.data.iemocap import CLASS_NAMES as IEMOCAP_CLASSES
from mlaflow.errors import ParamsError


@dataclass(frozen=True)
class CorpusKind:
    name: str
    modalities: tuple[str, ...] | None  # None: from corpus.modalities
    classes: (
        dict[str, list[str]] | None
    )  # label setup -> class names in label_index order; None: corpus.classes
    adapter: str  # "module:function" of its manifest builder (mlaflow.data.manifest)
    generator_module: str | None = None  # has generate_corpus(out, cfg, threads) (generated kinds)
    generator_key: str | None = None  # its settings: corpus.<key>
    extracted: bool = True  # False: every modality's store is given (features.<m>.precomputed)
    paper_dataset: str | None = None  # the paper's dataset it stands for (paper_results.yaml)
    paper_columns: dict[str, str] = field(default_factory=dict)  # modality -> the paper's column name
    # defaults of the options that name a modality (mlaflow.pipeline.params fills them where a config leaves them out)
    strongest: str | None = None  # film's condition, bigated's gate (None: the first modality)
    isolation_modalities: tuple[str, ...] | None = (
        None  # masked in turn by the isolation analysis (None: all)
    )
    fixed_weights: dict[str, float] | None = None  # MLA's fusion fixed (None: equal weights)


IEMOCAP_MODALITIES = ("audio", "visual", "text")
CREMAD_MODALITIES = ("audio", "visual")

# IEMOCAP: text carries the label most (the paper's Table 2 unimodal rows); Figure 2 masks audio and text in turn;
# the released MLA code's fixed fusion weights. CREMA-D: audio is the dominant modality (OGM-GE, the paper).
IEMOCAP_DEFAULTS = {
    "paper_dataset": "IEMOCAP",
    "paper_columns": {"visual": "image"},
    "strongest": "text",
    "isolation_modalities": ("audio", "text"),
    "fixed_weights": {"audio": 0.35, "visual": 0.25, "text": 0.40},
}
CREMAD_DEFAULTS = {"paper_dataset": "CREMA-D", "paper_columns": {"visual": "video"}, "strongest": "audio"}

CORPORA = {
    "embedded": CorpusKind(
        "embedded",
        IEMOCAP_MODALITIES,
        IEMOCAP_CLASSES,
        "mlaflow.data.iemocap:manifest_for",
        "mlaflow.data.synthetic",
        "embedded",
        **IEMOCAP_DEFAULTS,
    ),
    "iemocap": CorpusKind(
        "iemocap",
        IEMOCAP_MODALITIES,
        IEMOCAP_CLASSES,
        "mlaflow.data.iemocap:manifest_for",
        **IEMOCAP_DEFAULTS,
    ),
    "embedded_cremad": CorpusKind(
        "embedded_cremad",
        CREMAD_MODALITIES,
        CREMAD_CLASSES,
        "mlaflow.data.cremad:manifest_for",
        "mlaflow.data.synthetic_cremad",
        "embedded_cremad",
        **CREMAD_DEFAULTS,
    ),
    "cremad": CorpusKind(
        "cremad", CREMAD_MODALITIES, CREMAD_CLASSES, "mlaflow.data.cremad:manifest_for", **CREMAD_DEFAULTS
    ),
    "features": CorpusKind("features", None, None, "mlaflow.data.table:manifest_for", extracted=False),
}


def corpus_kind(config: dict) -> CorpusKind:
    kind = config["corpus"]["kind"]
    if kind not in CORPORA:
        raise ParamsError("corpus.kind", f"unknown corpus kind {kind!r}", f"use one of {sorted(CORPORA)}")
    return CORPORA[kind]


def modalities(config: dict) -> list[str]:
    kind = corpus_kind(config)
    if kind.modalities is not None:
        return list(kind.modalities)
    names = config["corpus"]["modalities"]
    if not names:
        raise ParamsError(
            "corpus.modalities",
            f"is not set; corpus kind {kind.name!r} takes its modality names from it",
            "list two or more, e.g. [speech, face, words]",
        )
    return list(names)


def classes(config: dict) -> list[str]:
    kind = corpus_kind(config)
    if kind.classes is None:
        names = config["corpus"]["classes"]
        if not names:
            raise ParamsError(
                "corpus.classes",
                f"is not set; corpus kind {kind.name!r} takes its class names from it",
                "list two or more, in label_index order",
            )
        return list(names)
    setup = config["corpus"]["label_setup"]
    if setup not in kind.classes:
        raise ParamsError(
            "corpus.label_setup",
            f"{setup!r} is not a label setup of corpus kind {kind.name!r}",
            f"use one of {sorted(kind.classes)}",
        )
    return list(kind.classes[setup])


def manifest_config(config: dict) -> dict:
    """What the manifest job builds the manifest from (its config file)."""
    kind, corpus = corpus_kind(config), config["corpus"]
    out = {"kind": kind.name, "adapter": kind.adapter, "classes": classes(config)}
    if kind.name in ("embedded", "iemocap"):
        out["label_setup"] = corpus["label_setup"]
    elif kind.name in ("cremad", "embedded_cremad"):
        out.update(
            label_setup=corpus["label_setup"],
            speaker_groups=corpus["speaker_groups"],
            split_file=corpus["split_file"] if kind.name == "cremad" else None,
        )
    else:
        out["table"] = corpus["table"]
    return out
