"""Small checkpoints of every family, written as the hub writes them, with real tokenizer files trained here.

`write_checkpoint(path, family)` saves a randomly initialised `transformers` model of an unusual shape with
`save_pretrained` (config.json + model.safetensors) and the family's tokenizer files, trained on fixed text
with `tokenizers`: WordPiece (vocab.txt) for BERT, DistilBERT and ELECTRA, byte-level BPE (vocab.json +
merges.txt, or tokenizer.json) for RoBERTa, unigram (tokenizer.json) for XLM-R.
"""

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

ROOT = Path(__file__).resolve().parents[1]
FAIRSEQ_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's and XLM-R's ids 0-4
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# other scripts, accents, an emoji
EXTRA = ["Zoë visited Köln, Zürich and 東京 with José 😀 last summer.", "Москва — столица России.",
         "Ça coûte 12,50 € !", "नमस्ते दुनिया", "مرحبا بالعالم"]


def corpus():
    """Fixed training text: the demo set's sentences and a few lines of other scripts."""
    lines = (ROOT / "minimtl" / "demo" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    return [" ".join(json.loads(line)["tokens"]) for line in lines] + EXTRA * 20


def byte_level_bpe(vocab_size=500):
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=FAIRSEQ_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # all 256 bytes
    tokenizer.train_from_iterator(corpus(), trainer)
    return tokenizer


def unigram(vocab_size=400):
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(corpus(), trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=FAIRSEQ_SPECIALS[:4], unk_token="<unk>"))
    return tokenizer


def wordpiece(lowercase, vocab_size=600):
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(corpus(), trainers.WordPieceTrainer(vocab_size=vocab_size,
                                                                      special_tokens=BERT_SPECIALS))
    return tokenizer


def write_tokenizer(path, kind):
    """Tokenizer files of `kind` in `path`; returns the tokenizer (the test oracle for its ids)."""
    path.mkdir(parents=True, exist_ok=True)
    if kind in ("bpe-files", "bpe-json"):
        tokenizer = byte_level_bpe()
        if kind == "bpe-files":
            tokenizer.model.save(str(path))  # vocab.json + merges.txt, as RoBERTa's repositories have them
        else:
            tokenizer.save(str(path / "tokenizer.json"))
    elif kind == "unigram":
        tokenizer = unigram()
        tokenizer.save(str(path / "tokenizer.json"))
    else:  # "wordpiece-cased" or "wordpiece-uncased"
        tokenizer = wordpiece(lowercase=kind == "wordpiece-uncased")
        tokenizer.model.save(str(path))  # vocab.txt
        (path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": kind == "wordpiece-uncased"}))
    return tokenizer


# family -> (tokenizer kind, the class saved, its config: every shape unusual, nothing a default)
FAMILIES = {
    "bert": ("wordpiece-cased", "BertForMaskedLM", "BertConfig", dict(
        hidden_size=72, num_hidden_layers=3, num_attention_heads=6, intermediate_size=100,
        max_position_embeddings=80, type_vocab_size=3)),
    "roberta": ("bpe-files", "RobertaForMaskedLM", "RobertaConfig", dict(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=70,
        max_position_embeddings=66, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        layer_norm_eps=1e-5)),
    "xlm-roberta": ("unigram", "XLMRobertaModel", "XLMRobertaConfig", dict(
        hidden_size=40, num_hidden_layers=2, num_attention_heads=5, intermediate_size=56,
        max_position_embeddings=60, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        layer_norm_eps=1e-5)),
    "distilbert": ("wordpiece-uncased", "DistilBertForMaskedLM", "DistilBertConfig", dict(
        dim=64, n_layers=2, n_heads=4, hidden_dim=90, max_position_embeddings=50, sinusoidal_pos_embds=False)),
    "distilbert-sinusoidal": ("wordpiece-uncased", "DistilBertModel", "DistilBertConfig", dict(
        dim=64, n_layers=3, n_heads=8, hidden_dim=48, max_position_embeddings=50, sinusoidal_pos_embds=True)),
    "electra": ("wordpiece-uncased", "ElectraForPreTraining", "ElectraConfig", dict(
        embedding_size=24, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=80,
        max_position_embeddings=50)),
}


def write_checkpoint(path, family, seed=0):
    """A random checkpoint of `family` in `path`; returns (the saved model's encoder, the tokenizer)."""
    import transformers

    kind, model_class, config_class, shape = FAMILIES[family]
    tokenizer = write_tokenizer(path, kind)
    torch.manual_seed(seed)
    config = getattr(transformers, config_class)(vocab_size=tokenizer.get_vocab_size(), **shape)
    model = getattr(transformers, model_class)(config).eval()
    with torch.no_grad():  # HF starts biases at 0 and LayerNorms at 1: move them, so that a mix-up shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(path)
    return model.base_model, tokenizer


def write_checkpoints(tmp_path_factory, *families):
    """A random checkpoint of each of `families`, each in a folder of its own; their paths, in that order."""
    paths = tuple(tmp_path_factory.mktemp(family) for family in families)
    for path, family in zip(paths, families):
        write_checkpoint(path, family)
    return paths
