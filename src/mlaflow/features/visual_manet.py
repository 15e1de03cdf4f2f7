"""Visual encoder: a MANet-style face encoder, averaged over the face frames of each utterance.

After MA-Net (Zhao, Liu & Wang 2021, "Learning deep global multi-scale and local attention features for
facial expression recognition in the wild", IEEE TIP), which the MLA paper uses for IEMOCAP's visual
features. Layout (channels / spatial size for a 224 px face; 64 px gives 8x8 after the shared layers):

    face -> ResNet-18 conv1, bn, relu, maxpool, layer1, layer2  (shared, 128 ch, 28x28)
         |-> global branch: multi-scale module -> ResNet-18 layer3, layer4 -> global average pool -> 512
         |-> local branch: the 28x28 map split into 2x2 non-overlapping patches; each patch has its own
         |   conv block (128 -> 256, stride 2) and (256 -> 512) whose residual branches end in an attention
         |   unit (CBAM: channel attention, then spatial attention) -> global average pool; the four
         |   attention-weighted 512-d patch vectors are averaged -> 512
         -> concatenation [global, local] = 1024-d (features.visual.dim)

Multi-scale module: three parallel 3x3 convolutions with dilations 1, 2, 3 (receptive fields 3, 5, 7) on
the shared feature map, concatenated, fused by a 1x1 convolution and added back to the input (residual).

What is simplified with respect to the published MA-Net (checked against its description and public
reference implementation):
  * MA-Net builds multi-scale *residual blocks* (Res2Net-like hierarchical splits of the channels) inside
    stages 3 and 4 of the global branch; here one multi-scale module with parallel dilated convolutions
    sits in front of the unchanged torchvision ResNet-18 stages 3 and 4.
  * MA-Net's patch branches are full ResNet stages 3 and 4 with two attention blocks each; here each patch
    branch has one attention block per stage (about half the parameters, same receptive field growth).
  * MA-Net trains two classifiers (one per branch) on face data; this is a feature extractor without
    classifier heads, and the *embedded* model is randomly initialised (torchvision `weights=None`), so its
    features are random (but deterministic) projections, not learned expression features. Pretrained
    weights in this layout can be loaded from any directory saved with `save_pretrained`.

The module uses `huggingface_hub.PyTorchModelHubMixin`, so `save_pretrained(dir)` writes config.json and
model.safetensors and `from_pretrained(dir)` loads them, like the transformers encoders.

The encoder (`MANetVisualEncoder`) follows the protocol of `mlaflow.features.protocol`; it is registered as
`features.visual.encoder: manet`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from mlaflow.data.manifest import no_face
from mlaflow.features.frames_io import frame_count, load_frames
from mlaflow.features.protocol import (
    EncodedBatch,
    read_encoder_info,
    require_model_dir,
    seeded_init,
    to_device,
    write_encoder_info,
)
from mlaflow.io import atomic_path

ARCHITECTURE = "manet"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BRANCH_DIM = 512  # ResNet-18's last stage width; the output is two branches wide
FRAMES_PER_FORWARD = 256  # bounds activation memory when utterances have many frames (real IEMOCAP videos)


class ChannelAttention(nn.Module):
    """CBAM channel attention: a shared MLP on the average- and max-pooled channel descriptors."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        peak = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return x * torch.sigmoid(avg + peak)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: a 7x7 convolution over the channel-wise mean and max maps."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        descriptor = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(descriptor))


class AttentionUnit(nn.Sequential):
    """Channel then spatial attention (CBAM), as MA-Net's local branch uses."""

    def __init__(self, channels: int, reduction: int):
        super().__init__(ChannelAttention(channels, reduction), SpatialAttention())


