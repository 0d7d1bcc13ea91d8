"""A trained run as the checkpoints that `transformers`' own task classes load, without a warning:

    python -m minimtl.machinery.export runs/latest exported       (or: minimtl-export runs/latest exported)

    exported/token-classification/   the tag head:      BertForTokenClassification (or the family's class)
    exported/text-classification/    the sentence head: DistilBertForSequenceClassification, ...
    each with config.json (architectures, id2label/label2id, model_type), model.safetensors, the tokenizer files

The folders are named after the pipeline tasks: `pipeline("token-classification", model="exported/token-
classification", aggregation_strategy="first")` then finds the run's entities. A head is exported only where
its class computes exactly what the run computes; anything else is refused in one line saying why, never
written as an approximation:

- tag head: each family's ForTokenClassification is a linear layer on the last hidden state, which is
  minimtl's linear token head reading one layer. A CRF (whose decoding the class does not do), a BiLSTM or
  convolutions, a learned mix of layers and word shapes (a table no class has) have no equivalent.
- sentence head: each family's ForSequenceClassification puts a layer and an activation between the first
  token and the classes: a tanh for BERT (its pooler), RoBERTa and XLM-R, a ReLU for DistilBERT, a GELU for
  ELECTRA. No tanh layer computes a linear function; a ReLU or GELU layer can, exactly, because
  relu(z) - relu(-z) = z = gelu(z) - gelu(-z): the layer computes +w.x and -w.x for each class's weights w
  and the output layer subtracts the two (`through_activation`). So minimtl's linear head on [CLS] (pooling
  cls, one layer) is exported for DistilBERT and ELECTRA, given hidden units for two per class.

What the classes cannot carry stays in minimtl: the calibrated temperatures (the pipeline applies a plain
softmax to the logits; config.json's "minimtl_export" records them), the best valid BIO path (the pipeline
takes each word's most probable tag, which can start an entity with I-), and windows over long texts.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from ..extensions.families import config_json, published_name
from ..guards.errors import UserError, read_json
from .checkpoint import atomic_directory, label_maps, load_checkpoint
from .reading import copy_tokenizer
from .rundir import save_tensors

TASKS = {"tags": "token-classification", "sentence": "text-classification"}  # --only's names -> folder
HEADS = {"tags": "tag head", "sentence": "sentence head"}
CLASS_NAMES = {"bert": "Bert", "roberta": "Roberta", "xlm-roberta": "XLMRoberta", "distilbert": "DistilBert",
               "electra": "Electra"}  # transformers' prefix of each family's classes
# The sentence classes' activation between [CLS] and the classes; where it is odd (tanh), no weights make it linear.
ACTIVATION = {"bert": "tanh", "roberta": "tanh", "xlm-roberta": "tanh", "distilbert": "relu", "electra": "gelu"}
MARK = "minimtl_export"  # the config.json key that makes a folder an export, which a new export may replace
NECKS = {"lstm": "a BiLSTM", "conv": "dilated convolutions"}


def refusal(meta, hidden_size, family, head):
    """Why the run's `head` ("tags" or "sentence") has no exact transformers equivalent; None if it has one."""
    heads = meta["heads"]
    if meta.get("word_shapes"):
        where = "the encoder" if meta["word_shapes"] == "embeddings" else "what the heads read"
        return f"the run adds word shapes to {where} (--word-shape), a table no transformers class has"
    if meta.get("context"):
        return ("it reads each sentence in its document (--context), and transformers' pipelines read each text "
                "alone")
    if heads["layers"] > 1:
        return f"it reads a learned mix of the top {heads['layers']} layers; transformers' classes read the last one"
    kind = heads["token_head" if head == "tags" else "sentence_head"]
    if kind != "linear":
        return f"it puts {NECKS[kind]} before its output layer, which transformers' classes do not have"
    if head == "tags":
        return "it decodes with a CRF, which token classification in transformers does not do" if heads["crf"] else None
    if heads["pooling"] != "cls":
        return "it reads the mean of the tokens; transformers' sentence classes read the first token"
    if ACTIVATION[family] == "tanh":
        return (f"{CLASS_NAMES[family]}ForSequenceClassification puts a tanh layer between [CLS] and the classes, "
                "and no tanh layer computes minimtl's linear head")
    if 2 * heads["n_labels"] > hidden_size:
        return f"{heads['n_labels']} classes need {2 * heads['n_labels']} hidden units, and the model has {hidden_size}"
    return None


