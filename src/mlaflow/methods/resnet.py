"""ResNet-18 encoders trained end to end, for R stacked runs: the paper's Table 1 setting for audio and video
(section 4.1, A.3.1), after the released code's `AVClassifier` (Cecile-hi/Multimodal-Learning-with-Alternating-
Unimodal-Adaptation, models/basic_model.py, models/backbone.py; OGM-GE's, GeWu-Lab/OGM-GE_CVPR2022, is the same).

`train.encoder: resnet18` puts one of these in place of each modality's MLP (`mlaflow.methods.base`), so every
method that builds on the shared encoders (`Method.end_to_end`) trains its encoders with its own rule: MLA steps
modality m's ResNet only in m's alternating steps, OGM-GE modulates the gradients of the convolution kernels, the
joint fusions train them on the fused loss.

Inputs: the prepared inputs of the feature stores (`features.audio.encoder: fbank_spectrogram`,
`features.visual.encoder: frames`), one flat vector per clip, reshaped to the store's `input_shape`:
- audio [1, T, F]: a one-channel log-mel "image" (the reference: 1024 frames x 128 bands, not normalised);
- visual [T, 3, H, W]: T frames in [0, 1]; each frame is normalised with ImageNet's mean and std (as the
  reference's transforms), encoded on its own, and the T frame features averaged: the reference's 3-D average
  pool over (time, height, width) of the last feature map, which is this mean, as every frame has the same size.

Architecture: torchvision's ResNet-18 (BasicBlock, [2, 2, 2, 2], its initialisation: Kaiming normal convolution
kernels, unit batch-norm scales), its classifier removed, the first convolution taking the input's channels (one for
audio). `train.resnet_width` is the width of its first stage (64: torchvision's resnet18 exactly, a 512-d output);
the embedded look-alikes use a narrower one (the report says which). The output is 8 x width wide and is the
method's embedding (train.hidden_dim is not used).

Training-time augmentation of frames (the reference's RandomResizedCrop(224) + RandomHorizontalFlip; test time:
the stored, resized frame): per frame, a crop of area U(0.08, 1) of the frame and aspect ratio log-uniform in
[3/4, 4/3] (ten draws; the first that fits; the whole frame if none does, where torchvision takes a central crop),
resized back to the frame's size (bilinear), flipped with probability 1/2: one `affine_grid` + `grid_sample` for
the whole batch. The crop is taken from the stored frame (already resized to the training size), not from the
original video frame. Audio is not augmented (as the reference).

Stacked runs: each run has its own weights and batch-norm statistics, every tensor stacked on a leading run axis
(so the shared optimiser, the best-epoch restore and the runs' independence work as for every other layer); the
network runs once per run (`torch.func.functional_call` with that run's slices): a ResNet's batch fills a device
by itself. Each run's initialisation and augmentation draw from the run's own generator, and only the rows the
method passes (`rows`: present and not padding) enter the network, so its batch statistics never see a padded
or masked row, and a run gives the same numbers stacked or alone. On CUDA the trunks run under bfloat16 autocast
(`train.amp`, the GPU's tensor cores); on CPU everything is float32. A run's batch of one clip uses the running
batch-norm statistics (batch statistics of one clip are undefined where a feature map is 1 x 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torchvision.models.resnet import BasicBlock, ResNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_SCALE = (0.08, 1.0)  # torchvision's RandomResizedCrop defaults
CROP_RATIO = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10


def resnet18_trunk(in_channels: int, width: int) -> ResNet:
    """torchvision's ResNet-18 with `in_channels` input channels and first-stage width `width` (stages width,
    2x, 4x, 8x), its classifier an identity: images [n, in_channels, H, W] -> [n, 8 * width]."""
    model = ResNet(BasicBlock, [2, 2, 2, 2])
    if in_channels != 3 or width != 64:
        model.inplanes = width
        model.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        model.bn1 = nn.BatchNorm2d(width)
        model.layer1 = model._make_layer(BasicBlock, width, 2)
        model.layer2 = model._make_layer(BasicBlock, 2 * width, 2, stride=2)
        model.layer3 = model._make_layer(BasicBlock, 4 * width, 2, stride=2)
        model.layer4 = model._make_layer(BasicBlock, 8 * width, 2, stride=2)
        for module in model.modules():  # torchvision's initialisation of the replaced layers
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
    model.fc = nn.Identity()
    return model


def random_resized_crop_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random crop of each image [n, C, H, W], resized back to H x W, flipped horizontally half of the time
    (see the module docstring); every random number from `generator`, a fixed count per image."""
    n = images.shape[0]
    area = torch.empty(n, CROP_ATTEMPTS).uniform_(*CROP_SCALE, generator=generator)
    log_ratio = torch.empty(n, CROP_ATTEMPTS).uniform_(*map(math.log, CROP_RATIO), generator=generator)
    width = torch.sqrt(area * log_ratio.exp())  # fractions of the image's width and height
    height = torch.sqrt(area / log_ratio.exp())
    fits = (width <= 1) & (height <= 1)
    first = fits.float().argmax(dim=1, keepdim=True)
    width = torch.where(fits.any(dim=1), width.gather(1, first).squeeze(1), torch.ones(n))
    height = torch.where(fits.any(dim=1), height.gather(1, first).squeeze(1), torch.ones(n))
    position = torch.rand(n, 2, generator=generator)  # where the crop sits in the room left
    flip = torch.rand(n, generator=generator) < 0.5
    centre_x = -1 + width + position[:, 0] * 2 * (1 - width)  # normalised coordinates in [-1, 1]
    centre_y = -1 + height + position[:, 1] * 2 * (1 - height)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.where(flip, -width, width)
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = height
    theta[:, 1, 2] = centre_y
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _key(name: str) -> str:
    return name.replace(".", "__")


