"""The training loop, in plain PyTorch: one epoch of micro-batches, read top to bottom in `train_epoch`.

    for each epoch:  freeze / thaw -> AdamW over what trains          (optimizer_for_epoch)
                     the frozen encoder's features, computed once     (features_for_epoch)
        for each micro-batch:  forward -> masked multi-task loss -> backward
            every grad_accum micro-batches:  clip -> learning rate -> AdamW step
        evaluate dev (evaluation.py)

Everything that makes this a robust *run* (building from files, the run directory and its lock, resume,
Ctrl-C, atomic saves, torchrun's processes, the test split, results.json) is machinery/run.py, which
calls these functions; nothing here calls back. Under torchrun the loop changes in three explicit lines,
as in nanoGPT: the model is wrapped in DistributedDataParallel (`net`), gradients are exchanged only on
the micro-batch that ends a step (`no_sync` on the others), and a process's filler micro-batch counts 0.

References: Loshchilov & Hutter 2019 (AdamW); Howard & Ruder 2018 (ULMFiT: gradual unfreezing, warmup);
karpathy/nanoGPT train.py (the shape of the loop).
"""

import math
import random
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist

from .features import FeatureCache
from .freezing import encoder_frozen, frozen_in_epoch, make_optimizer, set_frozen, units
from .model import multitask_loss


def train_epoch(model, net, optimizer, micro_batches, schedule, step, cfg, bf16=False, features=None, ddp=False):
    """One epoch. `micro_batches`: this process's (source, batch, counts) in order (batching.shard);
    `net`: the model, or the model in DistributedDataParallel when `ddp`; `schedule(step)`: the learning-rate
    factor of optimizer step `step` (the steps taken before this epoch). Returns (steps taken, EpochStats)."""
    device = next(model.parameters()).device
    model.train()  # frozen units stay in eval mode (MultiTaskModel.train)
    stats = EpochStats()
    for i, (source, batch, counts) in enumerate(micro_batches):
        batch = batch.to(device)
        step_ends = (i + 1) % cfg.grad_accum == 0 or i + 1 == len(micro_batches)
        with net.no_sync() if ddp and not step_ends else nullcontext():  # DDP: exchange where a step ends
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                # A frozen backbone's features come from the cache: the encoder does not run at all.
                cached = features.hidden(source.name, "train", batch) if features else None
                outputs = net(batch.input_ids, batch.attention_mask, cached, shape_ids=batch.shape_ids)
                loss, parts = multitask_loss(model, outputs, batch, cfg.w_cls, cfg.w_ner)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(loss.item(), step)  # the run says what is saved
            if ddp:  # every process must send every watched gradient at each exchange: zeros, not none
                loss = loss * counts + 0.0 * sum(p.sum() for p in net.parameters() if p.requires_grad)
            if parts or ddp:  # a batch with no label the model can learn from has no gradient
                (loss / cfg.grad_accum).backward()
        if step_ends:
            trained = [p for group in optimizer.param_groups for p in group["params"]]
            if cfg.clip:
                torch.nn.utils.clip_grad_norm_(trained, cfg.clip)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * schedule(step)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
        if counts:
            stats.add(parts, batch)
    return step, stats


def optimizer_for_epoch(model, cfg, recipe, epoch, optimizer=None, log=print):
    """Freeze and thaw the units for `epoch` (the one place where what trains is set); a new AdamW, keeping
    each parameter's state, when what trains changed (gradual unfreezing), else `optimizer` itself."""
    set_frozen(model, frozen_in_epoch(model, cfg, epoch))
    now = {p for p in model.parameters() if p.requires_grad}
    before = {p for g in optimizer.param_groups for p in g["params"]} if optimizer else set()
    if now == before:
        return optimizer
    if optimizer is not None:
        thawed = [unit for unit, params in units(model).items() if any(p in now - before for p in params)]
        log(f"epoch {epoch}: thawed {', '.join(thawed)}")
    return make_optimizer(model, recipe.learning_rates, cfg.weight_decay, recipe.layer_decay, previous=optimizer)


def features_for_epoch(model, sources, features, log=print, file=None):
    """The feature cache while the whole encoder is frozen (built once; in `file` when given, else in memory),
    None as soon as any of it trains.

    Under torchrun every process encodes the whole of both splits. Each one trains on different sentences
    every epoch (the shards are re-drawn from each epoch's order), so caching only one epoch's share would not
    do; and encoding on rank 0 and broadcasting would leave the others idle for the same time, then send every
    hidden state. With a GPU per process, all of them encode at once in the time one would take alone.
    """
    if not encoder_frozen(model):
        return None
    return features or FeatureCache(model, sources, ("train", "dev"), log, file=file)


def lr_factor(step, total, warmup_steps):
    """Linear warmup from 0, then linear decay to 0: fresh heads start with small, noisy gradients."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total - step) / max(1, total - warmup_steps))


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class EpochStats:
    """Per-task training loss, throughput and padding of one epoch."""

    TASKS = ("cls", "ner")

    def __init__(self):
        self.start = time.perf_counter()
        self.sums, self.sentences, self.positions, self.real = {}, 0, 0, 0

    def add(self, parts, batch):
        for task, value in parts.items():
            self.sums[task] = self.sums.get(task, 0.0) + value.item() * len(batch.index)
        self.sentences += len(batch.index)
        self.positions += batch.attention_mask.numel()
        self.real += int(batch.attention_mask.sum())

    def summary(self, optimizer, device):
        """The epoch's numbers for the log and metrics.jsonl. Under torchrun every process saw a disjoint
        share of the epoch: the whole epoch is their sum (all-reduced on `device`)."""
        seconds = time.perf_counter() - self.start
        sums, sentences, positions, real = self.sums, self.sentences, self.positions, self.real
        if dist.is_initialized():
            totals = torch.tensor([sums.get(t, 0.0) for t in self.TASKS] + [float(t in sums) for t in self.TASKS]
                                  + [sentences, positions, real], dtype=torch.float64, device=device)
            dist.all_reduce(totals)
            totals = totals.tolist()
            sums = {t: totals[k] for k, t in enumerate(self.TASKS) if totals[len(self.TASKS) + k]}
            sentences, positions, real = totals[2 * len(self.TASKS):]
        losses = {task: total / sentences for task, total in sums.items()}
        return {"loss": sum(losses.values()), **{f"loss_{k}": v for k, v in losses.items()},
                "lr": {g["name"]: g["lr"] for g in optimizer.param_groups}, "train_seconds": seconds,
                "sentences_per_second": sentences / seconds, "padding": 1 - real / max(1, positions)}
