"""The tokenizers of the checkpoint families (families.py): their files, their special tokens, their word starts.

    tokenizer.json               any model `tokenizers` reads (WordPiece, byte-level BPE, SentencePiece unigram)
    vocab.txt                    WordPiece, set up as BertTokenizer (+ tokenizer_config.json: do_lower_case)
    vocab.json + merges.txt      byte-level BPE, as RoBERTa's tokenizer

[CLS] / [SEP] / [PAD] / [UNK] are <s> / </s> /
<pad> / <unk> for RoBERTa and XLM-R.

WordPiece marks a word's *continuations* (##ing); byte-level BPE (RoBERTa) and SentencePiece unigram (XLM-R)
mark its *start* instead, with the space before it (Ġ, ▁). In pretraining nearly every word followed a
space, so a word tokenized alone, without one, gets other pieces than it had there ("Paris" -> P, aris
instead of ĠParis): the first word of every sentence and every word split off mid-text ("Paris" in
"Paris.") would be read in a form the model rarely saw. So for those tokenizers each word is encoded with
a space before it (WordTokenizer's `prefix`), the way HF's add_prefix_space does; the same words then get
the same pieces in training and at inference, wherever they stand.
"""

from contextlib import ExitStack
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from ..guards.errors import UserError, read_json
from ..guards.files import read_tokenizer_file, readable
from ..tokenization import BERT_SPECIALS, WordTokenizer

SPECIALS = (BERT_SPECIALS,  # BERT, DistilBERT, ELECTRA
            ("<s>", "</s>", "<pad>", "<unk>"))  # RoBERTa, XLM-R (fairseq's names)


# The tokenizer model each family was pretrained with, and the files that hold one without tokenizer.json.
MODELS = {"bert": "WordPiece", "distilbert": "WordPiece", "electra": "WordPiece", "roberta": "BPE",
          "xlm-roberta": "Unigram"}
NATIVE_FILES = {"WordPiece": ("vocab.txt",), "BPE": ("vocab.json", "merges.txt"), "Unigram": ()}


def load_tokenizer(directory, vocab_size=None, model_type=None):
    """The checkpoint's own tokenizer, of any family (the files above). Given the model's `vocab_size`, every
    id the tokenizer can produce must have a row in its embedding table; given its `model_type`, the tokenizer
    must be the kind that family was pretrained with, and no file of another kind may be beside it."""
    if model_type is not None:
        check_kind(Path(directory), model_type)
    backend, path = read_family_tokenizer(directory)
    if model_type is not None and type(backend.model).__name__ != MODELS[model_type]:
        raise UserError(f"holds a {type(backend.model).__name__} tokenizer, but config.json says model_type "
                        f"{model_type!r}, pretrained with {MODELS[model_type]}", path=path)
    specials = next((names for names in SPECIALS if None not in map(backend.token_to_id, names)), None)
    if specials is None:
        raise UserError("the vocabulary lacks the special tokens " + " or ".join(", ".join(n) for n in SPECIALS),
                        path=path)
    ids = max(backend.get_vocab().values()) + 1  # ids need not be contiguous: the largest needs a row
    if vocab_size is not None and ids > vocab_size:
        raise UserError(f"holds {ids} tokens but the model's config.json has vocab_size {vocab_size}", path=path)
    marks_starts = isinstance(backend.model, (models.BPE, models.Unigram))
    return WordTokenizer(backend, specials, " " if marks_starts else "")


def check_kind(directory, model_type):
    """Refuse tokenizer files of a kind that `model_type` was not pretrained with: with a stray vocab.txt
    beside a RoBERTa's vocab.json, which of the two is the model's cannot be known."""
    wanted = MODELS[model_type]
    for kind, names in NATIVE_FILES.items():
        stray = next((name for name in names if kind is not wanted and (directory / name).is_file()), None)
        if stray:
            raise UserError(f"is a {kind} tokenizer's file, but config.json says model_type {model_type!r}, "
                            f"pretrained with {wanted}: the checkpoint's files contradict each other",
                            path=directory / stray)


def read_family_tokenizer(directory):
    """(the checkpoint's Tokenizer, the file it came from): tokenizer.json, else WordPiece from vocab.txt, else
    byte-level BPE from vocab.json + merges.txt."""
    directory = Path(directory)
    if (directory / "tokenizer.json").is_file():
        return read_tokenizer_file(directory / "tokenizer.json"), directory / "tokenizer.json"
    if (directory / "vocab.txt").is_file():
        path = directory / "vocab.txt"
        return wordpiece_tokenizer(path, directory / "tokenizer_config.json"), path
    if not (directory / "vocab.json").is_file():
        raise UserError("no vocab.txt (WordPiece), tokenizer.json or vocab.json + merges.txt (byte-level BPE): "
                        "the checkpoint needs its tokenizer files", path=directory / "vocab.txt")
    path, merges = directory / "vocab.json", directory / "merges.txt"
    if not merges.is_file():
        raise UserError("no merges.txt beside vocab.json: byte-level BPE needs both", path=merges)
    vocab = read_json(path)  # read here first, so that a fault in it is not blamed on merges.txt below
    if not (isinstance(vocab, dict) and all(type(i) is int for i in vocab.values())):
        raise UserError("not a BPE vocabulary (a JSON object of tokens and their integer ids)", path=path)
    backend = Tokenizer(read_native(models.BPE.from_file, merges, "cannot read the BPE vocabulary and merges",
                                    path, merges))
    # Byte-level: every byte is a symbol of the vocabulary, so no text is ever unknown. The space before each
    # word is added by WordTokenizer's `prefix`, not by the pre-tokenizer.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return backend, path


def read_native(reader, path, what, *files, **kwargs):
    """`reader(*files, **kwargs)`, a `tokenizers` file reader given the files' paths, its failure (a plain
    Exception) a UserError naming `path`."""
    with ExitStack() as stack:
        names = [stack.enter_context(readable(f)) for f in files]
        try:
            return reader(*names, **kwargs)
        except Exception as e:
            raise UserError(f"{what}: {e}", path=path) from None


def wordpiece_tokenizer(vocab, config_path):
    """BertTokenizer, rebuilt from `vocab.txt` and the lower-casing in `tokenizer_config.json`."""
    lowercase = True  # BertTokenizer's default when the config does not say
    if config_path.is_file():
        config = read_json(config_path)
        if not isinstance(config, dict):
            raise UserError("not a valid tokenizer config (a JSON object)", path=config_path)
        lowercase = bool(config.get("do_lower_case", True))
    # 100 is BertTokenizer's limit: longer words become a single [UNK], as in pretraining.
    tokenizer = Tokenizer(read_native(models.WordPiece.from_file, vocab, "cannot read the vocabulary", vocab,
                                      unk_token="[UNK]", max_input_chars_per_word=100))
    # strip_accents=None follows `lowercase`, as in BertTokenizer: uncased models also strip accents.
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tokenizer
