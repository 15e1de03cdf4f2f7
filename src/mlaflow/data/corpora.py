"""The corpus registry: what each `corpus.kind` supplies to the rest of the workflow.

A kind names its modalities (the order of every mask's columns and of every method's encoders), its classes
per label setup (the order of `label_index`), the module that builds its manifest, the module that generates
it (the embedded corpus only), and the paper's dataset it stands for (whose figures the report shows beside
its tables, or None).
"""
from __future__ import annotations

from dataclasses import dataclass

from mlaflow.data.iemocap import CLASS_NAMES as IEMOCAP_CLASSES
from mlaflow.errors import ParamsError


@dataclass(frozen=True)
class CorpusKind:
    name: str
    modalities: tuple[str, ...]
    classes: dict[str, list[str]]          # label setup -> class names in label_index order
    manifest_module: str                    # has build_manifest(root, label_setup) -> (manifest, counts)
    generator_module: str | None            # has generate_corpus(out, cfg, threads) (generated corpora)
    paper_dataset: str | None               # the paper's dataset it stands for (paper_results.yaml)


CORPORA = {
    "embedded": CorpusKind("embedded", ("audio", "visual", "text"), IEMOCAP_CLASSES, "mlaflow.data.iemocap",
                           "mlaflow.data.synthetic", "IEMOCAP"),
    "iemocap": CorpusKind("iemocap", ("audio", "visual", "text"), IEMOCAP_CLASSES, "mlaflow.data.iemocap",
                          None, "IEMOCAP"),
}


def corpus_kind(config: dict) -> CorpusKind:
    kind = config["corpus"]["kind"]
    if kind not in CORPORA:
        raise ParamsError("corpus.kind", f"unknown corpus kind {kind!r}", f"use one of {sorted(CORPORA)}")
    return CORPORA[kind]


def modalities(config: dict) -> list[str]:
    return list(corpus_kind(config).modalities)


def classes(config: dict) -> list[str]:
    kind, setup = corpus_kind(config), config["corpus"]["label_setup"]
    if setup not in kind.classes:
        raise ParamsError("corpus.label_setup", f"{setup!r} is not a label setup of corpus kind {kind.name!r}",
                          f"use one of {sorted(kind.classes)}")
    return list(kind.classes[setup])
