"""Training throughput: one fine-tuning pass of our MultiTaskModel vs a transformers-based JointBERT.

Both start from the default weights (all-MiniLM-L6-v2) and train every parameter for one pass over the first
2048 SNIPS training sentences (our WordTokenizer's ids for both), batch 32, AdamW lr 5e-5 (torch defaults otherwise;
no clipping, no schedule), dropout 0.1, in train mode:
  ours      MultiTaskModel + multitask_loss and fused AdamW, as minimtl.training uses them; in our training
            order (batches() with an rng: length-bucketed) and in file order
  theirs    JointBERT-style model written here: transformers BertModel (no pooler) -> dropout -> linear
            intent head on last_hidden_state[:, 0] and linear slot head on every token; CE + masked CE
            (ignore_index -100); file-order batches; torch.optim.AdamW with its defaults, as such a script
            writes it ("theirs/file"), and with fused=True ("theirs/fused") to show how much of the
            difference is the optimizer step alone
  bf16      ours/bucketed and theirs/fused again, forward and loss under torch.autocast("cpu", bfloat16), as
            minimtl.training runs them with --precision bf16 (the default on CPUs with native bf16 dot products);
            and ours with the word embeddings frozen ("ours/bf16-frozen-words"), to show what their dense
            30522 x 384 gradient and its AdamW update cost once the products are fast. Only on a CPU with
            native bf16: elsewhere these rows are skipped, saying so (the JSON's "skipped")
Every timed pass builds a fresh model and optimizer (untimed) and they alternate (ours/bucketed, ours/file,
theirs/file, machine matmul, ...) for --repeats rounds. Reported: median sentences/s, the ratios against
theirs, and useful training GFLOP/s (6 x non-embedding parameters x real tokens/s) as a fraction of the
machine's fp32 matmul GFLOP/s measured in the same rounds.

    python tests/benchmarks/bench_train_step.py [--quick] [--repeats N] [--threads N]

Writes tests/benchmarks/results/train_step.json (train_step.quick.json with --quick: 64 sentences, 2 rounds).
"""

import random

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import (alternate, padding_fraction, bf16_skip_reason, file_order, machine_info, matmul_gflops, median,
                    non_embedding_params, parser, quiet_transformers, setup, snips_train_ids, timed, weights_dir,
                    write_results)
from minimtl import load_encoder
from minimtl.batching import batches, collate
from minimtl.model import multitask_loss
from minimtl.machinery.assemble import HeadConfig, build_model

BATCH, LR, DROPOUT = 32, 5e-5, 0.1


class JointBert(nn.Module):
    """JointBERT-style (Chen et al. 2019, https://arxiv.org/abs/1902.10909) on transformers.BertModel."""

    def __init__(self, path, n_intents, n_slots):
        super().__init__()
        self.bert = quiet_transformers().BertModel.from_pretrained(path, add_pooling_layer=False)
        self.dropout = nn.Dropout(DROPOUT)
        self.intent = nn.Linear(self.bert.config.hidden_size, n_intents)
        self.slot = nn.Linear(self.bert.config.hidden_size, n_slots)

    def forward(self, input_ids, attention_mask):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        return self.intent(self.dropout(h[:, 0])), self.slot(self.dropout(h))


def joint_loss(model, b):
    intent, slots = model(b.input_ids, b.attention_mask)
    return F.cross_entropy(intent, b.labels) + F.cross_entropy(slots.flatten(0, 1), b.tags.flatten(), ignore_index=-100)


def ours_loss(model, b):
    return multitask_loss(model, model(b), b)[0]


def train_pass(make_model, loss_fn, batch_list, fused, bf16=False):
    """Seconds for one pass of forward, loss, backward, AdamW step over `batch_list` (model built untimed)."""
    torch.manual_seed(0)
    model = make_model().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, fused=fused)

    def one_pass():
        for b in batch_list:
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                loss = loss_fn(model, b)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return timed(one_pass)


