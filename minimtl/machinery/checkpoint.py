"""A trained model on disk: a self-contained directory that inference can use with nothing else.

    DIR/model.safetensors        encoder (under its family's published names: `bert.`, `roberta.`, ...) + heads
    DIR/config.json              the encoder's config in its family's keys, the tags as transformers reads a
                                 tagger's classes (id2label, label2id), and a "minimtl" section: label
                                 vocabularies, head settings, max length, training arguments, dev metrics
    DIR/tokenizer files          copied from the pretrained checkpoint (tokenizer.json, vocab.txt, ...)

A training run's directory also holds its logs (`write_logs`: metrics.jsonl, curves.svg) and results.json.

Tensors go through safetensors and everything else through JSON, never pickle: loading a checkpoint
cannot run code. Because the encoder keeps its published names, `load_encoder(DIR)` reads the trained
backbone like any checkpoint of its family, and so does that family's `transformers` class; export.py
writes the heads where that library's own task classes look for them.

Except with word shapes in the encoder (--word-shape outside the frozen recipe, wordshape.py): their table,
`embedding_input.weight`, is part of what the encoder computes, and no published class has it.
`BertModel.from_pretrained(DIR)` then loads the encoder *without* it (transformers lists the tensor among
those "not used"), which computes other hidden states than the trained model: the run's log says so when
it starts, config.json says `"word_shapes": "embeddings"`, and a run refuses such a directory as --weights
rather than drop the table (`load_pretrained`). (With the frozen recipe the table belongs to the
heads, `head_input.weight`, and the encoder is the pretrained one, unchanged.)

Saving is atomic at the directory level (`atomic_directory`): everything is written into a temporary
sibling directory, flushed to disk, then swapped in by two renames. A crash mid-write leaves the previous checkpoint as it
was; a crash between the two renames (a window of microseconds) leaves it under a `.NAME.old-*` name,
which the next load or save puts back.
"""

import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path

from torch.overrides import TorchFunctionMode

from ..bio import split_tag
from ..extensions.calibration import T_RANGE
from ..extensions.families import FAMILIES, as_family, config_json, encoder, load_encoder, published_name, read_config
from ..extensions.heads import HEAD_KINDS
from ..extensions.lora import merged_state_dict
from ..guards.errors import UserError, read_json
from ..guards.files import read_state_dict
from ..model import POOLINGS
from ..weights import match_state_dict
from .assemble import WORD_SHAPES, HeadConfig, build_model
from .predictor import Predictor
from .plots import write_curves
from .reading import NO_CHECKPOINT, TOKENIZER_FILES, check_weights_fit, copy_tokenizer, one_version
from .rundir import save_tensors, stale_temporaries, write_whole
from ..extensions.family_tokenizers import load_tokenizer

FORMAT_VERSION = 6  # 2: "heads" is HeadConfig as a dict; 3: with layers, token_head and crf; 4: sentence_head;
# 5: a BiLSTM is two one-way LSTMs (heads.BiLSTM); 6: a head's BiLSTM or convolutions are its `neck`, the word-shape
# tables `embedding_input` / `head_input`. Formats 4 and 5 are read too: only names differ (`earlier_name`).
READABLE_FORMATS = (4, 5, FORMAT_VERSION)
MODEL_FILES = ("model.safetensors", "config.json", *TOKENIZER_FILES)
LABEL_KEYS = ("id2label", "label2id")


