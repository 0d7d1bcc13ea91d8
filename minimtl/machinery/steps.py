"""One training step and one scoring pass as a run computes them, around the lesson's loop (training.py).

What the lesson's `train_epoch` leaves to its caller: where a micro-batch's hidden states come from (the
encoder, or the frozen backbone's feature cache), the precision of the products (bf16 autocast), and
torchrun's gradient exchange. Each is a few explicit lines in `step_loss`.
"""

import copy
import math
from contextlib import nullcontext

import torch
import torch.distributed as dist

from ..evaluation import EVAL_BATCH
from ..extensions.features import CachedModel
from ..extensions.precision import forward_in
from ..model import multitask_loss
from .distributed import shard
from .progress_line import ProgressLine, counted


def labelled(micro_batches, cfg, ddp):
    """This process's micro-batches of an epoch (distributed.shard), each noting what a step needs besides its
    tensors: its source and split (what the feature cache looks up), whether it counts (a torchrun filler does
    not) and whether it ends an optimizer step (when torchrun's processes exchange gradients)."""
    mine = shard(micro_batches, ddp.rank, ddp.world)
    out = []
    for i, (source, batch, counts) in enumerate(mine):
        batch = copy.copy(batch)  # a filler is the last batch again, noted apart
        batch.source, batch.split, batch.counts = source.name, "train", counts
        batch.ends_step = (i + 1) % cfg.grad_accum == 0 or i + 1 == len(mine)
        out.append(batch)
    return out


def step_loss(model, net, cfg, bf16, ddp):
    """The loss of one training micro-batch as this run computes it (training.train_epoch's `loss_of`): through
    `net` (the model, the heads on the feature cache, or either in DistributedDataParallel when `ddp`), under
    bf16 autocast when `bf16`. Under torchrun the loop changes in two explicit places, as in nanoGPT: gradients
    are exchanged only on the micro-batch that ends a step (`no_sync` on the others: DDP decides at the forward
    pass), and a filler counts 0 while still sending a gradient for every watched parameter."""
    device = next(model.parameters()).device

    def loss_of(batch):
        with net.no_sync() if ddp and not batch.ends_step else nullcontext():
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                loss, parts = multitask_loss(model, net(batch), batch, cfg.w_cls, cfg.w_ner)
        if ddp:  # every process must send every watched gradient at each exchange: zeros, not none
            loss = loss * batch.counts + 0.0 * sum(p.sum() for p in net.parameters() if p.requires_grad)
            parts = parts if batch.counts else {}
        return loss, parts
    return loss_of


def scoring(model, features=None):
    """How a run scores a split (evaluation.head_outputs' `forward`): on the feature cache when it has one;
    in bf16 on CUDA, which halves memory traffic, and in float32 on a CPU whatever precision training ran in,
    so that scores and predictions are the same on every CPU, bf16 hardware or not."""
    device = next(model.parameters()).device
    return forward_in(CachedModel(model, features) if features else model, device,
                      "bf16" if device.type == "cuda" else "fp32")


def shown_scoring(model, sources, split, log, quiet, features=None):
    """`scoring(model, features)`, its batches over `split` of every source shown going by as one progress line:
    on a terminal, or in plain lines when the pass is long (progress_line.py)."""
    total = sum(math.ceil(len(s.ids[split]) / EVAL_BATCH) for s in sources if split in s.ids)
    return counted(scoring(model, features), ProgressLine(total, f"scoring {split}", log, quiet))


def summed(stats, device):
    """The epoch's stats of the whole job: under torchrun every process saw a disjoint share of the epoch, and
    the whole is their sum (all-reduced on `device`)."""
    if not dist.is_initialized():
        return stats
    tasks = ("cls", "ner")
    totals = torch.tensor([stats.sums.get(t, 0.0) for t in tasks] + [float(t in stats.sums) for t in tasks]
                          + [stats.sentences, stats.positions, stats.real], dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    totals = totals.tolist()
    stats.sums = {t: totals[k] for k, t in enumerate(tasks) if totals[len(tasks) + k]}
    stats.sentences, stats.positions, stats.real = totals[2 * len(tasks):]
    return stats


def precision_for_epoch(recipe, cfg, device, cached, before, log):
    """Whether this epoch's training steps run under bf16 autocast; said when it changes. Scoring keeps its own
    precision (`scoring`)."""
    bf16 = recipe.bf16_cached if cached else recipe.bf16
    if bf16 != before:
        log(f"training steps in {'bf16 autocast' if bf16 else 'float32'} on {device.type} "
            f"(--precision {cfg.precision})")
    return bf16
