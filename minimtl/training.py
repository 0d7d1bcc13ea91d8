"""The training loop, in plain PyTorch, read top to bottom: `fit` runs the epochs, `train_epoch` the steps.

    for each epoch:  freeze / thaw -> AdamW over what trains          (optimizer_for_epoch)
        for each micro-batch:  forward -> masked multi-task loss -> backward
            every grad_accum micro-batches:  clip -> learning rate -> AdamW step
        score dev (evaluation.py); keep the weights of the best epoch

machinery/run.py runs the same steps as a robust run (resume, Ctrl-C, a save per epoch, several processes)
and hands `train_epoch` its own `loss_of` where a step computes more than the plain forward pass.

References: Loshchilov & Hutter 2019 (AdamW); Howard & Ruder 2018 (ULMFiT: gradual unfreezing, warmup);
karpathy/nanoGPT train.py (the shape of the loop).
"""

import copy
import math
import random
import time
from functools import partial

import numpy as np
import torch

from .batching import batches, seeded_rng
from .evaluation import evaluate, format_scores, selection_score
from .freezing import frozen_in_epoch, make_optimizer, set_frozen, units
from .model import multitask_loss


def fit(model, source, cfg, log=print):
    """Train `model` on `source.ids["train"]` (batching.SplitIds) for `cfg.epochs` epochs, score dev after each,
    and keep the weights of the best epoch: returns (that epoch, its dev scores)."""
    seed_everything(cfg.seed)
    total = math.ceil(math.ceil(len(source.ids["train"]) / cfg.batch_size) / cfg.grad_accum) * cfg.epochs
    schedule = partial(lr_factor, total=total, warmup_steps=max(1, round(cfg.warmup * total)))
    rates = {"backbone": cfg.lr_backbone, "heads": cfg.lr_heads}
    optimizer, step, best = None, 0, (-math.inf, 0, None, None)  # (score, epoch, dev scores, weights)
    for epoch in range(1, cfg.epochs + 1):
        optimizer = optimizer_for_epoch(model, cfg, rates, cfg.layer_decay, epoch, optimizer, log)
        train = batches(source.ids["train"], cfg.batch_size, seeded_rng(cfg.seed, epoch))
        step, stats = train_epoch(model, optimizer, train, schedule, step, cfg)
        dev = evaluate(model, source, "dev")
        log(f"epoch {epoch}/{cfg.epochs}  loss {stats.summary(optimizer)['loss']:.4f}  dev {format_scores(dev)}")
        if (score := selection_score(dev)) > best[0]:
            best = (score, epoch, dev, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[3])
    return best[1], best[2]


def train_epoch(model, optimizer, micro_batches, schedule, step, cfg, loss_of=None):
    """One epoch: (steps taken so far, EpochStats). `schedule(step)`: the learning-rate factor of optimizer step
    `step`; `loss_of(batch)` -> (loss, {task: loss}): by default the masked multi-task loss of the model."""
    loss_of = loss_of or (lambda batch: multitask_loss(model, model(batch), batch, cfg.w_cls, cfg.w_ner))
    device = next(model.parameters()).device
    model.train()  # frozen units stay in eval mode (MultiTaskModel.train)
    stats = EpochStats()
    for i, batch in enumerate(micro_batches):
        batch = batch.to(device)
        loss, parts = loss_of(batch)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(loss.item(), step)  # the run says what is saved
        if loss.requires_grad:  # a batch with no label the model can learn from has no gradient
            (loss / cfg.grad_accum).backward()
        if (i + 1) % cfg.grad_accum == 0 or i + 1 == len(micro_batches):
            optimizer_step(optimizer, schedule(step), cfg.clip)
            step += 1
        stats.add(parts, batch)
    return step, stats


def optimizer_step(optimizer, factor, clip):
    """Clip the gradients' norm, set each group's learning rate to its peak times `factor`, step, and clear."""
    trained = [p for group in optimizer.param_groups for p in group["params"]]
    if clip:
        torch.nn.utils.clip_grad_norm_(trained, clip)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def optimizer_for_epoch(model, cfg, learning_rates, layer_decay, epoch, optimizer=None, log=print):
    """Freeze and thaw the units for `epoch` (the one place where what trains is set); a new AdamW, keeping each
    parameter's state, when that changed (gradual unfreezing), else `optimizer` itself."""
    set_frozen(model, frozen_in_epoch(model, cfg, epoch))
    now = {p for p in model.parameters() if p.requires_grad}
    before = {p for g in optimizer.param_groups for p in g["params"]} if optimizer else set()
    if now == before:
        return optimizer
    if optimizer is not None:
        thawed = [unit for unit, params in units(model).items() if any(p in now - before for p in params)]
        log(f"epoch {epoch}: thawed {', '.join(thawed)}")
    return make_optimizer(model, learning_rates, cfg.weight_decay, layer_decay, previous=optimizer)


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

    def __init__(self):
        self.start = time.perf_counter()
        self.sums, self.sentences, self.positions, self.real = {}, 0, 0, 0

    def add(self, parts, batch):
        """Count a batch that taught something (`parts`, its losses per task, not empty)."""
        if not parts:
            return
        for task, value in parts.items():
            self.sums[task] = self.sums.get(task, 0.0) + value.item() * len(batch.index)
        self.sentences += len(batch.index)
        self.positions += batch.attention_mask.numel()
        self.real += int(batch.attention_mask.sum())

    def summary(self, optimizer):
        """The epoch's numbers for the log and metrics.jsonl."""
        seconds = time.perf_counter() - self.start
        losses = {task: total / self.sentences for task, total in self.sums.items()}
        return {"loss": sum(losses.values()), **{f"loss_{k}": v for k, v in losses.items()},
                "lr": {g["name"]: g["lr"] for g in optimizer.param_groups}, "train_seconds": seconds,
                "sentences_per_second": self.sentences / seconds, "padding": 1 - self.real / max(1, self.positions)}
