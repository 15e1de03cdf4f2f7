"""The corpus registry: what each `corpus.kind` supplies to the rest of the workflow.

A kind names its modalities (the order of every mask's columns and of every method's encoders), its classes
per label setup (the order of `label_index`), the adapter that builds its manifest, the generator that writes
it (the embedded kinds), whether its features are extracted or given, the paper's dataset it stands for (whose
figures the report shows beside its tables, or None) and how that dataset's tables name its modalities.
It also says what its manifest job reads: the source (`source`: the corpus tree at corpus.root, or the label
table of kind features), the corpus.* settings its config takes (`manifest_keys`) and any other file it reads
(`extra_inputs`: CREMA-D's split file), each of which must exist before a job starts. Everything downstream
reads these through the functions below (`modalities`, `classes`, `manifest_config`, `manifest_source`,
`manifest_inputs`, `label_table`, `input_paths`), never a kind's name: adding a corpus is its adapter module
plus its entry here.

| kind            | modalities           | classes                        | manifest from            | features  |
|-----------------|----------------------|--------------------------------|--------------------------|-----------|
| embedded        | audio, visual, text  | IEMOCAP 4class / 6class        | generated IEMOCAP tree   | extracted |
| iemocap         | audio, visual, text  | IEMOCAP 4class / 6class        | corpus.root              | extracted |
| embedded_cremad | audio, visual        | neu hap sad fea dis ang        | generated CREMA-D tree   | extracted |
| cremad          | audio, visual        | neu hap sad fea dis ang        | corpus.root              | extracted |
| embedded_ks     | audio, visual        | Kinetics-Sounds names (2-8)    | generated KS tree        | extracted |
| kinetics        | audio, visual        | the tree's class.txt           | corpus.root              | extracted |
| embedded_food101| image, text          | Food-101 names (2-8)           | generated Food-101 tree  | extracted |
| food101         | image, text          | the tree's class folders       | corpus.root              | extracted |
| embedded_mvsa   | image, text          | positive neutral negative      | generated MVSA folder    | extracted |
| mvsa            | image, text          | positive neutral negative      | corpus.root              | extracted |
| features        | corpus.modalities    | corpus.classes                 | corpus.table             | given     |
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from mlaflow.data.cremad import CLASS_NAMES as CREMAD_CLASSES
from mlaflow.data.iemocap import CLASS_NAMES as IEMOCAP_CLASSES
from mlaflow.data.mvsa import CLASS_NAMES as MVSA_CLASSES
from mlaflow.errors import ParamsError


@dataclass(frozen=True)
class CorpusPath:
    """A path of the config (`corpus.<key>`) that a kind's manifest job reads: a directory or a file, which
    must exist before any job starts (mlaflow.pipeline.params), unless the kind generates it or it is optional
    and null."""

    key: str
    what: str  # what it should point at, for the error that says it does not
    directory: bool = False
    optional: bool = False  # null: not read


TREE = CorpusPath("root", "the corpus (see the README)", directory=True)


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
    strongest: str | None = None  # a method option naming one modality (None: the first modality)
    isolation_modalities: tuple[str, ...] | None = (
        None  # masked in turn by the isolation analysis (None: all)
    )
    fixed_weights: dict[str, float] | None = None  # a method option weighting each modality (None: equal)
    # the manifest job: what it is read from; the corpus.* settings its config takes, in order, and those the
    # kind fixes instead; the other files it reads (each one a setting of the config, an input of the job)
    source: CorpusPath = TREE
    manifest_keys: tuple[str, ...] = ()
    manifest_fixed: dict = field(default_factory=dict)
    extra_inputs: tuple[CorpusPath, ...] = ()
    layout: str | None = None  # the release whose directory layout the corpus tree has (None: no tree)
    # "module:function" giving the class names from the config (classes None): a class file, a generator's count
    classes_from: str | None = None
    video_faces: bool = (
        False  # its face frames can be cut from dialog videos (corpus.face_frames, data/faces.py)
    )
    conversations: bool = False  # its manifest orders utterances in dialogs (dialog, turn): GCNet runs on it


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
    "source": CorpusPath("root", "the IEMOCAP release (see the README)", directory=True),
    "manifest_keys": ("label_setup", "face_frames"),
    "layout": "IEMOCAP",
    "video_faces": True,
    "conversations": True,
}
CREMAD_DEFAULTS = {
    "paper_dataset": "CREMA-D",
    "paper_columns": {"visual": "video"},
    "strongest": "audio",
    "source": CorpusPath("root", "the CREMA-D release (see the README)", directory=True),
    "manifest_keys": ("label_setup", "speaker_groups", "split_file"),
    "layout": "CREMA-D",
}
KINETICS_DEFAULTS = {
    "paper_dataset": "Kinetics-Sounds",
    "paper_columns": {"visual": "video"},
    "strongest": "audio",
    "source": CorpusPath("root", "the Kinetics-Sounds tree (see docs/data-formats.md)", directory=True),
    "layout": "Kinetics-Sounds",
}
# Food-101 and MVSA: the text names the dish or says the sentiment far more reliably than the picture (the
# paper's Table 1); the pictures are single images (image_path), not frames
IMAGE_TEXT_MODALITIES = ("image", "text")
FOOD101_DEFAULTS = {
    "paper_dataset": "Food-101",
    "strongest": "text",
    "source": CorpusPath("root", "the UPMC Food-101 tree (see docs/data-formats.md)", directory=True),
    "layout": "UPMC Food-101",
}
MVSA_DEFAULTS = {
    "paper_dataset": "MVSA",
    "strongest": "text",
    "source": CorpusPath(
        "root", "an MVSA-Single or MVSA-Multiple folder (see docs/data-formats.md)", directory=True
    ),
    "layout": "MVSA",
}
# CREMA-D's fixed train/test clip list (OGM-GE's split), instead of speaker-group folds
SPLIT_FILE = CorpusPath("split_file", "the CSV of clip, split", optional=True)

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
        manifest_fixed={"split_file": None},  # the generated clips have no official split
    ),
    "cremad": CorpusKind(
        "cremad",
        CREMAD_MODALITIES,
        CREMAD_CLASSES,
        "mlaflow.data.cremad:manifest_for",
        **CREMAD_DEFAULTS,
        extra_inputs=(SPLIT_FILE,),
    ),
    "embedded_ks": CorpusKind(
        "embedded_ks",
        CREMAD_MODALITIES,
        None,
        "mlaflow.data.kinetics:manifest_for",
        "mlaflow.data.synthetic_ks",
        "embedded_ks",
        **KINETICS_DEFAULTS,
        classes_from="mlaflow.data.kinetics:embedded_classes",
    ),
    "kinetics": CorpusKind(
        "kinetics",
        CREMAD_MODALITIES,
        None,
        "mlaflow.data.kinetics:manifest_for",
        **KINETICS_DEFAULTS,
        classes_from="mlaflow.data.kinetics:configured_classes",
    ),
    "embedded_food101": CorpusKind(
        "embedded_food101",
        IMAGE_TEXT_MODALITIES,
        None,
        "mlaflow.data.food101:manifest_for",
        "mlaflow.data.synthetic_food101",
        "embedded_food101",
        **FOOD101_DEFAULTS,
        classes_from="mlaflow.data.food101:embedded_classes",
    ),
    "food101": CorpusKind(
        "food101",
        IMAGE_TEXT_MODALITIES,
        None,
        "mlaflow.data.food101:manifest_for",
        **FOOD101_DEFAULTS,
        classes_from="mlaflow.data.food101:configured_classes",
    ),
    "embedded_mvsa": CorpusKind(
        "embedded_mvsa",
        IMAGE_TEXT_MODALITIES,
        {"3class": MVSA_CLASSES},
        "mlaflow.data.mvsa:manifest_for",
        "mlaflow.data.synthetic_mvsa",
        "embedded_mvsa",
        **MVSA_DEFAULTS,
    ),
    "mvsa": CorpusKind(
        "mvsa",
        IMAGE_TEXT_MODALITIES,
        {"3class": MVSA_CLASSES},
        "mlaflow.data.mvsa:manifest_for",
        **MVSA_DEFAULTS,
    ),
    "features": CorpusKind(
        "features",
        None,
        None,
        "mlaflow.data.table:manifest_for",
        extracted=False,
        source=CorpusPath("table", "a CSV of id, label (and split or fold; see README)"),
        manifest_keys=("table",),
    ),
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
    if kind.classes_from is not None:
        module, function = kind.classes_from.split(":")
        return list(getattr(importlib.import_module(module), function)(config))
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


FACES_DIR = "data/corpus/faces"  # the `faces` rule's output: face frames cut from the dialog videos


def cuts_faces(config: dict) -> bool:
    """Whether the workflow cuts the face frames from the corpus's dialog videos (the `faces` rule)."""
    return corpus_kind(config).video_faces and config["corpus"]["face_frames"] == "from_video"


