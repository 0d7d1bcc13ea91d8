"""The training loop, in plain PyTorch. `train` reads top to bottom:

    build: data -> vocabularies -> encoder + heads -> (LoRA)
    for each epoch: freeze/thaw -> AdamW over what trains -> (feature cache while the backbone is frozen)
        for each batch: forward -> masked multi-task loss -> backward -> clip -> step -> lr schedule
        evaluate dev -> keep the best epoch -> save the run directory atomically -> early stop
    finally: reload the best checkpoint from disk and evaluate the test split

Machinery (loading data, the feature cache, resume state, atomic saves, Ctrl-C) lives in `machinery/` and is
called from here by name, so the lines a learner came for stay in one screen of `train`.
"""

import math
import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .evaluation import autocast, evaluate_sources, format_scores, selection_score
from .freezing import frozen_in_epoch, make_optimizer, parameter_table, set_frozen, units
from .lora import add_lora
from .machinery.batches import batches, seeded_rng
from .machinery.checkpoint import MODEL_FILES, atomic_directory, load_checkpoint, write_json, write_logs, write_model
from .machinery.errors import UserError
from .machinery.features import FeatureCache, backbone_frozen
from .machinery.interrupts import ctrl_c_between_batches, stop_message
from .machinery.report import entity_tables
from .machinery.resume import STATE_DIR, claim_run_directory, load_state, read_progress, save_state
from .machinery.rundir import RunLock, write_marker
from .machinery.sources import check_tasks, encode_sources, load_sources, vocabularies
from .model import HeadConfig, MultiTaskModel, multitask_loss
from .sampling import interleave, source_probabilities
from .tokenization import Aligner
from .weights import load_encoder, resolve_weights


def train(cfg, log=print, resume=False):
    """Train as configured (or continue the interrupted run in cfg.out when `resume`).

    Returns {"best_epoch", "dev": best dev scores, "test": test scores of the best checkpoint or None}.
    """
    cfg.check()
    model, sources, weights_dir = build(cfg, log)  # every input file is read and checked here
    set_frozen(model, frozen_in_epoch(model, cfg, 1))  # checks --freeze against this model, too
    if nothing_can_learn(model, cfg, log):
        return {"best_epoch": None, "dev": evaluate_sources(model, sources, "dev"), "test": test_scores(model, sources)}
    out, device = claim_run_directory(cfg, resume, sources), next(model.parameters()).device
    progress = Progress()
    with RunLock(out), stop_message(progress, out), ctrl_c_between_batches() as check_interrupt:
        claim_run_directory(cfg, resume, sources)  # again: another process may have written --out before we locked
        optimizer = progress.resume(out, model, cfg, log) if resume else None
        set_frozen(model, frozen_in_epoch(model, cfg, progress.epoch + 1))
        log(parameter_table(model, learning_rates(cfg)))
        total_steps = steps_per_epoch(sources, cfg) * cfg.n_epochs
        warmup_steps = max(1, round(cfg.warmup * total_steps))
        features = None
        for epoch in range(progress.epoch + 1, cfg.n_epochs + 1):
            optimizer = optimizer_for_epoch(model, cfg, epoch, optimizer, log)
            features = features_for_epoch(model, sources, features, log)
            model.train()
            stats = EpochStats(epoch)
            train_batches = epoch_batches(sources, cfg, epoch)
            for i, (source, batch) in enumerate(train_batches):
                batch = batch.to(device)
                with autocast(device):
                    hidden = features.hidden(source.name, "train", batch) if features else \
                        model.bert(batch.input_ids, batch.attention_mask)
                    outputs = model.run_heads(hidden, batch.attention_mask)
                    loss, parts = multitask_loss(outputs, batch.labels, batch.tags, cfg.w_cls, cfg.w_ner)
                stop_if_not_finite(loss, cfg, epoch, progress.step)
                if parts:  # a batch whose labels were all unseen in training has nothing to learn from
                    (loss / cfg.grad_accum).backward()
                if (i + 1) % cfg.grad_accum == 0 or i + 1 == len(train_batches):
                    if cfg.clip:
                        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                                       cfg.clip)
                    for group in optimizer.param_groups:
                        group["lr"] = group["base_lr"] * lr_factor(progress.step, total_steps, warmup_steps)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    progress.step += 1
                stats.add(parts, batch)
                check_interrupt()
            dev = evaluate_sources(model, sources, "dev", features)
            record = progress.finish_epoch(epoch, stats.summary(optimizer), dev)
            save_epoch(model, optimizer, progress, meta(cfg, sources, weights_dir, dev))
            log(epoch_line(record, cfg))
            check_interrupt()
            if cfg.patience and epoch - progress.best_epoch >= cfg.patience:
                log(f"early stop: no better dev score for {cfg.patience} epochs")
                break
        results = {"best_epoch": progress.best_epoch, "dev": progress.history[progress.best_epoch - 1]["dev"],
                   "test": test_scores(load_checkpoint(out)[0].to(device), sources)}  # as infer.py will see it
        if results["test"] is not None:
            log(f"test (best epoch {progress.best_epoch}): {format_scores(results['test'])}")
            if table := entity_tables(results["test"], [s.name for s in sources]):
                log(f"test entities by type:\n{table}")
        write_json(out / "results.json", results)
        write_marker(out, finished=True)  # --resume now refuses: the run is complete
    return results


