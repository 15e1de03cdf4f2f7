"""Text encoder: a BERT (transformers `BertModel`) whose last hidden layer is pooled into one vector per utterance.

Two kinds of model directory load through the same `from_pretrained(dir)` path:

* a pretrained BERT saved with `save_pretrained` (model + tokenizer), e.g. bert-large-uncased as in the MLA
  paper (1024-d), copied to a local directory;
* the *embedded* encoder built by `build_embedded`: a small randomly initialised (NOT pretrained) BERT with
  hidden size `features.text.dim`, so the workflow runs end to end without downloading weights. Its
  tokenizer is a real WordPiece tokenizer over a fixed vocabulary: special tokens, single characters and
  their `##` continuations (so any text tokenises without [UNK] except for exotic symbols), common suffixes,
  and ~1,200 frequent conversational English words. Same seed -> identical weights and vocabulary.

Pooling (`features.text.pooling`): `mean` averages the last hidden layer over the non-padding tokens
([CLS] and [SEP] included), `cls` takes the [CLS] position.

The encoder follows the protocol of `mlaflow.features.protocol`; it is registered as
`features.text.encoder: bert`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from mlaflow.errors import ParamsError
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

ARCHITECTURE = "bert"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def build_embedded(out_dir: str | Path, cfg: dict, seed: int) -> Path:
    """Build the randomly initialised embedded BERT for `cfg` (= params `features.text`) and save it to out_dir.

    Deterministic: the same cfg and seed give identical weights. The directory appears atomically.
    """
    from transformers import AutoTokenizer, BertConfig, BertModel

    embedded = cfg["embedded"]
    if cfg["dim"] % embedded["num_heads"]:
        raise ParamsError(
            "features.text.embedded.num_heads",
            f"{embedded['num_heads']} heads do not divide features.text.dim={cfg['dim']}",
            "choose a number of heads that divides the dimension",
        )
    vocabulary = embedded_vocabulary(SPECIAL_TOKENS)
    tokenizer = build_tokenizer(vocabulary)
    config = BertConfig(
        vocab_size=len(vocabulary),
        hidden_size=cfg["dim"],
        num_hidden_layers=embedded["num_layers"],
        num_attention_heads=embedded["num_heads"],
        intermediate_size=embedded["intermediate_size"],
        max_position_embeddings=max(512, cfg["max_length"]),
        pad_token_id=0,
    )
    with seeded_init(seed):
        model = BertModel(config, add_pooling_layer=False)  # pooling is ours (mean or CLS), not BERT's pooler
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        reloaded = AutoTokenizer.from_pretrained(tmp, local_files_only=True).get_vocab()
        if reloaded != {token: index for index, token in enumerate(vocabulary)}:
            raise RuntimeError("the saved tokenizer does not reload with the embedded vocabulary")
        write_encoder_info(
            tmp,
            architecture=ARCHITECTURE,
            seed=seed,
            details={"vocab_size": len(vocabulary), "hidden_size": cfg["dim"], **embedded},
        )
    return out_dir


class BertTextEncoder:
    """Encodes transcripts with a BERT directory (embedded or pretrained) into [B, D] pooled vectors."""

    modality = "text"
    length_unit = "tokens"
    dim_source = "the hidden_size of the model"

    def __init__(self, model, tokenizer, cfg: dict, device: torch.device, info: dict[str, Any]):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.device = device
        self.pooling = cfg["pooling"]
        self.max_length = cfg["max_length"]
        self.pretrained = bool(info["pretrained"])
        self.architecture = str(model.config.model_type)
        self.output_dim = int(model.config.hidden_size)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, cfg: dict, device: torch.device) -> BertTextEncoder:
        from transformers import AutoConfig, AutoModel, AutoTokenizer, BertModel

        model_dir = require_model_dir(model_dir, "text")
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
        if config.model_type == "bert":
            model = BertModel.from_pretrained(model_dir, add_pooling_layer=False, local_files_only=True)
        else:  # any other encoder with a last_hidden_state (RoBERTa, ...) works the same way
            model = AutoModel.from_pretrained(model_dir, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        largest_id = max(tokenizer.get_vocab().values())
        if largest_id >= config.vocab_size:
            raise ParamsError(
                "features.text.model",
                f"the tokenizer in {model_dir} has ids up to {largest_id} "
                f"but the model only {config.vocab_size} embeddings",
                "save the model and its own tokenizer to the same directory",
            )
        return cls(model, tokenizer, cfg, device, read_encoder_info(model_dir))

    @staticmethod
    def transcript(row: dict) -> str:
        """The transcript of a manifest row; a missing one (NaN, e.g. an empty CSV cell) counts as empty text."""
        text = row["transcript"]
        if text is None or (isinstance(text, float) and math.isnan(text)):
            return ""
        return str(text)

    def item_length(self, row: dict) -> int:
        """Number of tokens (truncated to max_length), so sorted batches hold almost no padding."""
        return len(
            self.tokenizer(self.transcript(row), truncation=True, max_length=self.max_length)["input_ids"]
        )

    def load_item(self, row: dict) -> str:
        return self.transcript(row)

    def encode(self, texts: list[str]) -> EncodedBatch:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        inputs = {
            name: to_device(tensor, self.device)
            for name, tensor in batch.items()
            if name in ("input_ids", "attention_mask", "token_type_ids")
        }
        hidden = self.model(**inputs).last_hidden_state.float()  # [B, T, D]; pool in fp32 even under autocast
        mask = inputs["attention_mask"]
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return EncodedBatch(features=pooled, real_units=int(mask.sum()), padded_units=int(mask.numel()))
