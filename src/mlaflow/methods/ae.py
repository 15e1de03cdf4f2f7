"""AE: the autoencoder imputation baseline of the missing-modality experiment (paper Table 2), as GCNet's
baseline code adapts it to utterance-level features (`zeroQiaoba/GCNet`, baseline-mmin/models/mmin_AE_model.py
with networks/autoencoder.py's `SimpleFcAE`). Shared parts in imputation.py (`FeatureReconstruction`).

Zero-filled inputs -> per-modality encoders (`ModalityEncoder`, width train.hidden_dim) -> concatenation
(3 * 128 = 384) -> autoencoder [256, 128] (Linear+LeakyReLU down, LeakyReLU up, ReLU on the output) ->
reconstructed 384 -> linear classifier on the reconstruction; one decoder per modality maps the
reconstruction to that modality's features. loss = CE + reconstruction_weight (0.2, GCNet's) * MSE of the
decoded features on the MISSING modalities only.

Choice where mlaflow differs from the reference: the reference's MSE target of a missing cell is its true
features, which mlaflow never reads. Instead, during training each sample with at least two modalities
present has, with probability `drop_rate`, one present modality zero-filled as if missing (an artificial
dropout of observed modalities); the MSE runs over these dropped-but-observed cells, whose features are
known, and over nothing else (neither the kept cells nor the truly missing ones). The classifier is trained on
the same dropped inputs. At evaluation nothing is dropped. Other simplifications: see imputation.py
(linear classifier, one hidden layer per decoder, errors averaged over the dropped cells, no gradient clipping).
"""

from __future__ import annotations

from typing import ClassVar

from mlaflow.methods.imputation import FeatureReconstruction, SimpleAE
from mlaflow.methods.space import LogRange, Range

AE_LAYERS = [256, 128]


class AE(FeatureReconstruction):
    name = "ae"
    search_space: ClassVar[dict] = {
        "drop_rate": Range(0.1, 0.5),
        "reconstruction_weight": LogRange(0.02, 2.0),
    }

    def build_autoencoder(self, width, options, generators):
        return SimpleAE(width, AE_LAYERS, generators)