# --- building the run -----------------------------------------------------------------------------------

def build(cfg, log):
    """(model on its device, data sources with their encoded splits, the weights directory)."""
    seed_everything(cfg.seed)
    sources = load_sources(cfg.data)
    weights_dir = resolve_weights(cfg.weights)
    encoder = load_encoder(weights_dir)
    aligner = Aligner.from_checkpoint(weights_dir, encoder.config.vocab_size)
    positions = encoder.config.max_position_embeddings
    if cfg.max_len > positions:
        raise UserError(f"--max-len {cfg.max_len}: the model in {weights_dir} has only {positions} positions")
    vocab = vocabularies(sources)
    check_tasks(sources, cfg)
    # Evaluation never cuts a sentence short: only the model's position table limits it.
    encode_sources(sources, aligner, vocab, cfg, positions, log)
    heads = HeadConfig(len(vocab.labels or []), len(vocab.tags or []), cfg.pooling, cfg.dropout)
    model = MultiTaskModel(encoder, heads)
    if cfg.lora:  # wraps the target Linears; freezing.py then keeps every base encoder weight frozen
        add_lora(encoder, cfg.lora, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
    return model.to(cfg.torch_device()), sources, weights_dir


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def learning_rates(cfg):
    return {"backbone": cfg.lr_backbone, "heads": cfg.lr_heads, "adapters": cfg.lr_lora}


def nothing_can_learn(model, cfg, log):
    if any(p.requires_grad for p in model.parameters()) or cfg.unfreeze_schedule:
        return False
    log("--freeze all: nothing can learn, so this only evaluates the untrained heads on the backbone")
    return True


# --- one epoch's pieces ----------------------------------------------------------------------------------

def optimizer_for_epoch(model, cfg, epoch, optimizer, log):
    """Freeze and thaw for `epoch`; a new AdamW (keeping each parameter's state) when what trains changed."""
    set_frozen(model, frozen_in_epoch(model, cfg, epoch))
    now = {p for p in model.parameters() if p.requires_grad}
    before = {p for g in optimizer.param_groups for p in g["params"]} if optimizer else set()
    if now == before:
        return optimizer
    if optimizer is not None:
        thawed = [unit for unit, params in units(model).items() if any(p in now - before for p in params)]
        log(f"epoch {epoch}: thawed {', '.join(thawed)}")
    return make_optimizer(model, learning_rates(cfg), cfg.weight_decay, previous=optimizer)


def features_for_epoch(model, sources, features, log):
    """The feature cache while the whole backbone is frozen (built once), None as soon as any of it trains."""
    if not backbone_frozen(model):
        return None
    return features or FeatureCache(model.bert, sources, ("train", "dev"), log)


def epoch_batches(sources, cfg, epoch):
    """The epoch's (source, batch) pairs: each source's batches bucketed by length, then interleaved."""
    per_source = [batches(s.ids["train"], cfg.batch_size, seeded_rng(cfg.seed, epoch, i))
                  for i, s in enumerate(sources)]
    probabilities = None if cfg.sampling == "proportional" else \
        source_probabilities([len(s.splits.train) for s in sources], cfg.sampling, cfg.temperature)
    order = interleave(per_source, probabilities, seeded_rng(cfg.seed, epoch, len(sources)))
    return [(sources[i], batch) for i, batch in order]


def steps_per_epoch(sources, cfg):
    n_batches = sum(math.ceil(len(s.ids["train"]) / cfg.batch_size) for s in sources)
    return math.ceil(n_batches / cfg.grad_accum)


def lr_factor(step, total, warmup_steps):
    """Linear warmup from 0, then linear decay to 0: fresh heads start with small, noisy gradients."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total - step) / max(1, total - warmup_steps))


def stop_if_not_finite(loss, cfg, epoch, step):
    if not math.isfinite(loss.item()):
        raise UserError(f"the loss became {loss.item()} at epoch {epoch}, step {step}: training stopped; "
                        + (f"the last good checkpoint in {cfg.out} is kept" if epoch > 1 else
                           "no epoch had finished, so nothing was saved")
                        + " (check the learning rates and loss weights)")


class EpochStats:
    """Per-task training loss, throughput and padding of one epoch."""

    def __init__(self, epoch):
        self.epoch, self.start = epoch, time.perf_counter()
        self.sums, self.sentences, self.positions, self.real = {}, 0, 0, 0

    def add(self, parts, batch):
        for task, value in parts.items():
            self.sums[task] = self.sums.get(task, 0.0) + value.item() * len(batch.index)
        self.sentences += len(batch.index)
        self.positions += batch.attention_mask.numel()
        self.real += int(batch.attention_mask.sum())

    def summary(self, optimizer):
        seconds = time.perf_counter() - self.start
        losses = {task: total / self.sentences for task, total in self.sums.items()}
        return {"loss": sum(losses.values()), **{f"loss_{k}": v for k, v in losses.items()},
                "lr": optimizer.param_groups[0]["lr"], "train_seconds": seconds,
                "sentences_per_second": self.sentences / seconds, "padding": 1 - self.real / max(1, self.positions)}


def epoch_line(record, cfg):
    return (f"epoch {record['epoch']:>2}/{cfg.n_epochs}  loss {record['loss']:.4f}  dev {format_scores(record['dev'])}"
            f"  {record['sentences_per_second']:.0f} sent/s  padding {record['padding']:.1%}  "
            f"{record['seconds']:.1f}s" + ("  *saved" if record["best"] else ""))


# --- what a run keeps ------------------------------------------------------------------------------------

@dataclass
class Progress:
    """Where a run stands: what the resume state holds besides tensors."""

    epoch: int = 0
    step: int = 0
    best: float = -1.0
    best_epoch: int = 0
    history: list = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def finish_epoch(self, epoch, summary, dev):
        score = selection_score(dev)
        improved = score > self.best
        if improved:
            self.best, self.best_epoch = score, epoch
        record = {"epoch": epoch, **summary, "dev": dev, "select": score, "best": improved,
                  "seconds": time.perf_counter() - self.started}
        self.history.append(record)
        self.epoch, self.started = epoch, time.perf_counter()
        return record

    def to_json(self):
        return {"epoch": self.epoch, "step": self.step, "best": self.best, "best_epoch": self.best_epoch,
                "history": self.history}



    def resume(self, out, model, cfg, log):
        """Continue the interrupted run in `out`: its progress, weights, AdamW state and random states come
        back; returns that AdamW."""
        saved = read_progress(out)
        for key in ("epoch", "step", "best", "best_epoch", "history"):
            setattr(self, key, saved[key])
        # The optimizer of the last finished epoch: what it trained is a function of the settings and epoch.
        set_frozen(model, frozen_in_epoch(model, cfg, self.epoch))
        optimizer = make_optimizer(model, learning_rates(cfg), cfg.weight_decay)
        load_state(out, model, optimizer, saved)
        log(f"resuming after epoch {self.epoch} (best dev score {self.best:.4f} at epoch {self.best_epoch})")
        return optimizer


def meta(cfg, sources, weights_dir, dev):
    """The "minimtl" section of a checkpoint's config.json: what inference needs, and where it came from."""
    labels = next((s.labels.names for s in sources if s.labels), None)
    tags = next((s.tags.names for s in sources if s.tags), None)
    return {"labels": labels, "tags": tags, "max_len": cfg.max_len, "dev": dev, "weights": str(weights_dir),
            "sources": {s.name: s.tasks for s in sources}, "train_args": asdict(cfg),
            "data_sha256": {s.name: s.sha256 for s in sources}}


def save_epoch(model, optimizer, progress, checkpoint_meta):
    """One atomic swap of the run directory (--out) per epoch: the best model (new, or carried over
    unchanged), the resumable state and the logs always describe the same finished epoch."""
    improved = progress.best_epoch == progress.epoch
    settings = checkpoint_meta["train_args"]
    with atomic_directory(settings["out"], carry=() if improved else MODEL_FILES) as tmp:
        if improved:
            write_model(tmp, model, {**checkpoint_meta, "epoch": progress.epoch}, checkpoint_meta["weights"])
        save_state(tmp / STATE_DIR, model, optimizer,
                   {**progress.to_json(), "config": settings, "data_sha256": checkpoint_meta["data_sha256"]})
        write_marker(tmp, finished=False)
        write_logs(tmp, progress.history, progress.best_epoch)


def test_scores(model, sources):
    """Test metrics of every source that has a test split, or None when none has."""
    return evaluate_sources(model, sources, "test") or None
