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
class Conversations:
    """Where each utterance sits in its conversation (the manifest's `dialog`, `turn` and `speaker`), for the
    methods that read the dialog (GCNet): per manifest row, its dialog's index, its 0-based turn, its speaker's
    index within its dialog (0, 1, ... in order of first appearance). `dialogs` [D, L]: the rows of each dialog in
    turn order, -1 past its end."""

    dialog: torch.Tensor  # [N] int64
    turn: torch.Tensor  # [N] int64
    speaker: torch.Tensor  # [N] int64
    dialogs: torch.Tensor  # [D, L] int64

    @property
    def n_speakers(self) -> int:
        """The most speakers any dialog has (the speaker relations of GCNet's graph)."""
        return int(self.speaker.max()) + 1

    @classmethod
    def from_manifest(cls, manifest: pd.DataFrame, path: str | Path) -> Conversations | None:
        """The manifest's conversations; None for a corpus without (no `dialog` column, or every cell empty).
        An utterance without a dialog or turn in a corpus that has them is an error naming it."""
        if "dialog" not in manifest.columns or manifest["dialog"].isna().all():
            return None
        turns = pd.to_numeric(manifest.get("turn"), errors="coerce") if "turn" in manifest else None
        bad = manifest["dialog"].isna() | (turns.isna() if turns is not None else True)
        if bad.any():
            raise InputError(
                path,
                f"{int(bad.sum())} utterance(s) without a dialog or turn (first: "
                f"{manifest['utterance_id'][bad].iloc[0]}), in a manifest that has conversations",
                "rebuild the manifest (every utterance of a conversational corpus has both)",
            )
        dialog = pd.factorize(manifest["dialog"])[0]
        turn = turns.to_numpy(dtype=np.int64)
        order = np.lexsort((turn, dialog))  # rows by dialog, then turn
        speaker = np.zeros(len(manifest), dtype=np.int64)
        by_turn = manifest.iloc[order]
        speaker[order] = by_turn.groupby("dialog", sort=False)["speaker"].transform(
            lambda names: pd.factorize(names.astype(str))[0]
        )
        lengths = np.bincount(dialog)
        dialogs = np.full((len(lengths), lengths.max()), -1, dtype=np.int64)
        position = np.arange(len(order)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        dialogs[dialog[order], position] = order
        return cls(*(torch.from_numpy(np.array(a)) for a in (dialog, turn, speaker, dialogs)))


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
    conversations: Conversations | None = None  # None: the corpus has no conversations

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
        ids,
        features,
        labels,
        list(classes),
        attrs,
        list(modalities),
        recorded(manifest, list(modalities)),
        Conversations.from_manifest(manifest, manifest_path),
    )
