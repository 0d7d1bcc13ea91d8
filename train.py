"""Train one BERT backbone with a sentence-classification head and an NER head.

    python train.py --freeze backbone                  # demo data, default weights, heads only
    python train.py --data ../shared/data/snips         # full fine-tuning on SNIPS
    python train.py --resume runs/latest                # continue an interrupted run exactly
"""

import argparse
import sys

from minimtl.errors import UserError
from minimtl.freezing import FREEZE_MODES
from minimtl.interrupts import Interrupted
from minimtl.lora import TARGETS
from minimtl.model import POOLINGS
from minimtl.settings import SELECT_METRICS, TrainConfig, resume_config
from minimtl.training import train

D = TrainConfig()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data and weights")
    g.add_argument("--data", default=D.data, help="a data folder (train + dev [+ test]) or one file: SNIPS/ATIS "
                   "folders, JSONL, CoNLL columns or CSV (default: the shipped demo set)")
    g.add_argument("--weights", default=D.weights, help="a BERT checkpoint directory, or a name under weights/ "
                   f"(default {D.weights}, fetched on first use)")
    g.add_argument("--out", default=D.out, help=f"run directory: best checkpoint, logs, resumable state "
                   f"(default {D.out})")
    g.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR with its own settings "
                   "(from the end of its last finished epoch; give no other option)")
    g.add_argument("--max-len", type=int, default=D.max_len, help="training sentences are cut to this many "
                   f"sub-tokens, and the cut ones counted (default {D.max_len})")
    g.add_argument("--label-all-subtokens", action="store_true",
                   help="label every sub-token of a word (continuations of B-X as I-X), not only the first")
    g = p.add_argument_group("freezing (see minimtl/freezing.py)")
    g.add_argument("--freeze", nargs="+", default=D.freeze, choices=FREEZE_MODES, metavar="MODE",
                   help=f"one or more of {', '.join(FREEZE_MODES)}. With the whole backbone frozen, its hidden "
                   "states are computed once and cached: later epochs only run the heads")
    g.add_argument("--freeze-layers", type=int, default=D.freeze_layers, metavar="N",
                   help="freeze the embeddings and the bottom N encoder layers")
    g.add_argument("--unfreeze-schedule", default=D.unfreeze_schedule, metavar="SPEC",
                   help="'gradual' (heads only in epoch 1, then one more encoder layer from the top each "
                   "epoch) or a list of top-layer counts per epoch such as '0,2,4,all'")
    g = p.add_argument_group("LoRA (see minimtl/lora.py)")
    g.add_argument("--lora", type=int, default=D.lora, metavar="R", help="train rank-R adapters on a frozen "
                   "backbone instead of the backbone itself (0 = off); checkpoints hold the merged weights")
    g.add_argument("--lora-alpha", type=float, default=D.lora_alpha, help="adapter scale is alpha / R")
    g.add_argument("--lora-dropout", type=float, default=D.lora_dropout)
    g.add_argument("--lora-targets", nargs="+", default=D.lora_targets, choices=list(TARGETS), metavar="TARGET",
                   help=f"Linears to adapt in every layer: {', '.join(TARGETS)} (default: query value)")
    g.add_argument("--lr-lora", type=float, default=D.lr_lora, help="learning rate of the adapters")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=D.epochs,
                   help="default 4 (full fine-tuning), 10 with --lora, 30 with --freeze backbone "
                        "(cached epochs cost almost nothing)")
    g.add_argument("--batch-size", type=int, default=D.batch_size)
    g.add_argument("--grad-accum", type=int, default=D.grad_accum, help="micro-batches per optimizer step")
    g.add_argument("--lr-backbone", type=float, default=D.lr_backbone,
                   help="learning rate of the encoder (default 2e-4: best of 5e-5/1e-4/2e-4 on SNIPS dev)")
    g.add_argument("--lr-heads", type=float, default=D.lr_heads)
    g.add_argument("--weight-decay", type=float, default=D.weight_decay,
                   help="AdamW decay, never applied to biases and LayerNorm weights")
    g.add_argument("--warmup", type=float, default=D.warmup, help="fraction of steps of linear warmup")
    g.add_argument("--clip", type=float, default=D.clip, help="gradient-norm clipping (0 = off)")
    g.add_argument("--seed", type=int, default=D.seed)
    g.add_argument("--patience", type=int, default=D.patience, help="early stopping (0 = off)")
    g.add_argument("--select", default=D.select, choices=SELECT_METRICS,
                   help="dev metric that picks the best checkpoint (mean = of sentence accuracy and entity F1)")
    g.add_argument("--device", default=D.device, help="auto, cpu, cuda or mps (bf16 autocast on cuda)")
    g = p.add_argument_group("model")
    g.add_argument("--w-cls", type=float, default=D.w_cls, help="weight of the sentence loss")
    g.add_argument("--w-ner", type=float, default=D.w_ner, help="weight of the token loss")
    g.add_argument("--pooling", default=D.pooling, choices=POOLINGS)
    g.add_argument("--cls-hidden", type=int, default=D.cls_hidden,
                   help="width of a hidden layer in the classification head (0 = linear head)")
    g.add_argument("--dropout", type=float, default=D.dropout, help="dropout in the heads")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    settings = vars(args)
    resume = settings.pop("resume")
    try:
        if resume:
            changed = [name for name, value in settings.items() if value != getattr(D, name)]
            if changed:
                flag = "--" + changed[0].replace("_", "-")
                raise UserError(f"--resume continues a run with its own settings: drop {flag}")
            train(resume_config(resume), resume=True)
        else:
            train(TrainConfig(**settings))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        print(e, file=sys.stderr)
        sys.exit(130)  # the shell's code for "stopped by Ctrl-C"
    except KeyboardInterrupt:  # before training started: nothing was written
        print("interrupted before training started: nothing was saved", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