@contextmanager
def atomic_directory(directory, carry=()):
    """Build the new contents of `directory` in a temporary sibling, then swap it in as a whole.

    Files named in `carry` are hard-linked over from the current directory first (no copy: they are
    unchanged). Everything is flushed to disk before the swap, so what a reader finds under `directory`
    is always one complete version, old or new.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    _recover(directory)
    for stale in stale_temporaries(directory):  # left by a save whose process died
        shutil.rmtree(stale, ignore_errors=True)
    tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        for name in carry:
            if (directory / name).is_file():
                os.link(directory / name, tmp / name)
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as handle:
                    os.fsync(handle.fileno())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = directory.parent / f".{directory.name}.old-{os.getpid()}"
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def write_model(directory, model, meta, tokenizer_dir):
    """The checkpoint files of `model`, its `meta` (JSON-able) and the tokenizer files of the pretrained
    checkpoint in `tokenizer_dir`, into an existing directory."""
    directory = Path(directory)
    # With LoRA, the adapters are folded into plain weights: loading needs no LoRA code.
    family = as_family(model.bert.config).model_type
    # The encoder under its family's published names (roberta.*, distilbert.transformer.*, ...), the heads as is.
    tensors = {published_name(k[len("bert."):], family) if k.startswith("bert.") else k:
               v.detach().cpu().contiguous() for k, v in merged_state_dict(model).items()}
    save_tensors(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    # id2label / label2id: the tag head's classes where transformers looks for them (minimtl reads "minimtl")
    config = {**config_json(as_family(model.bert.config)), **label_maps(meta.get("tags"))}
    config["minimtl"] = {"format_version": FORMAT_VERSION, **meta, "heads": asdict(model.config)}
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    copy_tokenizer(tokenizer_dir, directory)


def label_maps(names):
    """transformers' config.json keys (LABEL_KEYS) for a head's classes `names`; none without them."""
    return dict(zip(LABEL_KEYS, ({str(i): n for i, n in enumerate(names)}, {n: i for i, n in enumerate(names)}))) \
        if names else {}


def _recover(directory):
    """Put back a checkpoint that a save interrupted between its two renames (only if that save's process is
    dead: a live one is about to rename its new version into place)."""
    if directory.exists():
        return
    leftovers = sorted((p for p in stale_temporaries(directory) if ".old-" in p.name), key=lambda p: p.stat().st_mtime)
    if leftovers:
        try:
            leftovers[-1].rename(directory)
        except OSError as e:  # a read-only file system, say: the complete version stays where it is
            raise UserError(f"a save was cut short between its two renames and its previous, complete version, "
                            f"{leftovers[-1]}, cannot be put back here ({e.strerror}): move it to this name",
                            directory) from None


def read_meta(directory):
    """(BERT config, minimtl section) of a checkpoint directory, validated (after load_checkpoint's _recover)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(NO_CHECKPOINT, directory)  # a file, say: one_version found something at the path
    path = directory / "config.json"
    raw = read_json(path, missing="checkpoint has no config.json")
    meta = raw.get("minimtl") if isinstance(raw, dict) else None
    if not isinstance(meta, dict):
        raise UserError("not a minimtl checkpoint (config.json has no 'minimtl' section)", path)
    if meta.get("format_version") not in READABLE_FORMATS:
        raise UserError(f"checkpoint format {meta.get('format_version')!r} is not one of the supported "
                        f"{', '.join(map(str, READABLE_FORMATS))}: retrain it with this version of minimtl", path)
    for key in ("labels", "tags"):
        value = meta.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise UserError(f"'minimtl.{key}' should be a list of names or null", path)
    if not meta.get("labels") and not meta.get("tags"):
        raise UserError("the checkpoint has no label vocabulary ('minimtl.labels' and 'minimtl.tags' are empty)",
                        path)
    for key in ("labels", "tags"):
        if meta.get(key) and len(set(meta[key])) != len(meta[key]):
            raise UserError(f"'minimtl.{key}' names a class twice", path)
    for tag in meta.get("tags") or []:
        try:
            split_tag(tag)
        except ValueError as e:
            raise UserError(f"'minimtl.tags': {e}", path) from None
    # Absent in older runs; present, they are what transformers reads, so they must say what minimtl reads.
    if any(raw.get(k, v) != v for k, v in (label_maps(meta.get("tags")) or dict.fromkeys(LABEL_KEYS)).items()):
        raise UserError("'id2label' and 'label2id' should number 'minimtl.tags' in order, or be absent", path)
    heads = meta.get("heads")
    expected = {"n_labels": len(meta.get("labels") or []), "n_tags": len(meta.get("tags") or [])}
    if not isinstance(heads, dict) or set(heads) != {f.name for f in fields(HeadConfig)} \
            or any(heads[k] != v for k, v in expected.items()):
        raise UserError(f"'minimtl.heads' should be {{n_labels: {expected['n_labels']}, n_tags: {expected['n_tags']}, "
                        "pooling, dropout, layers, sentence_head, token_head, crf}, as training writes it", path)
    if heads["pooling"] not in POOLINGS or not isinstance(heads["dropout"], (int, float)) \
            or not 0 <= heads["dropout"] < 1:
        raise UserError(f"'minimtl.heads': pooling must be one of {', '.join(POOLINGS)} and dropout in [0, 1)", path)
    max_len = meta.get("max_len")
    config = read_config(raw, path)
    if type(heads["layers"]) is not int or not 1 <= heads["layers"] <= config.num_hidden_layers + 1 \
            or any(heads[k] not in HEAD_KINDS for k in ("sentence_head", "token_head")) or type(heads["crf"]) is not bool:
        raise UserError(f"'minimtl.heads': layers must be 1 to {config.num_hidden_layers + 1}, sentence_head and "
                        f"token_head one of {', '.join(HEAD_KINDS)} and crf true or false", path)
    if meta.get("word_shapes") not in (None, *WORD_SHAPES) or type(meta.get("context", False)) is not bool:
        raise UserError(f"'minimtl.word_shapes' should be null or one of {', '.join(WORD_SHAPES)}, and "
                        "'minimtl.context' true or false", path)
    if max_len is not None and not (type(max_len) is int and 3 <= max_len <= config.max_tokens):
        raise UserError(f"'minimtl.max_len' should be an integer from 3 to max_position_embeddings "
                        f"{config.max_tokens}, not {max_len!r}", path)
    # Absent in checkpoints from before calibration: every head's T is then 1, the uncalibrated softmax.
    # A T outside the range calibration searches was not written by it, and one near 0 makes every
    # probability 0 or 1 (and NaN, which is no JSON, where a logit ties).
    temperature, (lowest, highest) = meta.get("temperature", {}), T_RANGE
    if not isinstance(temperature, dict) or not set(temperature) <= {"cls", "ner"} or not all(
            type(t) in (int, float) and 0.999 * lowest <= t <= 1.001 * highest for t in temperature.values()):
        raise UserError(f"'minimtl.temperature' should map 'cls' and 'ner' to numbers from {lowest} to {highest}, "
                        f"as calibration writes them, not {temperature!r}", path)
    return config, meta


class skip_random_init(TorchFunctionMode):
    """Modules built inside `with skip_random_init():` keep their parameters as allocated, unfilled.

    Building a model runs every layer's random initialisation (torch.nn.init: a uniform or normal draw per
    weight, 22M draws for MiniLM), a large part of a one-sentence `infer.py` after `import torch`, and all
    of it wasted when every weight is then loaded from a file. Only for models that `match_state_dict` fills
    next (it demands every parameter, so nothing unfilled survives) and after which no random draw depends on
    the generator's state: a trained checkpoint read for inference (`read_checkpoint`), not
    `load_encoder`, whose caller draws the heads' init next. (Building on the meta device would
    skip the fill too, but makes torch import its compiler stack, which costs more than the fill.)
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__module__", None) == "torch.nn.init":  # uniform_, normal_, kaiming_uniform_, ...
            return args[0] if args else kwargs["tensor"]  # the tensor, as the init functions return it
        return func(*args, **(kwargs or {}))


def load_checkpoint(directory):
    """(MultiTaskModel in eval mode, meta) from a directory written by `write_model`, both from one version
    of it (reading.py: a save may swap the directory while it is read)."""
    _recover(Path(directory))
    return one_version(directory, read_checkpoint)


def read_checkpoint(directory):
    """load_checkpoint's work, on a directory that stays one version."""
    directory = Path(directory)
    config, meta = read_meta(directory)
    weights = directory / "model.safetensors"
    check_weights_fit(config, weights)  # before building: config.json may be absurd
    # A checkpoint written before word shapes has no "word_shapes": it has none.
    with skip_random_init():  # every weight is loaded next
        model = build_model(encoder(config), HeadConfig(**meta["heads"]), meta.get("tags"), meta.get("word_shapes"),
                            meta.get("context", False))
    own = FAMILIES[config.model_type].prefix

    def rename(name):  # the encoder's tensors from its family's names; the heads' names are ours already
        ours = config.encoder_name(name) if name.startswith(own) else None
        name = "bert." + ours if ours else name
        return name if meta["format_version"] == FORMAT_VERSION else earlier_name(name, meta["format_version"])

    match_state_dict(model, read_state_dict(weights), weights, rename=rename)
    return model.eval(), meta


def earlier_name(name, version):
    """A tensor's name in this format from its name in format `version` (4 or 5)."""
    if version == 4:
        name = format_4_name(name)
    for old, new in ((".lstm.", ".neck."), (".convs.", ".neck.")):
        if name.startswith(("cls_head", "ner_head")) and old in name:
            name = name.replace(old, new, 1)
    return {"bert.embeddings.word_shapes.weight": "embedding_input.weight",
            "head_shapes.weight": "head_input.weight"}.get(name, name)


def load_pretrained(directory):
    """The encoder of the checkpoint in `directory`, as --weights takes it (families.load_encoder), its sizes
    checked against the weights file first. A run whose encoder adds word shapes to its input embeddings is
    refused: its encoder alone would silently lose them. Of any other run this is the encoder; its heads are
    warm_start.keep_trained_heads'."""
    path, weights = Path(directory) / "config.json", Path(directory) / "model.safetensors"
    if path.is_file():  # else load_encoder says what is missing
        raw = read_json(path)
        meta = raw.get("minimtl") if isinstance(raw, dict) else None
        if isinstance(meta, dict) and meta.get("word_shapes") == "embeddings":
            raise UserError("was trained with --word-shape: its encoder adds a learned word-shape table to its "
                            "input embeddings, which a plain encoder would silently lose; it cannot be used as "
                            "--weights", weights)
        check_weights_fit(read_config(raw, path), weights)
    return load_encoder(directory)


def format_4_name(name):
    """A head tensor's name in format 5 from its format-4 name, where a BiLSTM was one
    nn.LSTM(bidirectional=True): `head.lstm.weight_ih_l0` is now `head.lstm.left_to_right.weight_ih_l0`, and
    `head.lstm.weight_ih_l0_reverse` is `head.lstm.right_to_left.weight_ih_l0` (the same weights, model.BiLSTM)."""
    head, lstm, weight = name.rpartition(".lstm.")
    if not lstm:
        return name
    if weight.endswith("_reverse"):
        return f"{head}.lstm.right_to_left.{weight.removesuffix('_reverse')}"
    return f"{head}.lstm.left_to_right.{weight}"


def write_json(path, value):
    """`value` as `path`, replaced whole: a crash leaves the old file or the new one, never half of one."""
    write_whole(path, json.dumps(value, indent=2) + "\n")


def write_temperatures(directory, temperatures):
    """Add the calibrated temperatures (calibration.fit_temperatures) to the checkpoint in `directory`.

    Only config.json changes, replaced whole by one rename: a reader or a crash sees the old file (no
    temperatures, so T = 1) or the new one, either of which loads with the same model.safetensors."""
    path = Path(directory) / "config.json"
    config = read_json(path, missing="checkpoint has no config.json")
    config["minimtl"]["temperature"] = temperatures
    write_json(path, config)


def write_logs(out, history, best_epoch):
    """metrics.jsonl (one object per epoch) and curves.svg (losses and dev metrics, selected epoch marked)."""
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history), encoding="utf-8")
    write_curves(out / "curves.svg", history, best_epoch)


def load_with_tokenizer(directory):
    """(MultiTaskModel in eval mode, meta, its WordTokenizer) of the checkpoint in `directory`, all from one version."""
    _recover(Path(directory))

    def read(path):
        model, meta = read_checkpoint(path)
        return model, meta, load_tokenizer(path, model.bert.config.vocab_size, model.bert.config.model_type)
    return one_version(directory, read)


def load_predictor(directory, device="cpu", precision="fp32"):
    """inference.Predictor for the checkpoint in `directory`: its model, vocabularies and tokenizer, run in
    `precision` (precision.py: the files are read as they are, whatever the precision)."""
    return Predictor(*load_with_tokenizer(directory), device, precision)
