"""CLIP's two towers as encoders: `clip_image` for pictures, `clip_text` for texts (the paper's Table 4, section 4.3.4
and A.4.3: CLIP ViT-B/32 as both the image and the text encoder on Food-101).

One CLIP directory (transformers `CLIPModel`, saved with `save_pretrained`) serves both: features.image.model and
features.text.model name the same directory, e.g. a local copy of openai/clip-vit-base-patch32 with its tokenizer
and image processor. Each encoder loads the whole model and uses its own tower and projection, so both modalities'
features live in CLIP's joint embedding space (`projection_dim` wide, 512 for ViT-B/32): the image feature is
`visual_projection(vision_model(pixels).pooler_output)`, the text feature `text_projection(text_model(ids)
.pooler_output)` (the end-of-text position), exactly what `CLIPModel.get_image_features` and
`get_text_features` return.

The *embedded* default (`build_embedded`, model: embedded) is a small randomly initialised (NOT pretrained)
CLIPModel: both towers `embedded.width` wide, `embedded.num_layers` deep, the vision tower over
`embedded.image_size` pictures in `embedded.patch_size` patches, projection `dim` wide; its tokenizer is the
embedded WordPiece tokenizer of mlaflow.features.wordpiece with CLIP's special tokens (`<|startoftext|>` text
`<|endoftext|>`, padded with `<|endoftext|>`), its image processor CLIP's mean and std. Both modalities' embedded
directories are built from the same settings and seed (mlaflow.pipeline.table1 gives them one `embedded`), so they
hold the same model.

A directory without a tokenizer is an error naming features.text.model (a CLIP text tower needs its own), and
texts longer than the model's positions (77 for OpenAI's CLIP) are truncated to features.text.max_length, which
must not exceed them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlaflow.errors import ParamsError
from mlaflow.features.image_io import load_image, pixel_batch, processor_statistics
from mlaflow.features.protocol import (
    EncodedBatch,
    read_encoder_info,
    require_model_dir,
    seeded_init,
    to_device,
    write_encoder_info,
)
from mlaflow.features.wordpiece import build_tokenizer, embedded_vocabulary
from mlaflow.io import atomic_path

ARCHITECTURE = "clip"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's image processor
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
END, START, UNKNOWN = "<|endoftext|>", "<|startoftext|>", "<|unk|>"
SPECIAL_TOKENS = (END, START, UNKNOWN)  # ids 0, 1, 2 in the embedded vocabulary
TEXT_POSITIONS = 77  # OpenAI CLIP's context length


def build_embedded(out_dir: str | Path, cfg: dict, seed: int) -> Path:
    """Build the randomly initialised embedded CLIP for `cfg` (params features.image or features.text, whose
    `embedded` settings and `dim` say the model) and save it, with tokenizer and image processor, to out_dir."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    embedded = cfg["embedded"]
    if embedded["width"] % embedded["num_heads"]:
        raise ParamsError(
            "features.<modality>.embedded.num_heads",
            f"{embedded['num_heads']} heads do not divide the embedded CLIP's width {embedded['width']}",
            "choose a number of heads that divides the width",
        )
    if embedded["image_size"] % embedded["patch_size"]:
        raise ParamsError(
            "features.<modality>.embedded.patch_size",
            f"{embedded['patch_size']} does not divide the embedded CLIP's image_size {embedded['image_size']}",
            "choose a patch size that divides the image size",
        )
    vocabulary = embedded_vocabulary(SPECIAL_TOKENS)
    tokenizer = build_tokenizer(
        vocabulary, unk=UNKNOWN, pad=END, cls=START, sep=END, mask=None, model_max_length=TEXT_POSITIONS
    )
    tower = {
        "hidden_size": embedded["width"],
        "num_hidden_layers": embedded["num_layers"],
        "num_attention_heads": embedded["num_heads"],
        "intermediate_size": 4 * embedded["width"],
    }
    config = CLIPConfig(
        text_config={
            **tower,
            "vocab_size": len(vocabulary),
            "max_position_embeddings": TEXT_POSITIONS,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 0,  # pooled at the first <|endoftext|> (padding follows it)
        },
        vision_config={**tower, "image_size": embedded["image_size"], "patch_size": embedded["patch_size"]},
        projection_dim=cfg["dim"],
    )
    processor = CLIPImageProcessor(
        size={"shortest_edge": embedded["image_size"]},
        crop_size={"height": embedded["image_size"], "width": embedded["image_size"]},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    with seeded_init(seed):
        model = CLIPModel(config)
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        if AutoTokenizer.from_pretrained(tmp, local_files_only=True).get_vocab() != {
            token: index for index, token in enumerate(vocabulary)
        }:
            raise RuntimeError("the saved tokenizer does not reload with the embedded vocabulary")
        write_encoder_info(
            tmp,
            architecture=ARCHITECTURE,
            seed=seed,
            details={"projection_dim": cfg["dim"], "vocab_size": len(vocabulary), **embedded},
        )
    return out_dir


def load_clip(model_dir: str | Path, modality: str):
    """The CLIPModel of a directory (checked: a CLIP), and the directory's encoder info."""
    from transformers import AutoConfig, CLIPModel

    model_dir = require_model_dir(model_dir, modality)
    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    if config.model_type != "clip":
        raise ParamsError(
            f"features.{modality}.model",
            f"{model_dir} holds a {config.model_type} model, not a CLIP",
            "point it at a CLIP directory saved with save_pretrained (e.g. openai/clip-vit-base-patch32)",
        )
    return CLIPModel.from_pretrained(model_dir, local_files_only=True), model_dir


class ClipImageEncoder:
    """Encodes pictures with CLIP's vision tower and projection into [B, projection_dim] vectors."""

    modality = "image"
    length_unit = "images"
    dim_source = "the projection_dim of the CLIP model"
    architecture = ARCHITECTURE

    def __init__(self, model, cfg: dict, device: torch.device, info: dict[str, Any], mean: tuple, std: tuple):
        self.model = model.eval().to(device)
        self.device = device
        self.image_size = int(cfg["image_size"])
        self.mean, self.std = mean, std
        self.pretrained = bool(info["pretrained"])
        self.output_dim = int(model.config.projection_dim)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, cfg: dict, device: torch.device) -> ClipImageEncoder:
        model, model_dir = load_clip(model_dir, "image")
        size = int(model.config.vision_config.image_size)
        if size != int(cfg["image_size"]):
            raise ParamsError(
                "features.image.image_size",
                f"is {cfg['image_size']} but the CLIP in {model_dir} takes {size} px pictures",
                f"set features.image.image_size: {size}",
            )
        mean, std = processor_statistics(model_dir, "features.image.model", CLIP_MEAN, CLIP_STD)
        return cls(model, cfg, device, read_encoder_info(model_dir), mean, std)

    def item_length(self, row: dict) -> int:
        return 1

    def load_item(self, row: dict) -> np.ndarray:
        return load_image(row, self.image_size)

    def encode(self, images: list[np.ndarray]) -> EncodedBatch:
        pixels = to_device(pixel_batch(images, self.mean, self.std), self.device)
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        features = self.model.visual_projection(pooled).float()
        return EncodedBatch(features=features, real_units=len(images), padded_units=len(images))