def main():
    args = parser(__doc__).parse_args()
    setup(args)
    aligner, split, labels, tags = snips_train_ids(64 if args.quick else 2048, args.data)
    path = weights_dir()
    make_ours = lambda: build_model(load_encoder(path), HeadConfig(len(labels), len(tags), dropout=DROPOUT),
                                        tags.names)
    make_theirs = lambda: JointBert(path, len(labels), len(tags))

    def make_ours_frozen_words():
        model = make_ours()
        model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
        return model
    orders = {"bucketed": batches(split, BATCH, random.Random(0)),
              "file": [collate(split, index) for index in file_order(len(split), BATCH)]}
    params, real_tokens = non_embedding_params(load_encoder(path)), sum(len(ids) for ids in split.input_ids)
    load = machine_info()["load_average"]
    print(f"{len(split)} sentences, {real_tokens} real tokens, batch {BATCH}, {len(orders['file'])} steps; "
          f"{params / 1e6:.2f}M non-embedding parameters; {torch.get_num_threads()} threads; load average {load}")

    train_pass(make_ours, ours_loss, orders["file"][:2], True)  # warm-up: first-call allocations
    train_pass(make_theirs, joint_loss, orders["file"][:2], False)
    contenders = {"ours/bucketed": lambda: train_pass(make_ours, ours_loss, orders["bucketed"], True),
                  "ours/file": lambda: train_pass(make_ours, ours_loss, orders["file"], True),
                  "theirs/file": lambda: train_pass(make_theirs, joint_loss, orders["file"], False),
                  "theirs/fused": lambda: train_pass(make_theirs, joint_loss, orders["file"], True),
                  "matmul GFLOP/s": matmul_gflops}
    skipped = bf16_skip_reason()
    if skipped:
        print(skipped)
    else:
        contenders.update({
            "ours/bf16": lambda: train_pass(make_ours, ours_loss, orders["bucketed"], True, bf16=True),
            "theirs/bf16": lambda: train_pass(make_theirs, joint_loss, orders["file"], True, bf16=True),
            "ours/bf16-frozen-words": lambda: train_pass(make_ours_frozen_words, ours_loss, orders["bucketed"], True,
                                                         bf16=True),
            "bf16 matmul GFLOP/s": lambda: matmul_gflops(dtype=torch.bfloat16)})
    values = alternate(contenders, args.repeats)

    machine = median(values["matmul GFLOP/s"])
    machine_bf16 = None if skipped else median(values["bf16 matmul GFLOP/s"])
    print(f"\nmachine matmul (1024^3): fp32 {machine:.1f}" + ("" if skipped else f", bf16 {machine_bf16:.1f}") +
          f" GFLOP/s (medians of {args.repeats} rounds); 'of machine' below is of the fp32 figure")
    print(f"{'run':<22} {'padding':>7} {'sent/s':>7} {'vs theirs':>9} {'vs fused':>8} {'vs ours':>7} "
          f"{'useful GFLOP/s':>14} {'of machine':>10}   (sent/s ratios, > 1: faster than theirs/file, theirs/fused, "
          "ours/bucketed)")
    theirs_seconds, fused_seconds = median(values["theirs/file"]), median(values["theirs/fused"])
    ours_seconds = median(values["ours/bucketed"])
    runs = {}
    for name in ("ours/bucketed", "ours/file", "theirs/file", "theirs/fused", "ours/bf16", "theirs/bf16",
                 "ours/bf16-frozen-words"):
        if name not in values:
            continue
        seconds = median(values[name])
        useful = 6 * params * real_tokens / seconds / 1e9
        runs[name] = {"padding": padding_fraction(orders["bucketed" if name.startswith("ours/b") else "file"]),
                      "sentences_per_s": len(split) / seconds, "ratio_vs_theirs": theirs_seconds / seconds,
                      "ratio_vs_theirs_fused": fused_seconds / seconds,
                      "ratio_vs_ours_bucketed": ours_seconds / seconds,
                      "useful_gflops": useful, "fraction_of_machine": useful / machine, "seconds": values[name]}
        r = runs[name]
        print(f"{name:<22} {r['padding']:>7.1%} {r['sentences_per_s']:>7.1f} {r['ratio_vs_theirs']:>9.2f} "
              f"{r['ratio_vs_theirs_fused']:>8.2f} {r['ratio_vs_ours_bucketed']:>7.2f} {useful:>14.1f} "
              f"{r['fraction_of_machine']:>10.1%}")
    write_results("train_step", {"sentences": len(split), "batch_size": BATCH, "lr": LR, "real_tokens": real_tokens,
                                 "non_embedding_params": params, "load_at_start": load,
                                 "matmul_gflops": {"median": machine, "all": values["matmul GFLOP/s"]},
                                 "bf16_matmul_gflops": None if skipped else {"median": machine_bf16,
                                                                             "all": values["bf16 matmul GFLOP/s"]},
                                 "skipped": skipped, "runs": runs}, args)


if __name__ == "__main__":
    main()