def through_activation(weight, bias, family):
    """The sentence class's tensors that compute `weight` @ x + `bias` (C classes, H wide) from [CLS] exactly.

    The inner layer's units 2k and 2k + 1 compute +w_k.x and -w_k.x (the rest are 0), and the output layer
    takes the first minus the second: relu(z) - relu(-z) = z, and gelu(z) - gelu(-z) = z(Phi(z) + Phi(-z)) = z."""
    C, H = weight.shape
    inner = torch.zeros(H, H, dtype=weight.dtype)
    inner[: 2 * C] = torch.stack([weight, -weight], 1).reshape(2 * C, H)
    outer = torch.zeros(C, H, dtype=weight.dtype)
    k = torch.arange(C)
    outer[k, 2 * k], outer[k, 2 * k + 1] = 1.0, -1.0
    layer, output = {"distilbert": ("pre_classifier", "classifier"),
                     "electra": ("classifier.dense", "classifier.out_proj")}[family]
    return {f"{layer}.weight": inner, f"{layer}.bias": torch.zeros(H, dtype=weight.dtype),
            f"{output}.weight": outer, f"{output}.bias": bias}


def is_export(folder):
    """Whether `folder` is one of the folders an earlier export wrote."""
    if folder.name not in TASKS.values() or folder.is_symlink() or not folder.is_dir():
        return False
    try:
        config = read_json(folder / "config.json")
    except UserError:
        return False
    return isinstance(config, dict) and MARK in config


def check_out(out):
    """OUT may be new, empty, or an earlier export (which the export replaces whole); nothing else is touched."""
    if out.is_symlink() or out.exists() and not out.is_dir():
        raise UserError("is not a folder: give a new folder, or an earlier export, to write the export into", out)
    others = sorted(p.name for p in out.iterdir() if not is_export(p)) if out.is_dir() else []
    if others:
        raise UserError(f"already holds {others[0]!r}, which no export wrote: give a new or empty folder", out)


def export(run, out, only=None):
    """Write the run's heads (all of them, or `only` "tags" / "sentence") into OUT as transformers checkpoints
    (the module's docstring); returns the folders written. A head that cannot be exported exactly is a
    UserError, raised before anything is written; OUT is then as it was."""
    run, out = Path(run), Path(out)
    check_out(out)
    model, meta = load_checkpoint(run)
    config = model.bert.config
    present = {"tags": model.ner_head is not None, "sentence": model.cls_head is not None}
    if only is not None and not present[only]:
        raise UserError(f"has no {HEADS[only]} to export (--only {only})", run)
    if only is not None and sum(present.values()) == 1:
        raise UserError(f"--only {only} changes nothing: the {HEADS[only]} is the only head of {run}")
    heads = [only] if only else [head for head, here in present.items() if here]
    for head in heads:
        reason = refusal(meta, config.hidden_size, config.model_type, head)
        if reason:
            other = next((h for h in TASKS if h != head and h in heads), None)
            raise UserError(f"cannot export its {HEADS[head]} exactly: {reason}"
                            + (f" (--only {other} exports the {HEADS[other]} alone)" if other else ""), run)
    state = model.state_dict()
    encoder = {published_name(k[len("bert."):], config.model_type): v
               for k, v in state.items() if k.startswith("bert.")}
    temperature = meta.get("temperature") or {}
    with atomic_directory(out) as tmp:
        for head in heads:
            folder = tmp / TASKS[head]
            folder.mkdir()
            prefix, names = ("ner_head", meta["tags"]) if head == "tags" else ("cls_head", meta["labels"])
            weight, bias = state[f"{prefix}.out.weight"], state[f"{prefix}.out.bias"]
            tensors = {"classifier.weight": weight, "classifier.bias": bias} if head == "tags" else \
                through_activation(weight, bias, config.model_type)
            save_tensors({k: v.detach().cpu().contiguous() for k, v in {**encoder, **tensors}.items()},
                         folder / "model.safetensors", metadata={"format": "pt"})
            kind = "ForTokenClassification" if head == "tags" else "ForSequenceClassification"
            record = {"head": head, "temperature": temperature.get("ner" if head == "tags" else "cls", 1.0)}
            (folder / "config.json").write_text(json.dumps(
                {**config_json(config), "architectures": [CLASS_NAMES[config.model_type] + kind],
                 **label_maps(names), MARK: record}, indent=2) + "\n", encoding="utf-8")
            copy_tokenizer(run, folder)
    return [out / TASKS[head] for head in heads]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="minimtl-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a trained run's folder (runs/latest, say)")
    parser.add_argument("out", help="the folder to write: new, empty, or an earlier export (replaced whole)")
    parser.add_argument("--only", choices=tuple(TASKS), help="export this head alone (default: every head the run has)")
    args = parser.parse_args(argv)
    try:
        for folder in export(args.run, args.out, args.only):
            print(f"wrote {folder}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a full disk, a read-only folder: nothing was swapped in
        print(f"error: {UserError(e.strerror or e, e.filename or args.out)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
