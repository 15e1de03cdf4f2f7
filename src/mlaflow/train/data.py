"""Training inputs held in memory as tensors: features of every modality aligned to the manifest, labels,
folds and masks. Everything is checked here once, so a bad input fails before any training starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mlaflow.data.masks import recorded
from mlaflow.errors import InputError
from mlaflow.features.store import read_store


@dataclass
class Corpus:
    """All utterances of the manifest, in manifest order."""

    utterance_ids: list[str]
    features: list[torch.Tensor]  # per modality, [N, d_m] float32
    labels: torch.Tensor  # [N] int64
    class_names: list[str]
    feature_attrs: dict[str, dict]  # per modality, the HDF5 store's attributes (encoder, pretrained, ...)
    modalities: list[str]  # names, in the order of `features` and of every mask's columns
    # [N, M] bool: False where the corpus never recorded the modality (no face found; data.masks.recorded)
    recorded: np.ndarray | None = None

    @property
    def input_dims(self) -> list[int]:
        return [x.shape[1] for x in self.features]

    @property
    def input_shapes(self) -> list[tuple[int, ...]]:
        """Per modality, the shape of one row: a store of prepared inputs (features.audio.encoder
        fbank_spectrogram, features.visual.encoder frames) says it (`input_shape`), a feature vector is [d]."""
        return [
            tuple(int(s) for s in self.feature_attrs.get(m, {}).get("input_shape") or (x.shape[1],))
            for m, x in zip(self.modalities, self.features)
        ]


def load_corpus(
    manifest_path: str | Path,
    feature_paths: dict[str, str | Path],
    classes: list[str],
    modalities: list[str],
    feature_dims: dict[str, int],
) -> Corpus:
    """The manifest's utterances with the features of every modality, in the order of `modalities` (the order
    of every mask's columns; never the key order of `feature_dims`, which a JSON config does not keep), checked
    against the stores; `classes` in label_index order (a training job's config holds all three)."""
    manifest = pd.read_csv(manifest_path, dtype={"utterance_id": str, "label": str})
    ids = manifest["utterance_id"].tolist()
    features, attrs = [], {}
    for modality in modalities:
        path, dim = feature_paths[modality], feature_dims[modality]
        table = read_store(path, modality=modality, expected_dim=dim)
        position = {utt: i for i, utt in enumerate(table.ids)}
        missing = [utt for utt in ids if utt not in position]
        if missing:
            raise InputError(
                path,
                f"{len(missing)} utterances of the manifest have no features "
                f"(first: {', '.join(missing[:3])})",
                "re-run extraction for this manifest, or regenerate the precomputed store with these ids",
            )
        rows = np.array([position[utt] for utt in ids])
        store_labels = np.asarray(table.labels)[rows]
        mismatch = np.flatnonzero(store_labels != manifest["label"].to_numpy())
        if len(mismatch):
            raise InputError(
                path,
                f"labels disagree with the manifest for {len(mismatch)} utterances "
                f"(first: {ids[mismatch[0]]}: store {store_labels[mismatch[0]]!r}, manifest "
                f"{manifest['label'].iloc[mismatch[0]]!r})",
                "extract features with the same corpus.label_setup as the manifest",
            )
        features.append(torch.from_numpy(np.ascontiguousarray(table.features[rows], dtype=np.float32)))
        attrs[modality] = dict(table.attrs)
    labels = torch.tensor(manifest["label_index"].to_numpy(dtype=np.int64))
    return Corpus(
        ids, features, labels, list(classes), attrs, list(modalities), recorded(manifest, list(modalities))
    )
