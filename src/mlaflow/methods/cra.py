"""CRA: the cascaded residual autoencoder imputation baseline (Tran et al., CVPR 2017) of the missing-modality
experiment (paper Table 2), as GCNet's baseline code adapts it to utterance-level features
(`zeroQiaoba/GCNet`, baseline-mmin/models/mmin_CRA_model.py with networks/autoencoder.py's `ResidualAE`).
Shared parts in imputation.py (`FeatureReconstruction`, `ResidualAE`).

As AE (ae.py), with the autoencoder replaced by a cascaded residual autoencoder of `n_blocks` (2) blocks of
layers [256, 128]: x_in = h, x_out = 0; per block x_in += x_out, x_out = decoder(encoder(x_in)); the
reconstruction is the reference's transition layer (Linear-ReLU-Linear, 384 -> 384) applied to x_in + x_out.
loss = CE + reconstruction_weight (0.8) * MSE of the decoded features on the missing modalities only.

Choice where mlaflow differs from the reference: as in AE, the missing cells' true features are not read;
the MSE runs over observed cells dropped on purpose during training (`drop_rate`, see ae.py and
imputation.py). Other simplifications: see imputation.py.
"""

from __future__ import annotations

from typing import ClassVar

from mlaflow.methods.imputation import FeatureReconstruction, ResidualAE
from mlaflow.methods.space import LogRange, Range

CRA_LAYERS = [256, 128]


class CRA(FeatureReconstruction):
    name = "cra"
    search_space: ClassVar[dict] = {
        "drop_rate": Range(0.1, 0.5),
        "reconstruction_weight": LogRange(0.05, 5.0),
    }

    def build_autoencoder(self, width, options, generators):
        return ResidualAE(width, CRA_LAYERS, options["n_blocks"], generators)
