"""What an encoder is, the helpers every encoder shares, and the registry of encoders by name.

This module is the bottom of `mlaflow.features`: the encoder modules (text_bert, audio_wav2vec,
visual_manet, audio_fbank, image_vit, clip) import from here, the extraction driver (`extract`) imports from here, and this
module imports none of them. So there is no import circle, and importing it is cheap (no transformers).

Encoder protocol (`Encoder` below). One encoder module per architecture provides
  * a module-level `build_embedded(out_dir, cfg, seed) -> Path`: write a randomly initialised (NOT
    pretrained) model directory for `cfg` (= params `features.<modality>`), deterministic per seed, that
    `from_pretrained` loads like a user's pretrained directory;
  * an encoder class with
      - class method `from_pretrained(model_dir, cfg, device)`: load a model directory (embedded or
        pretrained); a directory that is missing or of another architecture is a ParamsError naming
        `features.<modality>.model` (`require_model_dir` does the common checks);
      - attributes `modality` (the kind of input it reads: audio = `wav_path`, visual = `frames_dir` +
        `n_frames`, text = `transcript`, image = `image_path` (INPUT_COLUMNS); a class attribute, checked
        before any model is loaded),
        `architecture` (stored in the features' attributes), `pretrained`, `output_dim`, `dim_source`
        (what sets output_dim, for error messages) and `length_unit` (samples / tokens / frames); an encoder
        that stores prepared inputs rather than features (fbank_spectrogram, frames: the inputs of
        `train.encoder: resnet18`) also has `input_shape`, which the store's attributes keep;
      - `item_length(row) -> int`: cheap (headers, no decoding), used to sort utterances by length so
        that a batch holds little padding;
      - `load_item(row)`: read the utterance's input files (called in a background thread); every
        problem with a file is an InputError naming it, so the driver can skip the utterance and go on;
      - `encode(items) -> EncodedBatch`: one pooled vector per item (called under torch.inference_mode()
        and, on CUDA with features.half_precision, fp16 autocast).
    A row is a dict of one manifest row.

Registry. `features.<modality>.encoder` names the encoder of a workflow modality; `ENCODERS` maps each
name to "module:Class". The values are strings so that importing the registry imports no encoder
(transformers alone takes seconds), and so that a tool can compute a workflow rule's code dependencies
from the static import graph: `encoder_module(name)` gives the module a name pulls in at run time.
`encoder_for(modality, features_cfg)` reads the key, imports the class and checks that it reads the input
kind the modality needs (`INPUT_KINDS`; an encoder's `modality` attribute is that input kind).

Adding an encoder: write a module with `build_embedded` and a class as above that imports only from this
module (and from helpers such as `audio_io`, never from `extract` or another encoder), add its name to
`ENCODERS` and the options it reads to `ENCODER_OPTIONS`, and allow the name in params.schema.yaml's
`features.<modality>.encoder`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from mlaflow.errors import ParamsError
from mlaflow.io import write_json

if TYPE_CHECKING:  # torch is imported where it is used: the workflow's parse imports the registry, not torch
    import torch

ENCODER_INFO_FILE = "mlaflow_encoder.json"

# Encoder name (the value of features.<modality>.encoder) -> "module:Class", imported on demand.
ENCODERS = {
    "bert": "mlaflow.features.text_bert:BertTextEncoder",
    "wav2vec2": "mlaflow.features.audio_wav2vec:Wav2Vec2AudioEncoder",
    "manet": "mlaflow.features.visual_manet:MANetVisualEncoder",
    "fbank": "mlaflow.features.audio_fbank:FbankAudioEncoder",
    "fbank_spectrogram": "mlaflow.features.audio_fbank:FbankSpectrogramEncoder",
    "frames": "mlaflow.features.visual_frames:FramesVisualEncoder",
    "vit": "mlaflow.features.image_vit:ViTImageEncoder",
    "clip_image": "mlaflow.features.clip:ClipImageEncoder",
    "clip_text": "mlaflow.features.clip:ClipTextEncoder",
}

# The keys of features.<modality> each encoder reads besides those every extraction reads (ENCODER_COMMON): a
# modality's build and extraction jobs compute from exactly these (mlaflow.pipeline.jobconfigs), so an option of
# another encoder (fbank's n_mels under wav2vec2) is no part of its config and changing it reruns nothing.
ENCODER_COMMON = ("encoder", "model", "dim", "batch_size")
ENCODER_OPTIONS = {
    "bert": ("max_length", "pooling", "embedded"),
    "wav2vec2": ("layer", "max_seconds", "embedded"),
    "manet": ("image_size",),
    "fbank": ("max_seconds", "n_mels"),
    "fbank_spectrogram": ("max_seconds", "n_mels", "spectrogram_frames"),
    "frames": ("frames", "image_size"),
    "vit": ("image_size", "embedded"),
    "clip_image": ("image_size", "embedded"),
    "clip_text": ("max_length", "embedded"),
}

# Workflow modality -> the kind of input its encoder must read. Today they coincide; a modality with
# another name (say, a second audio stream) would map to the kind of input it holds. Visual input is an
# utterance's frames (a folder); image input is one picture (an image-text corpus: Food-101, MVSA).
INPUT_KINDS = {"audio": "audio", "visual": "visual", "text": "text", "image": "image"}
# the manifest columns each kind of input is read from (mlaflow.data.manifest.MANIFEST_COLUMNS)
INPUT_COLUMNS = {
    "audio": ("wav_path",),
    "visual": ("frames_dir", "n_frames"),
    "text": ("transcript",),
    "image": ("image_path",),
}


# ------------------------------------------------------------------------------------ the protocol


@dataclass
class EncodedBatch:
    """What an encoder returns for one batch: pooled features and how much of its input was padding."""

    features: torch.Tensor  # [B, D], any device, float32
    real_units: int  # samples / tokens / frames that belong to utterances
    padded_units: int  # the same, padding included (batch size x longest)


@runtime_checkable
class Encoder(Protocol):
    """An utterance-level feature encoder, as the extraction driver uses it (see the module docstring)."""

    modality: ClassVar[str]  # kind of input read: audio | visual | text
    architecture: str
    pretrained: bool
    output_dim: int
    dim_source: str
    length_unit: str

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, cfg: dict, device: torch.device) -> Encoder:
        """Load `model_dir` (embedded or pretrained); `cfg` is params `features.<modality>`."""
        ...

    def item_length(self, row: dict) -> int:
        """Length of the utterance in `length_unit`, cheaply (for sorting); raises InputError."""
        ...

    def load_item(self, row: dict) -> Any:
        """The utterance's input, read from its files; raises InputError naming a bad file."""
        ...

    def encode(self, items: list[Any]) -> EncodedBatch:
        """One pooled feature vector per item."""
        ...


