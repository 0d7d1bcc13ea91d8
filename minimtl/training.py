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
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .evaluation import evaluate_sources, format_scores, selection_score
from .freezing import frozen_in_epoch, make_optimizer, parameter_table, set_frozen, units
from .lora import add_lora
from .machinery.batches import batches, seeded_rng
from .machinery.checkpoint import MODEL_FILES, atomic_directory, load_checkpoint, write_json, write_logs, write_model
from .machinery.distributed import Processes
from .errors import UserError
from .machinery.features import FeatureCache, backbone_frozen
from .machinery.interrupts import ctrl_c_between_batches, stop_message
from .machinery.report import entity_tables
from .machinery.resume import STATE_DIR, claim_run_directory, load_state, read_progress, save_state
from .machinery.rundir import RunLock, write_marker
from .machinery.sources import check_tasks, encode_sources, load_sources, vocabularies
from .model import MultiTaskModel, multitask_loss
from .sampling import interleave, source_probabilities
from .tokenization import Aligner
from .machinery.download import resolve_weights
from .weights import load_encoder, trained_pooling


def train(cfg, log=print, resume=False, ddp=Processes()):
    """Train as configured (or continue the interrupted run in cfg.out when `resume`).

    `ddp`: this process's place in a torchrun job (machinery/distributed.py); the default is a plain run.
    Returns {"best_epoch", "dev": best dev scores, "test": test scores of the best checkpoint or None}; in a
    torchrun job only rank 0 evaluates the test split, and the others return None there.
    """
    cfg.check()
    log = log if ddp.main else lambda line: None  # one process speaks for the job
    model, sources, weights_dir = build(cfg, log)  # every input file is read and checked here
    set_frozen(model, frozen_in_epoch(model, cfg, 1))  # checks --freeze against this model, too
    if nothing_can_learn(model, cfg, log):
        return {"best_epoch": None, "dev": evaluate_sources(model, sources, "dev"), "test": test_scores(model, sources)}
    out, device = Path(cfg.out), next(model.parameters()).device
    if ddp.main or resume:  # only rank 0 writes; resuming, every process reads the saved state
        claim_run_directory(cfg, resume, sources, ddp.world)
    progress = Progress()
    with ddp.main_only(RunLock(out)), stop_message(progress, out, ddp.command()), \
            ddp.peers_watched(progress, out), ctrl_c_between_batches(ddp.stop_signals) as check_interrupt:
        if ddp.main:
            claim_run_directory(cfg, resume, sources, ddp.world)  # again: another process may have written --out
        ddp.barrier()  # the others go on once rank 0 holds the run directory
        optimizer = progress.resume(out, model, cfg, log) if resume else None
        set_frozen(model, frozen_in_epoch(model, cfg, progress.epoch + 1))
        log(parameter_table(model, learning_rates(cfg), cfg.backbone_decay))
        if ddp.launched:
            log(f"global batch: {cfg.batch_size} sentences x {ddp.world} processes x {cfg.grad_accum} accumulated "
                f"= {global_batch(cfg, ddp)} per optimizer step")
        total_steps = steps_per_epoch(sources, cfg, ddp.world) * cfg.n_epochs  # optimizer steps of the whole job
        warmup_steps = max(1, round(cfg.warmup * total_steps))
        features, bf16 = None, None
        for epoch in range(progress.epoch + 1, cfg.n_epochs + 1):
            optimizer = optimizer_for_epoch(model, cfg, epoch, optimizer, log)
            features = features_for_epoch(model, sources, features, log)
            bf16 = precision_for_epoch(cfg, device, features is not None, bf16, log)
            net = ddp.wrap(TrainingForward(model, cached=features is not None))  # DDP sees what trains now
            model.train()
            ddp.seed_epoch(cfg.seed, epoch)
            stats = EpochStats(epoch)
            train_batches = ddp.shard(epoch_batches(sources, cfg, epoch))  # all of them in a plain run
            for i, (source, batch, counts) in enumerate(train_batches):
                batch = batch.to(device)
                step_ends = (i + 1) % cfg.grad_accum == 0 or i + 1 == len(train_batches)
                with ddp.exchange_gradients(net, step_ends):  # DDP averages gradients only where a step ends
                    with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                        cached = features.hidden(source.name, "train", batch) if features else None
                        outputs = net(batch.input_ids, batch.attention_mask, cached)
                        loss, parts = multitask_loss(model, outputs, batch, cfg.w_cls, cfg.w_ner)
                    stop_if_not_finite(loss, cfg, epoch, progress.step)
                    # A batch whose labels were all unseen in training has nothing to learn from; under DDP
                    # it still joins the gradient exchange, with a zero loss.
                    if parts or ddp.launched:
                        (ddp.loss_to_differentiate(loss, net, counts) / cfg.grad_accum).backward()
                if step_ends:
                    if cfg.clip:
                        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                                       cfg.clip)
                    for group in optimizer.param_groups:
                        group["lr"] = group["base_lr"] * lr_factor(progress.step, total_steps, warmup_steps)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    progress.step += 1
                if counts:
                    stats.add(parts, batch)
                check_interrupt()
            dev = evaluate_sources(model, sources, "dev", features, ddp)
            record = progress.finish_epoch(epoch, stats.summary(optimizer, ddp), dev)
            if ddp.main:
                save_epoch(model, optimizer, progress, meta(cfg, sources, weights_dir, dev, ddp))
            log(epoch_line(record, cfg))
            check_interrupt()
            if cfg.patience and epoch - progress.best_epoch >= cfg.patience:
                log(f"early stop: no better dev score for {cfg.patience} epochs")
                break
        results = {"best_epoch": progress.best_epoch, "dev": progress.history[progress.best_epoch - 1]["dev"],
                   "test": None}
        if ddp.main:  # the test split once, by rank 0, from the checkpoint as infer.py will see it
            results["test"] = test_scores(load_checkpoint(out)[0].to(device), sources)
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
    positions = encoder.config.max_tokens
    if cfg.max_len > positions:
        raise UserError(f"--max-len {cfg.max_len}: the model in {weights_dir} has only {positions} positions")
    vocab = vocabularies(sources)
    check_tasks(sources, cfg)
    # Evaluation never cuts a sentence short: only the model's position table limits it.
    encode_sources(sources, aligner, vocab, cfg, positions, log)
    heads = cfg.heads(len(vocab.labels or []), len(vocab.tags or []), encoder.config, trained_pooling(weights_dir))
    model = MultiTaskModel(encoder, heads, vocab.tags.names if vocab.tags else None)
    if cfg.lora:  # wraps the target Linears; freezing.py then keeps every base encoder weight frozen
        add_lora(encoder, cfg.lora, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
    return model.to(cfg.torch_device()), sources, weights_dir


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def learning_rates(cfg):
    return {"backbone": cfg.backbone_lr, "heads": cfg.lr_heads, "adapters": cfg.lr_lora}


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
    return make_optimizer(model, learning_rates(cfg), cfg.weight_decay, cfg.backbone_decay, previous=optimizer)


def features_for_epoch(model, sources, features, log):
    """The feature cache while the whole backbone is frozen (built once), None as soon as any of it trains.

    Under torchrun every process encodes the whole of both splits. Each one trains on different sentences
    every epoch (the shards are re-drawn from each epoch's order), so caching only one epoch's share would not
    do; and encoding on rank 0 and broadcasting would leave the others idle for the same time, then send every
    hidden state. With a GPU per process, all of them encode at once in the time one would take alone.
    """
    if not backbone_frozen(model):
        return None
    return features or FeatureCache(model, sources, ("train", "dev"), log)


def precision_for_epoch(cfg, device, cached, before, log):
    """Whether this epoch's training steps run under bf16 autocast; said when it changes. Evaluation keeps its
    own precision (evaluation.autocast)."""
    bf16 = cfg.training_bf16(device, cached)
    if bf16 != before:
        log(f"training steps in {'bf16 autocast' if bf16 else 'float32'} on {device.type} "
            f"(--precision {cfg.precision})")
    return bf16


def epoch_batches(sources, cfg, epoch):
    """The epoch's (source, batch) pairs: each source's batches bucketed by length, then interleaved."""
    per_source = [batches(s.ids["train"], cfg.batch_size, seeded_rng(cfg.seed, epoch, i))
                  for i, s in enumerate(sources)]
    probabilities = None if cfg.sampling == "proportional" else \
        source_probabilities([len(s.splits.train) for s in sources], cfg.sampling, cfg.temperature)
    order = interleave(per_source, probabilities, seeded_rng(cfg.seed, epoch, len(sources)))
    return [(sources[i], batch) for i, batch in order]


class TrainingForward(nn.Module):
    """One training micro-batch's forward: the encoder (or, with the backbone frozen, the cached hidden states)
    then the heads.

    A module of its own because DistributedDataParallel averages the gradients of what runs inside its
    forward(), and the loop runs the encoder and the heads as two calls. With the cache, the frozen encoder is
    left out, so DDP neither broadcasts nor watches a single encoder weight.
    """

    def __init__(self, model, cached):
        super().__init__()
        self.bert = None if cached else model.bert
        self.layers = model.config.layers
        self.cls_head, self.ner_head = model.cls_head, model.ner_head

    def forward(self, input_ids, attention_mask, hidden=None):
        if hidden is None:
            hidden = self.bert(input_ids, attention_mask, layers=self.layers)  # as MultiTaskModel.features
        return MultiTaskModel.run_heads(self, hidden, attention_mask)  # it reads only the two heads


def steps_per_epoch(sources, cfg, world=1):
    """Optimizer steps per epoch: each takes grad_accum micro-batches from each of the `world` processes."""
    n_batches = sum(math.ceil(len(s.ids["train"]) / cfg.batch_size) for s in sources)
    return math.ceil(n_batches / (cfg.grad_accum * world))


def global_batch(cfg, ddp):
    """Sentences per optimizer step (at most: a source's last batch may be smaller)."""
    return cfg.batch_size * ddp.world * cfg.grad_accum


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

    def summary(self, optimizer, ddp):
        seconds = time.perf_counter() - self.start
        sums, sentences, positions, real = self.sums, self.sentences, self.positions, self.real
        if ddp.launched:  # every process saw a disjoint share of the epoch: the whole epoch is their sum
            tasks = ("cls", "ner")
            totals = ddp.sum([sums.get(t, 0.0) for t in tasks] + [float(t in sums) for t in tasks]
                             + [sentences, positions, real])
            sums = {t: totals[k] for k, t in enumerate(tasks) if totals[len(tasks) + k]}
            sentences, positions, real = totals[2 * len(tasks):]
        losses = {task: total / sentences for task, total in sums.items()}
        return {"loss": sum(losses.values()), **{f"loss_{k}": v for k, v in losses.items()},
                "lr": {g["name"]: g["lr"] for g in optimizer.param_groups}, "train_seconds": seconds,
                "sentences_per_second": sentences / seconds, "padding": 1 - real / max(1, positions)}


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
        optimizer = make_optimizer(model, learning_rates(cfg), cfg.weight_decay, cfg.backbone_decay)
        load_state(out, model, optimizer, saved)
        log(f"resuming after epoch {self.epoch} (best dev score {self.best:.4f} at epoch {self.best_epoch})")
        return optimizer


def meta(cfg, sources, weights_dir, dev, ddp):
    """The "minimtl" section of a checkpoint's config.json: what inference needs, and where it came from."""
    labels = next((s.labels.names for s in sources if s.labels), None)
    tags = next((s.tags.names for s in sources if s.tags), None)
    return {"labels": labels, "tags": tags, "max_len": cfg.max_len, "dev": dev, "weights": str(weights_dir),
            "sources": {s.name: s.tasks for s in sources}, "train_args": asdict(cfg),
            "data_sha256": {s.name: s.sha256 for s in sources}, "world_size": ddp.world,
            "global_batch": global_batch(cfg, ddp)}


def save_epoch(model, optimizer, progress, checkpoint_meta):
    """One atomic swap of the run directory (--out) per epoch: the best model (new, or carried over
    unchanged), the resumable state and the logs always describe the same finished epoch."""
    improved = progress.best_epoch == progress.epoch
    settings = checkpoint_meta["train_args"]
    with atomic_directory(settings["out"], carry=() if improved else MODEL_FILES) as tmp:
        if improved:
            write_model(tmp, model, {**checkpoint_meta, "epoch": progress.epoch}, checkpoint_meta["weights"])
        save_state(tmp / STATE_DIR, model, optimizer,
                   {**progress.to_json(), "config": settings, "data_sha256": checkpoint_meta["data_sha256"],
                    "world_size": checkpoint_meta["world_size"]})
        write_marker(tmp, finished=False)
        write_logs(tmp, progress.history, progress.best_epoch)


def test_scores(model, sources):
    """Test metrics of every source that has a test split, or None when none has."""
    return evaluate_sources(model, sources, "test") or None
