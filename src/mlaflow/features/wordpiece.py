"""The embedded text encoders' tokenizer: a real WordPiece tokenizer over a fixed vocabulary (special tokens,
single characters and their `##` continuations, so any text tokenises without an unknown token except for exotic
symbols, common suffixes, and ~1,200 frequent conversational English words).

Shared by the embedded BERT (mlaflow.features.text_bert) and the embedded CLIP's text tower
(mlaflow.features.clip), each with its own special tokens. A helper of the encoders, like audio_io: it imports
no encoder. A pretrained directory brings its own tokenizer; this is only for the randomly initialised models.
"""

from __future__ import annotations

import string

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


def embedded_vocabulary(special_tokens: tuple[str, ...]) -> list[str]:
    """The vocabulary in id order: `special_tokens` (first, so their ids are 0, 1, ...), characters, `##`
    pieces, suffixes, words."""
    pieces = [
        *special_tokens,
        *CHARACTERS,
        *(f"##{c}" for c in CHARACTERS),
        *(f"##{s}" for s in SUFFIXES),
        *ENGLISH_WORDS,
    ]
    return list(dict.fromkeys(pieces))  # drop repeats (single-letter words are also characters), keep order


def build_tokenizer(
    vocabulary: list[str],
    unk: str = "[UNK]",
    pad: str = "[PAD]",
    cls: str = "[CLS]",
    sep: str = "[SEP]",
    mask: str | None = "[MASK]",
    model_max_length: int = 512,
):
    """A BERT-style WordPiece fast tokenizer over `vocabulary` (lower-casing, accent stripping, punctuation
    split) that wraps each text as `cls text sep`.

    Built from a `tokenizers.Tokenizer` object because transformers 5 ignores `vocab_file=` for
    `BertTokenizerFast` and would silently use another vocabulary.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    token_ids = {token: index for index, token in enumerate(vocabulary)}
    backend = Tokenizer(models.WordPiece(vocab=token_ids, unk_token=unk, max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, token_ids[cls]), (sep, token_ids[sep])],
    )
    backend.decoder = decoders.WordPiece(prefix="##")
    special = {"unk_token": unk, "pad_token": pad, "cls_token": cls, "sep_token": sep}
    if mask is not None:
        special["mask_token"] = mask
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=model_max_length, padding_side="right", **special
    )
