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
import string
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
from mlaflow.io import atomic_path

ARCHITECTURE = "bert"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Every character a transcript is likely to hold, standalone and as a word continuation (`##x`).
CHARACTERS = string.ascii_lowercase + string.digits + string.punctuation
SUFFIXES = (
    "s",
    "es",
    "ed",
    "ing",
    "ly",
    "er",
    "ers",
    "est",
    "y",
    "n",
    "t",
    "en",
    "ness",
    "ful",
    "less",
    "able",
    "ment",
    "ments",
    "tion",
    "tions",
    "ion",
    "al",
    "ic",
    "ive",
    "ous",
    "ity",
    "ish",
    "ies",
    "ied",
)
# Frequent conversational English (lower case; contractions appear split at the apostrophe, as BERT's
# pre-tokenizer splits them: "don't" -> don ' t).
ENGLISH_WORDS = """
a about above absolutely across actually afraid after afternoon again against ago agree agreed ah ain airport
alive all almost alone along already alright also although always am amazing america american among an and
angeles anger angry annoyed annoying another answer answered answers anxious any anybody anyhow anyone anything
anyway apologise apologize apparently april are aren argue argued argument arm arms army around as ashamed ask
asked asking asks at ate august autumn awesome awful babies baby back bad ball bank bar barely basically be
beach beautiful because been beer before began begin beginning begun behind being believe believed believes
below beside besides best better between beyond big bill billion bills birthday blame blamed body book books
bored boring boss both bought boy boyfriend boys break breakfast breathing bring brings broke broken brother
brothers brought buddy build built bus business busy but buy by bye california call called calling calls calm
came can cannot captain car care cared carefully cares carried carry cars case cases cash catch caught certain
certainly chance chances change changed changes cheap check checked chicago child children choice choices choose
chose chosen christ christmas city class clear clearly clever close closed coffee cold college come comes coming
company complain complained computer continue cool cop cost could couldn country course crazy cried cry crying
cut cute dad daddy damn dangerous dare dark darling daughter daughters day days dead dear death december decide
decided decision decisions definitely deserve deserved did didn die died different difficult dinner disagree
disappointed disgust disgusted do doctor does doesn doing dollar dollars don done door down dozen drank drink
drinking drinks drive driven drove dude dumb dunno during dying each early easily easy eat eaten eating eight
eighteen eighty either eleven email embarrassed emotion emotions empty end england english enough especially
even evening ever every everybody everyone everything exactly excited exciting excuse expensive explain
explained eye eyes face fact facts fair fake fall fallen false family fantastic far fast father fault fear
february feel feeling feelings feels feet fell felt few fifteen fifth fifty fight fighting final finally find
finding fine first five fix fixed flight follow followed food foot for forever forgave forget forgive forgot
forgotten forty fought found four fourteen fourth francisco free fresh friday friend friends frightened from
frustrated frustrating full fun funny furious future game games garbage gave generally gentleman get getting
girl girlfriend girls give given gives giving glad go god goes going gone gonna good goodbye gosh got gotta
gotten grateful great guilty guy guys had hadn hair half hand hands happen happened happening happens happiness
happy hard hardly has hasn hate hated hates have haven having he head hear heard hearing hears heart heavy held
hell hello help helped helping her hers herself hey hi high him himself his hit hmm hold holding holiday home
honestly honey hope hoped hopes horrible hot hotel hour hours house how however hug huge huh hundred hurt hurts
husband i idea ideas if ill important impossible in include inside internet into is isn it its itself january
jealous jesus job jobs join joined joke jokes joy judge july june just keep keeping keeps kept kid kidding kids
kill killed kind kinda king kiss kissed knew know knowing known knows ladies lady large las last late later
laugh laughed laughing laughs laughter lawyer lead learn learned least leave leaves leaving left lemme less let
lets letter letters letting lie lied lies life light like liked likes line listen listened listening listens
literally little live lived lives living ll lonely long look looked looking looks lose losing lost lot lots loud
love loved lovely loves loving low lucky lunch lying mad madam made main make makes making man many march
marriage married marry marrying matter mattered matters may maybe me mean meaning means meant meet meeting men
message met might million mind minds mine minute minutes miss missed missing mistake mistakes mister mom moment
moments mommy monday money month more morning most mother move moved moves movie movies moving mr mrs ms much
mum music must mustn my myself name names navy near nearly need needed needing needs neither nervous never new
news next nice night nine nineteen ninety no nobody noise none nope nor normal not nothing november now number
numbers nurse obviously ocean october of off office officer often oh ok okay old on once one only onto open
opened or other others ought our ours ourselves out outside over own paid pain paper pardon parent parents part
parties parts party pass passed past pay paying peace people perfect perhaps person phone photo picture pictures
place places plan plane plans play played playing plays please point points police poor possible present
pressure pretty price probably problem problems promise promised proud pull pulled push pushed put puts putting
queen question questions quickly quiet quite radio rain raise ran rarely rather re reach ready real really
reason reasons remain remember remembered rent rest restaurant rich ride right ring road room run running runs
sad sadness safe said same san sat saturday save saved saw say saying says scared school scream screamed sea
second seconds secret secrets see seeing seen sees seldom sell send sense sent september serious seriously set
seven seventeen seventy several shall she short should shouldn shout shouted show showed shown shows sick side
sigh sighs silly simple simply since sir sister sisters sit sitting situation six sixteen sixty sky sleep
sleeping slept slow slowly small smart smile smiled snow so sold soldier some somebody somehow someone something
sometimes son song songs sons soon sorry sort sorta speak speaking speaks special spend spent spoke spoken sport
spring stand standing start started starting starts stay stayed staying steal still stole stood stop stopped
stopping stops stories story strange street stress strong student stuff stupid such suddenly suggest summer sun
sunday sure surprise surprised sweetheart take taken takes taking talk talked talking talks tall tea teacher
team television tell telling tells ten terrible than thank thankful thanks that the their theirs them themselves
then there these they thing things think thinking thinks third thirteen thirty this those though thought
thousand three threw through throw thrown thursday ticket tickets time times tiny tired to today told tomorrow
tonight too took totally toward towards town train travel tried tries trip trouble true trust trusted trusting
truth try trying tuesday tv twelve twenty twice two type ugly uh um umm under understand understands understood
unfair university unless unlucky until up upon upset us use used uses using usually vacation ve vegas very voice
wait waited waiting wake walk walked walking wanna want wanted wanting wants war warm was wasn watch watched
watching water way ways we weak weather wedding wednesday week weekend weird well went were weren what whatever
when whenever where wherever whether which while who whole whom whose why wife will win window wine winter wish
wished wishes with within without wives woke woman women won wonderful word words work worked working works
world worried worries worry worrying worse worst would wouldn wow write writing written wrong wrote yeah year
years yell yelled yep yes yesterday yet york you young your yours yourself yourselves yup zero
""".split()


def embedded_vocabulary() -> list[str]:
    """The embedded tokenizer's vocabulary, in id order: specials, characters, `##` pieces, suffixes, words."""
    pieces = [
        *SPECIAL_TOKENS,
        *CHARACTERS,
        *(f"##{c}" for c in CHARACTERS),
        *(f"##{s}" for s in SUFFIXES),
        *ENGLISH_WORDS,
    ]
    return list(dict.fromkeys(pieces))  # drop repeats (single-letter words are also characters), keep order


def build_tokenizer(vocabulary: list[str]):
    """A BERT-style WordPiece fast tokenizer over `vocabulary` (lower-casing, accent stripping, punctuation split).

    Built from a `tokenizers.Tokenizer` object because transformers 5 ignores `vocab_file=` for
    `BertTokenizerFast` and would silently use another vocabulary.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    token_ids = {token: index for index, token in enumerate(vocabulary)}
    backend = Tokenizer(models.WordPiece(vocab=token_ids, unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", token_ids["[CLS]"]), ("[SEP]", token_ids["[SEP]"])],
    )
    backend.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
        padding_side="right",
    )


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
    vocabulary = embedded_vocabulary()
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