class AttentiveBasicBlock(nn.Module):
    """A ResNet basic block whose residual branch ends in an attention unit (before the skip addition)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, reduction: int):
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            AttentionUnit(out_channels, reduction),
        )
        self.skip = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.residual(x) + self.skip(x))


class MultiScaleModule(nn.Module):
    """Parallel 3x3 convolutions with different dilations (receptive fields), fused by a 1x1 conv, residual."""

    def __init__(self, channels: int, dilations: tuple[int, ...]):
        super().__init__()
        self.paths = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=d, dilation=d, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            )
            for d in dilations
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(channels * len(dilations), channels, 1, bias=False), nn.BatchNorm2d(channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.fuse(torch.cat([path(x) for path in self.paths], dim=1)))


class MANetStyleEncoder(nn.Module, PyTorchModelHubMixin):
    """Face image(s) [F, 3, H, W] (ImageNet-normalised) -> [F, 1024] = [global multi-scale, local attention]."""

    def __init__(self, dilations: tuple[int, ...] | list[int] = (1, 2, 3), attention_reduction: int = 16):
        super().__init__()
        trunk = torchvision.models.resnet18(weights=None)  # random init; no download
        self.shared = nn.Sequential(
            trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool, trunk.layer1, trunk.layer2
        )
        mid_channels = 128  # ResNet-18 layer2 width
        self.global_branch = nn.Sequential(
            MultiScaleModule(mid_channels, tuple(dilations)), trunk.layer3, trunk.layer4
        )
        self.patch_branches = nn.ModuleList(
            nn.Sequential(
                AttentiveBasicBlock(mid_channels, 256, stride=2, reduction=attention_reduction),
                AttentiveBasicBlock(256, BRANCH_DIM, stride=1, reduction=attention_reduction),
            )
            for _ in range(4)
        )
        for module in [*self.global_branch[0].modules(), *self.patch_branches.modules()]:
            if isinstance(module, nn.Conv2d):  # same initialisation as torchvision's ResNet
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        self.output_dim = 2 * BRANCH_DIM

    @staticmethod
    def split_into_patches(feature_map: torch.Tensor) -> list[torch.Tensor]:
        """Top-left, top-right, bottom-left, bottom-right quarters of [F, C, H, W] (odd sizes: larger lower/right)."""
        height, width = feature_map.shape[-2:]
        top, left = height // 2, width // 2
        return [
            feature_map[..., :top, :left],
            feature_map[..., :top, left:],
            feature_map[..., top:, :left],
            feature_map[..., top:, left:],
        ]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        shared = self.shared(images)
        global_vector = self.global_branch(shared).mean(dim=(2, 3))
        patch_vectors = [
            branch(patch).mean(dim=(2, 3))
            for branch, patch in zip(self.patch_branches, self.split_into_patches(shared))
        ]
        local_vector = torch.stack(patch_vectors).mean(dim=0)
        return torch.cat([global_vector, local_vector], dim=1)


def build_embedded(out_dir: str | Path, cfg: dict, seed: int) -> Path:
    """Build the randomly initialised MANet-style encoder and save it to out_dir (deterministic per seed)."""
    with seeded_init(seed):
        model = MANetStyleEncoder()
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        write_encoder_info(
            tmp,
            architecture=ARCHITECTURE,
            seed=seed,
            details={"trunk": "resnet18", "dilations": [1, 2, 3], "attention_reduction": 16},
        )
    return out_dir


class MANetVisualEncoder:
    """Encodes utterances' face frames (frames_dir/000.png ...) with a MANet-style directory into [B, 1024]."""

    modality = "visual"
    length_unit = "frames"
    dim_source = "the MANet-style encoder (two 512-d branches)"

    def __init__(self, model: MANetStyleEncoder, cfg: dict, device: torch.device, info: dict[str, Any]):
        self.model = model.eval().to(device)
        self.device = device
        self.image_size = int(cfg["image_size"])
        self.pretrained = bool(info["pretrained"])
        self.architecture = ARCHITECTURE
        self.output_dim = model.output_dim
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255.0

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, cfg: dict, device: torch.device) -> MANetVisualEncoder:
        model_dir = require_model_dir(model_dir, "visual", weights_file="model.safetensors")
        # strict: a directory of another architecture must fail, not load half of its weights
        model = MANetStyleEncoder.from_pretrained(model_dir, strict=True, local_files_only=True)
        return cls(model, cfg, device, read_encoder_info(model_dir))

    def item_length(self, row: dict) -> int:
        return frame_count(row)

    def load_item(self, row: dict) -> np.ndarray:
        """The utterance's frames as uint8 [n_frames, size, size, 3] (RGB, resized); none for an utterance whose
        face directory is empty (no face found, mlaflow.data.faces: its visual modality is masked as missing, its
        stored feature is zeros)."""
        if no_face(row):
            return np.zeros((0, self.image_size, self.image_size, 3), np.uint8)
        return load_frames(row, self.image_size)

    def encode(self, utterances: list[np.ndarray]) -> EncodedBatch:
        """All frames of all utterances in one forward pass, then the mean over each utterance's frames.

        (Batches of more than FRAMES_PER_FORWARD frames go through the network in slices of that many.)
        """
        counts = torch.tensor([len(frames) for frames in utterances])
        pixels = to_device(torch.from_numpy(np.concatenate(utterances)), self.device)  # [F, H, W, 3] uint8
        # [F, D]
        frame_features = torch.cat(
            [
                self._encode_frames(pixels[start : start + FRAMES_PER_FORWARD])
                for start in range(0, len(pixels), FRAMES_PER_FORWARD)
            ]
            or [torch.zeros(0, self.output_dim, device=self.device)]
        )
        owner = torch.repeat_interleave(torch.arange(len(utterances)), counts).to(self.device)
        sums = torch.zeros(len(utterances), frame_features.shape[1], device=self.device)
        sums.index_add_(0, owner, frame_features)
        # an utterance without frames (no face found) keeps a zero vector
        pooled = sums / counts.clamp(min=1).to(self.device, torch.float32).unsqueeze(1)
        return EncodedBatch(features=pooled, real_units=int(counts.sum()), padded_units=int(counts.sum()))

    def _encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        images = (pixels.permute(0, 3, 1, 2).float() - self.mean) / self.std  # ImageNet normalisation
        return self.model(images).float()