def manifest_config(config: dict) -> dict:
    """What the manifest job builds the manifest from (its config file): the kind's adapter and classes, and
    the corpus settings of its `manifest_keys` (those it fixes, `manifest_fixed`, at their fixed value)."""
    kind, corpus = corpus_kind(config), config["corpus"]
    out = {"kind": kind.name, "adapter": kind.adapter, "classes": classes(config)}
    out.update({key: kind.manifest_fixed.get(key, corpus[key]) for key in kind.manifest_keys})
    if cuts_faces(config):
        out["faces_root"] = FACES_DIR
    return out


def manifest_source(config: dict) -> str:
    """What the manifest is read from: the corpus tree (corpus.root), or the label table of kind features."""
    return config["corpus"][corpus_kind(config).source.key]


def manifest_inputs(config: dict) -> list[str]:
    """The other files the manifest job reads (CREMA-D's split file, where set; the faces cut from the videos)."""
    corpus = config["corpus"]
    faces = [FACES_DIR] if cuts_faces(config) else []
    return [corpus[path.key] for path in corpus_kind(config).extra_inputs if corpus[path.key]] + faces


def label_table(config: dict) -> str | None:
    """The label table the manifest is read from (kind features), or None for a corpus tree."""
    kind = corpus_kind(config)
    return None if kind.source.directory else config["corpus"][kind.source.key]


def input_paths(config: dict) -> list[tuple[CorpusPath, str]]:
    """Each path of the config that the manifest job reads and that must exist before any job starts, with its
    value: the source (unless the kind generates it) and every extra input that is set."""
    kind, corpus = corpus_kind(config), config["corpus"]
    paths = [] if kind.generator_module else [kind.source]
    paths += [path for path in kind.extra_inputs if corpus[path.key] is not None or not path.optional]
    return [(path, corpus[path.key]) for path in paths]