class StackedResNetEncoder(nn.Module):
    """R ResNet-18 trunks (one per run) over prepared inputs: x [R, B, prod(input_shape)] -> [R, B, 8 * width].

    input_shape: [C, H, W] (an image per clip: audio's spectrogram) or [T, C, H, W] (T frames per clip,
    averaged after the trunk). Rows not in `rows` [R, B] are not computed; their output is 0."""

    uses_rows = True

    def __init__(
        self, input_shape: tuple[int, ...], width: int, generators: list[torch.Generator], amp: bool = True
    ):
        super().__init__()
        self.amp = amp  # bfloat16 autocast of the trunks on CUDA (train.amp); a CPU run is float32 throughout
        if len(input_shape) not in (3, 4):
            raise ValueError(f"input_shape must be [C, H, W] or [T, C, H, W], not {list(input_shape)}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.frames = len(input_shape) == 4
        channels = self.input_shape[-3]
        self.output_dim = 8 * width
        self.generators = generators
        runs = []
        for g in generators:  # each run's initialisation from its own generator
            seed = int(torch.randint(0, 2**62, (1,), generator=g))
            with torch.random.fork_rng(devices=[]):  # the CPU generator only (the layers are built there)
                torch.default_generator.manual_seed(seed)
                runs.append(resnet18_trunk(channels, width))
        with torch.device("meta"):  # the architecture only: its tensors are the runs' slices at every call
            template = resnet18_trunk(channels, width)
        object.__setattr__(self, "_template", template)  # not a submodule: no parameters of its own
        self._parameter_names = [name for name, _ in template.named_parameters()]
        self._buffer_names = [name for name, _ in template.named_buffers()]
        for name in self._parameter_names:
            stacked = torch.stack([run.get_parameter(name).detach() for run in runs])
            self.register_parameter(_key(name), nn.Parameter(stacked))
        for name in self._buffer_names:
            self.register_buffer(_key(name), torch.stack([run.get_buffer(name) for run in runs]))
        if self.frames and channels == 3:
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        else:
            self.mean = self.std = None

    def modulated_parameters(self) -> list[nn.Parameter]:
        """What OGM-GE modulates: the convolution kernels (the reference modulates the encoders' 4-D gradients)."""
        return [getattr(self, _key(n)) for n in self._parameter_names if getattr(self, _key(n)).dim() == 5]

    def run_states(self) -> list[dict[str, torch.Tensor]]:
        """Each run's tensors under the trunk's own names: views of the stacked tensors (unbound once, so that the
        backward pass adds each run's gradient into one stacked gradient; batch-norm statistics update in place)."""
        names = self._parameter_names + self._buffer_names
        slices = {name: getattr(self, _key(name)).unbind(0) for name in names}
        return [{name: slices[name][r] for name in names} for r in range(len(self.generators))]

    def forward(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        R, B = x.shape[:2]
        states = self.run_states()
        out = []
        for r in range(R):
            idx = torch.arange(B, device=x.device) if rows is None else rows[r].nonzero().squeeze(1)
            if len(idx) == 0:
                out.append(x.new_zeros(B, self.output_dim))
                continue
            # a batch of one clip has no batch statistics where a feature map shrinks to 1 x 1: it takes the
            # running statistics (and leaves them as they are), whatever the sizes, so that the rule is one
            self._template.train(self.training and len(idx) > 1)
            clips = x[r, idx].view(len(idx), *self.input_shape)
            images = clips.flatten(0, 1) if self.frames else clips  # frames: one image per frame
            if self.mean is not None:
                images = (images - self.mean) / self.std
            if self.training and self.frames:
                images = random_resized_crop_flip(images, self.generators[r])
            # on CUDA the convolutions run in bfloat16 on the tensor cores (weights, gradients and the head stay
            # float32); bfloat16 has float32's range, so no loss scaling is needed
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp and images.is_cuda):
                features = functional_call(self._template, states[r], (images,))
            features = features.float()
            if self.frames:  # the 3-D average pool: the mean of the frames' pooled features
                features = features.view(len(idx), self.input_shape[0], -1).mean(dim=1)
            out.append(x.new_zeros(B, self.output_dim).index_copy(0, idx, features))
        return torch.stack(out)