# ------------------------------------------------------------------------------------ shared helpers


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a host tensor to `device`; on CUDA through pinned memory, without blocking the host."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for a model's initialisation without disturbing the caller's random state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def write_encoder_info(
    model_dir: str | Path, architecture: str, seed: int, details: dict | None = None
) -> None:
    """Mark a directory as an embedded (randomly initialised, not pretrained) encoder built by mlaflow."""
    write_json(
        Path(model_dir) / ENCODER_INFO_FILE,
        {"pretrained": False, "architecture": architecture, "seed": seed, "details": details or {}},
    )


def read_encoder_info(model_dir: str | Path) -> dict[str, Any]:
    """The directory's mlaflow_encoder.json; a directory without one is a user's pretrained model."""
    path = Path(model_dir) / ENCODER_INFO_FILE
    if not path.exists():
        return {"pretrained": True}
    return json.loads(path.read_text())


def require_model_dir(model_dir: str | Path, modality: str, weights_file: str | None = None) -> Path:
    """The model directory as a Path, or a ParamsError naming `features.<modality>.model` if it is unusable.

    Checking here keeps from_pretrained from ever treating a mistyped path as a model-hub name.
    """
    model_dir = Path(model_dir)
    key = f"features.{modality}.model"
    for required in ("config.json", weights_file):
        if required is not None and not (model_dir / required).is_file():
            what = "does not exist" if not model_dir.exists() else f"has no {required}"
            raise ParamsError(
                key,
                f"model directory {model_dir} {what}",
                "set it to `embedded`, or to a local directory written by save_pretrained",
            )
    return model_dir


# ------------------------------------------------------------------------------------ registry


def encoder_key(modality: str) -> str:
    """The params key that names the encoder of `modality`."""
    return f"features.{modality}.encoder"


def input_kind(modality: str) -> str:
    """The kind of input (audio | visual | text) the encoder of workflow modality `modality` must read."""
    if modality not in INPUT_KINDS:
        raise ParamsError(
            "modality", f"unknown modality `{modality}`", f"use one of {', '.join(INPUT_KINDS)}"
        )
    return INPUT_KINDS[modality]


def _target(name: str, modality: str | None) -> tuple[str, str]:
    if name not in ENCODERS:
        key = encoder_key(modality if modality is not None else "<modality>")
        raise ParamsError(key, f"unknown encoder `{name}`", f"use one of {', '.join(ENCODERS)}")
    module, _, class_name = ENCODERS[name].partition(":")
    return module, class_name


def encoder_module(name: str, modality: str | None = None) -> str:
    """The dotted name of the module that implements encoder `name` (what using it imports); nothing is imported.

    An unknown name is a ParamsError naming `features.<modality>.encoder`.
    """
    return _target(name, modality)[0]


def encoder_class(name: str, modality: str | None = None) -> type:
    """The class of encoder `name`, importing its module now (and only now)."""
    module, class_name = _target(name, modality)
    return getattr(importlib.import_module(module), class_name)


def encoder_name(modality: str, features_cfg: dict) -> str:
    """The encoder named by `features.<modality>.encoder` (params `features` = features_cfg); required."""
    input_kind(modality)
    name = features_cfg[modality].get("encoder")
    if name is None:  # no default here: params.yaml (and its schema) is the one place that chooses
        raise ParamsError(encoder_key(modality), "is not set", f"set it to one of {', '.join(ENCODERS)}")
    return str(name)


def encoder_for(modality: str, features_cfg: dict) -> type:
    """The encoder class that `features.<modality>.encoder` names, checked to read the modality's input kind."""
    name = encoder_name(modality, features_cfg)
    cls = encoder_class(name, modality)
    kind, reads = input_kind(modality), getattr(cls, "modality", None)
    if reads != kind:
        raise ParamsError(
            encoder_key(modality),
            f"encoder `{name}` reads {reads} input, but the {modality} "
            f"modality needs an encoder of {kind} input",
            f"choose an encoder of {kind} input (known encoders: {', '.join(ENCODERS)})",
        )
    return cls


def encoder_settings(settings: dict) -> dict:
    """The keys of a modality's `features.<modality>` settings that its encoder reads (ENCODER_COMMON and its
    ENCODER_OPTIONS), in their order."""
    own = ENCODER_OPTIONS[settings["encoder"]]
    return {key: value for key, value in settings.items() if key in ENCODER_COMMON or key in own}
