"""The tokenizer files of a checkpoint, read with the `tokenizers` library: which files, in which order.

    tokenizer.json               any model `tokenizers` reads (WordPiece, byte-level BPE, SentencePiece unigram)
    vocab.txt                    WordPiece, set up as BertTokenizer (+ tokenizer_config.json: do_lower_case)
    vocab.json + merges.txt      byte-level BPE, as RoBERTa's tokenizer

(tokenization.Aligner turns the tokenizer into first-sub-token labels; docs/families.md says which family
ships which files.)
"""

from contextlib import ExitStack
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from .errors import UserError, read_json
from .paths import readable


def read_tokenizer(directory):
    """(the checkpoint's Tokenizer, the file it came from): `tokenizer.json` when there is one, else WordPiece
    from `vocab.txt`, else byte-level BPE from `vocab.json` + `merges.txt`."""
    directory = Path(directory)
    if (directory / "tokenizer.json").is_file():
        path = directory / "tokenizer.json"
        tokenizer = read_native(Tokenizer.from_file, path, "cannot read the tokenizer", path)
        tokenizer.no_padding()  # the batches pad themselves; published files often pad to a fixed length
        tokenizer.no_truncation()
    elif (directory / "vocab.txt").is_file():
        path = directory / "vocab.txt"
        tokenizer = wordpiece_tokenizer(path, directory / "tokenizer_config.json")
    elif (directory / "vocab.json").is_file():
        path, merges = directory / "vocab.json", directory / "merges.txt"
        if not merges.is_file():
            raise UserError("no merges.txt beside vocab.json: byte-level BPE needs both", path=merges)
        bpe = read_native(models.BPE.from_file, merges, "cannot read the BPE vocabulary and merges",
                          path, merges)
        tokenizer = Tokenizer(bpe)
        # Byte-level: every byte is a symbol of the vocabulary, so no text is ever unknown. The space before
        # each word is added by `Aligner.prefix`, not by the pre-tokenizer.
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        raise UserError("no vocab.txt (WordPiece), tokenizer.json or vocab.json + merges.txt (byte-level BPE): "
                        "the checkpoint needs its tokenizer files", path=directory / "vocab.txt")
    return tokenizer, path


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