class ClipTextEncoder:
    """Encodes texts with CLIP's text tower (its own tokenizer) and projection into [B, projection_dim] vectors."""

    modality = "text"
    length_unit = "tokens"
    dim_source = "the projection_dim of the CLIP model"
    architecture = ARCHITECTURE

    def __init__(self, model, tokenizer, cfg: dict, device: torch.device, info: dict[str, Any]):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.device = device
        self.max_length = int(cfg["max_length"])
        self.pretrained = bool(info["pretrained"])
        self.output_dim = int(model.config.projection_dim)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, cfg: dict, device: torch.device) -> ClipTextEncoder:
        from transformers import AutoTokenizer

        model, model_dir = load_clip(model_dir, "text")
        if not any((model_dir / name).is_file() for name in ("tokenizer.json", "vocab.json")):
            raise ParamsError(
                "features.text.model",
                f"the CLIP directory {model_dir} has no tokenizer (tokenizer.json or vocab.json + merges.txt)",
                "save the model's own tokenizer there too (tokenizer.save_pretrained(dir))",
            )
        positions = int(model.config.text_config.max_position_embeddings)
        if int(cfg["max_length"]) > positions:
            raise ParamsError(
                "features.text.max_length",
                f"is {cfg['max_length']} but the CLIP in {model_dir} has {positions} text positions",
                f"set features.text.max_length: {positions} or less",
            )
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        return cls(model, tokenizer, cfg, device, read_encoder_info(model_dir))

    @staticmethod
    def text(row: dict) -> str:
        value = row["transcript"]
        return value if isinstance(value, str) else ""  # an empty cell reads as NaN

    def item_length(self, row: dict) -> int:
        return len(self.tokenizer(self.text(row), truncation=True, max_length=self.max_length)["input_ids"])

    def load_item(self, row: dict) -> str:
        return self.text(row)

    def encode(self, texts: list[str]) -> EncodedBatch:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        ids = to_device(batch["input_ids"], self.device)
        mask = to_device(batch["attention_mask"], self.device)
        pooled = self.model.text_model(input_ids=ids, attention_mask=mask).pooler_output
        features = self.model.text_projection(pooled).float()
        return EncodedBatch(features=features, real_units=int(mask.sum()), padded_units=int(mask.numel()))
