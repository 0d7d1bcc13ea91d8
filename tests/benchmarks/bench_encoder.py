"""Encoder forward speed: our hand-written Bert vs transformers.BertModel, same weights, same ids.

Both load the default weights (all-MiniLM-L6-v2) from the same directory (transformers with its default
attn_implementation and no pooler, since ours has none), run in eval mode under torch.inference_mode(), and
read the first 4096 SNIPS training sentences tokenized by our WordTokenizer (identical ids) in batches of 64, in
one process, alternating: ours, theirs, ours, theirs, ... for --repeats rounds. Three batch orders:
  file      the sentences in file order
  sorted    batches.batch_indices(lengths, 64), no rng: sorted by length (how we evaluate)
  bucketed  batch_indices(lengths, 64, rng): training-style length buckets in shuffled order
Reported per order: median sentences/s of both and the ratio ours/theirs; useful GFLOP/s
(2 x non-embedding parameters x real, non-pad tokens per second) as a fraction of the machine's fp32 matmul
GFLOP/s, which is measured (1024x1024 matmuls) in every round of the same run.

    python tests/benchmarks/bench_encoder.py [--quick] [--repeats N] [--threads N]

Writes tests/benchmarks/results/encoder.json (encoder.quick.json with --quick: 128 sentences, 2 rounds).
"""

import random

import torch

from common import (alternate, padding_fraction, file_order, machine_info, matmul_gflops, median, non_embedding_params, parser,
                    quiet_transformers, setup, snips_train_ids, timed, weights_dir, write_results)
from minimtl import load_encoder
from minimtl.batching import batch_indices, collate

BATCH = 64


def forward_all(model, batch_list, hf):
    with torch.inference_mode():
        for b in batch_list:
            if hf:
                model(input_ids=b.input_ids, attention_mask=b.attention_mask)
            else:
                model(b.input_ids, b.attention_mask)


def main():
    args = parser(__doc__).parse_args()
    setup(args)
    aligner, split, _, _ = snips_train_ids(128 if args.quick else 4096, args.data)
    lengths = [len(ids) for ids in split.input_ids]
    orders = {"file": file_order(len(split), BATCH), "sorted": batch_indices(lengths, BATCH),
              "bucketed": batch_indices(lengths, BATCH, random.Random(0))}
    batches = {name: [collate(split, index) for index in order] for name, order in orders.items()}

    ours = load_encoder(weights_dir()).eval()
    theirs = quiet_transformers().BertModel.from_pretrained(weights_dir(), add_pooling_layer=False).eval()
    b = batches["file"][0]
    with torch.inference_mode():  # the same function? (real positions only)
        mask = b.attention_mask.bool()
        diff = (ours(b.input_ids, b.attention_mask) - theirs(input_ids=b.input_ids, attention_mask=b.attention_mask)
                .last_hidden_state)[mask].abs().max().item()
    params, real_tokens, load = non_embedding_params(ours), sum(lengths), machine_info()["load_average"]
    print(f"{len(split)} sentences, {real_tokens} real tokens, batch {BATCH}; {params / 1e6:.2f}M non-embedding "
          f"parameters; transformers attn_implementation={theirs.config._attn_implementation}; "
          f"max |ours - theirs| = {diff:.2e}; {torch.get_num_threads()} threads; load average {load}")

    for model, hf in ((ours, False), (theirs, True)):  # warm-up: first-call allocations, kernel selection
        forward_all(model, batches["sorted"][:4], hf)
    contenders = {}
    for name, batch_list in batches.items():
        contenders[f"ours/{name}"] = lambda bl=batch_list: timed(lambda: forward_all(ours, bl, False))
        contenders[f"theirs/{name}"] = lambda bl=batch_list: timed(lambda: forward_all(theirs, bl, True))
    contenders["matmul GFLOP/s"] = matmul_gflops
    values = alternate(contenders, args.repeats)

    machine = median(values["matmul GFLOP/s"])
    print(f"\nmachine fp32 matmul (1024^3): {machine:.1f} GFLOP/s (median of {args.repeats} rounds)")
    print(f"{'order':<9} {'padding':>7} {'ours sent/s':>11} {'theirs sent/s':>13} {'ratio':>6} "
          f"{'ours useful GFLOP/s':>19} {'of machine':>10}   (ratio = ours/theirs sent/s, > 1: ours faster)")
    results = {}
    for name, batch_list in batches.items():
        t_ours, t_theirs = median(values[f"ours/{name}"]), median(values[f"theirs/{name}"])
        useful = 2 * params * real_tokens / t_ours / 1e9
        row = {"padding": padding_fraction(batch_list), "ours_sentences_per_s": len(split) / t_ours,
               "theirs_sentences_per_s": len(split) / t_theirs, "ratio": t_theirs / t_ours,
               "ours_useful_gflops": useful, "theirs_useful_gflops": 2 * params * real_tokens / t_theirs / 1e9,
               "ours_fraction_of_machine": useful / machine,
               "seconds": {"ours": values[f"ours/{name}"], "theirs": values[f"theirs/{name}"]}}
        results[name] = row
        print(f"{name:<9} {row['padding']:>7.1%} {row['ours_sentences_per_s']:>11.0f} "
              f"{row['theirs_sentences_per_s']:>13.0f} {row['ratio']:>6.2f} {useful:>19.1f} "
              f"{row['ours_fraction_of_machine']:>10.1%}")
    write_results("encoder", {"sentences": len(split), "batch_size": BATCH, "real_tokens": real_tokens,
                              "non_embedding_params": params, "max_abs_diff": diff, "load_at_start": load,
                              "attn_implementation": theirs.config._attn_implementation,
                              "matmul_gflops": {"median": machine, "all": values["matmul GFLOP/s"]},
                              "orders": results}, args)


if __name__ == "__main__":
    main()
