"""The training loop, in plain PyTorch: every step is written out here.

    data -> vocabularies -> encoder + heads -> freeze -> AdamW groups
    for each epoch: (thaw per schedule) -> batches -> forward -> masked multi-task loss -> backward
                    -> clip -> step -> lr schedule;  evaluate dev -> keep the best checkpoint -> early stop
    finally: reload the best checkpoint from disk and evaluate the test split

When no encoder parameter is trainable (`--freeze backbone`), the encoder is a fixed function of the
input, so its hidden states are computed once per sentence and the heads train on that cache: every
epoch after the first costs almost nothing (features.py).
"""

import math
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from . import metrics
from .alignment import Aligner
from .batches import batches, encode_split, padding_fraction, seeded_rng
from .bio import constrained_decode_batch
from .checkpoint import (
    MODEL_FILES,
    atomic_directory,
    load_checkpoint,
    write_json,
    write_logs,
    write_model,
)
from .data import LabelVocab, load_data, unknown_labels
from .errors import UserError
from .features import FeatureCache
from .freezing import (
    UnfreezeSchedule,
    frozen_units,
    parameter_groups,
    parameter_table,
    set_frozen,
    units,
)
from .interrupts import Interrupted, ctrl_c_between_batches
from .lora import add_lora
from .model import HeadConfig, MultiTaskModel, multitask_loss
from .resume import STATE_DIR, load_state, read_progress, save_state
from .settings import TrainConfig, pick_device
from .weights import load_encoder, resolve_weights


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_factor(step, total, warmup_steps):
    """Linear warmup from 0, then linear decay to 0: fresh heads start with small, noisy gradients."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total - step) / max(1, total - warmup_steps))


def selection_score(scores, select):
    if select == "mean":
        # Mean of whichever of sentence accuracy and entity F1 the data has.
        parts = [scores[k] for k in ("label_accuracy", "entity_f1") if k in scores]
        return sum(parts) / len(parts)
    return scores.get(select, 0.0)


class Run:
    """What one training run is built from: data and vocabularies, tokenizer, model, freezing plan, cache."""

    def __init__(self, cfg: TrainConfig, log=print):
        cfg.check()
        self.cfg, self.log = cfg, log
        self.device = pick_device(cfg.device)
        seed_everything(cfg.seed)
        self.splits = load_data(cfg.data)
        self.label_vocab = LabelVocab.from_values(ex.label for ex in self.splits.train) \
            if self.splits.has_labels else None
        self.tag_vocab = LabelVocab.from_values(t for ex in self.splits.train for t in ex.tags) \
            if self.splits.has_tags else None
        for message in unknown_labels(self.splits, self.label_vocab, self.tag_vocab):
            log(f"note: {message}")
        self.weights_dir = resolve_weights(cfg.weights)
        self.aligner = Aligner.from_checkpoint(self.weights_dir)
        encoder = load_encoder(self.weights_dir)
        self.heads = HeadConfig(len(self.label_vocab or []), len(self.tag_vocab or []), cfg.pooling,
                                cfg.cls_hidden, cfg.dropout)
        self.model = MultiTaskModel(encoder, self.heads)
        if cfg.lora:  # wraps the target Linears and freezes every base encoder weight
            add_lora(encoder, cfg.lora, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
        self.model.to(self.device)
        self.lrs = {"backbone": cfg.lr_backbone, "heads": cfg.lr_heads, "adapters": cfg.lr_lora}
        eval_len = encoder.config.max_position_embeddings  # evaluation never cuts a sentence short
        self.encoded = {"train": self.encode(self.splits.train, cfg.max_len)}
        self.encoded["dev"] = self.encode(self.splits.dev, eval_len)
        if self.splits.test is not None:
            self.encoded["test"] = self.encode(self.splits.test, eval_len)
        cut = self.encoded["train"].n_truncated
        log(f"data: {self.splits.source}: {len(self.splits.train)} train / {len(self.splits.dev)} dev / "
            f"{len(self.splits.test) if self.splits.test is not None else 'no'} test sentences; "
            f"{len(self.label_vocab or [])} labels, {len(self.tag_vocab or [])} tags"
            + (f"; {cut} train sentences cut at --max-len {cfg.max_len}" if cut else ""))
        n_layers = len(encoder.layers)
        self.schedule = UnfreezeSchedule(cfg.unfreeze_schedule, n_layers) if cfg.unfreeze_schedule else None
        self.frozen = frozen_units(self.model, cfg.freeze, cfg.freeze_layers)
        if cfg.lora:
            self.frozen |= {"embeddings", *(f"layer.{i}" for i in range(n_layers))}
        self.cache = FeatureCache(self.model, self.aligner.pad_id, cfg.batch_size, self.device)

    def encode(self, examples, max_len):
        return encode_split(self.aligner, examples, self.label_vocab, self.tag_vocab, max_len,
                            self.cfg.label_all_subtokens)

    def frozen_at(self, epoch):
        if self.schedule is None:
            return self.frozen
        return self.frozen | self.schedule.frozen_backbone(epoch)

    def meta(self, epoch, dev_scores):
        return {"labels": self.label_vocab.names if self.label_vocab else None,
                "tags": self.tag_vocab.names if self.tag_vocab else None,
                "heads": {"pooling": self.heads.pooling, "cls_hidden": self.heads.cls_hidden,
                          "dropout": self.heads.dropout},
                "max_len": self.cfg.max_len, "epoch": epoch, "dev": dev_scores,
                "train_args": asdict(self.cfg)}

    def autocast(self):
        # bf16 on CUDA halves memory traffic; CPU and MPS stay in fp32, where bf16 is slower or unsupported.
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    @torch.inference_mode()
    def predict(self, name):
        """(label names, tag names per word) for one split, in the split's order."""
        split, examples = self.encoded[name], getattr(self.splits, name)
        label_ids = [0] * len(split)
        tag_ids = [[] for _ in range(len(split))]
        self.model.eval()
        for batch in batches(split, self.cfg.batch_size * 2, self.aligner.pad_id):
            batch = batch.to(self.device)
            with self.autocast():
                out = self.cache.outputs(name, batch) or self.model(batch.input_ids, batch.attention_mask)
            if out.cls_logits is not None:
                for i, label in zip(batch.index, out.cls_logits.argmax(-1).tolist()):
                    label_ids[i] = label
            if out.ner_logits is not None:
                words = [out.ner_logits[row, split.first_positions[i]] for row, i in enumerate(batch.index)]
                log_probs = pad_sequence(words, batch_first=True).float().log_softmax(-1)  # (B, W, K)
                paths = constrained_decode_batch(log_probs, [len(w) for w in words], self.tag_vocab.names)
                for i, path in zip(batch.index, paths):
                    tag_ids[i] = path
        labels = [self.label_vocab.names[i] for i in label_ids] if self.label_vocab else None
        tags = None
        if self.tag_vocab:
            # A word past the 512-position limit has no prediction: it is scored as "O", i.e. as a miss.
            tags = [[self.tag_vocab.names[t] for t in ids] + ["O"] * (len(ex.words) - len(ids))
                    for ids, ex in zip(tag_ids, examples)]
        return labels, tags

    def evaluate(self, name):
        labels, tags = self.predict(name)
        examples = getattr(self.splits, name)
        return metrics.evaluate([ex.label for ex in examples] if labels else None, labels,
                                [list(ex.tags) for ex in examples] if tags else None, tags)


def format_scores(scores):
    names = {"label_accuracy": "acc", "entity_f1": "F1", "frame_accuracy": "frame"}
    return "  ".join(f"{short} {100 * scores[k]:.2f}" for k, short in names.items() if k in scores)


def sync_optimizer(run, optimizer, epoch, log=None):
    """Freeze and thaw for `epoch`; units that became trainable join the optimizer (made on first call).

    Gradual unfreezing adds each thawed unit's parameters as new groups. A resumed run replays this for
    its finished epochs, so its optimizer has the saved state's groups in the same order.
    """
    frozen = run.frozen_at(epoch)
    set_frozen(run.model, frozen)
    present = {id(p) for g in optimizer.param_groups for p in g["params"]} if optimizer else set()
    thawed = sorted(u for u, params in units(run.model).items()
                    if u not in frozen and any(id(p) not in present for p in params))
    groups = parameter_groups(run.model, run.lrs, run.cfg.weight_decay, only=set(thawed))
    if optimizer is None:
        if not groups:
            raise UserError(f"nothing is trainable in epoch {epoch}: check --freeze and --unfreeze-schedule")
        # fused: one pass over each parameter per step instead of a dozen foreach passes; on this 2-core CPU
        # the step over 22.7M parameters drops from about 109 ms to 20 ms (a full step is about 300 ms).
        return torch.optim.AdamW(groups, fused=run.device.type in ("cpu", "cuda"))
    for group in groups:
        optimizer.add_param_group(group)
    if thawed and log:
        log(f"epoch {epoch}: thawed {', '.join(thawed)}")
    return optimizer


def train(cfg: TrainConfig, log=print, resume=False):
    """Run training as configured (or continue the interrupted run in cfg.out when `resume`).

    Returns {"best_epoch", "dev": best dev scores, "test": test scores of the best checkpoint or None}.
    """
    run = Run(cfg, log)
    model, out = run.model, Path(cfg.out)
    progress = {"epoch": 0, "step": 0, "best": -1.0, "best_epoch": 0, "history": []}
    if resume:
        saved = read_progress(out)
        progress = {k: saved[k] for k in progress}
        if progress["epoch"] >= cfg.epochs or saved.get("finished"):
            raise UserError("this run already finished: nothing to resume", out)
        optimizer = None
        for epoch in range(1, progress["epoch"] + 1):
            optimizer = sync_optimizer(run, optimizer, epoch)
        load_state(out, model, optimizer, saved)
        log(f"resuming after epoch {progress['epoch']} (best dev score {progress['best']:.4f} at epoch "
            f"{progress['best_epoch']})")
    set_frozen(model, run.frozen_at(progress["epoch"] + 1))
    log(parameter_table(model, run.lrs))
    if not any(p.requires_grad for p in model.parameters()) and run.schedule is None:
        log("--freeze all: nothing can learn, so this only evaluates the untrained heads on the backbone")
        return {"dev": run.evaluate("dev"), "test": run.evaluate("test") if "test" in run.encoded else None}

    steps_per_epoch = math.ceil(math.ceil(len(run.encoded["train"]) / cfg.batch_size) / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = max(1, round(cfg.warmup * total_steps))
    if not resume:
        optimizer = sync_optimizer(run, None, 1)
    try:
        with ctrl_c_between_batches() as check_interrupt:
            for epoch in range(progress["epoch"] + 1, cfg.epochs + 1):
                optimizer = sync_optimizer(run, optimizer, epoch, log)
                record = train_epoch(run, optimizer, epoch, progress, total_steps, warmup_steps, check_interrupt)
                log(f"epoch {epoch:>2}/{cfg.epochs}  loss {record['loss']:.4f}  dev {format_scores(record['dev'])}"
                    f"  {record['sentences_per_second']:.0f} sent/s  padding {record['padding']:.1%}  "
                    f"{record['seconds']:.1f}s"
                    + ("  *saved" if record["best"] else ""))
                check_interrupt()
                if cfg.patience and epoch - progress["best_epoch"] >= cfg.patience:
                    log(f"early stop: no better dev score for {cfg.patience} epochs")
                    break
    except KeyboardInterrupt:
        # Every finished epoch was saved whole (atomic_directory), and an unfinished save was discarded.
        done = progress["epoch"]
        saved = f"the state after epoch {done} is saved; continue with: python train.py --resume {out}" \
            if done else "no epoch had finished, so nothing was saved"
        raise Interrupted(f"interrupted during epoch {done + 1}: {saved}") from None

    results = {"best_epoch": progress["best_epoch"], "dev": progress["history"][progress["best_epoch"] - 1]["dev"],
               "test": None}
    if "test" in run.encoded:
        run.model, _ = load_checkpoint(out)  # the best checkpoint, as written: what infer.py will use
        run.model.to(run.device)
        run.cache.disable()
        results["test"] = run.evaluate("test")
        log(f"test (best epoch {progress['best_epoch']}): {format_scores(results['test'])}")
    write_json(out / "results.json", results)
    return results


def train_epoch(run, optimizer, epoch, progress, total_steps, warmup_steps, check_interrupt):
    """One pass over the training split, then dev evaluation and the end-of-epoch save."""
    cfg, model, out = run.cfg, run.model, Path(run.cfg.out)
    start = time.perf_counter()
    # Test is evaluated once, at the end, by the reloaded best checkpoint: caching its states would be waste.
    splits = {name: run.encoded[name] for name in ("train", "dev")}
    cached = run.cache.enable(splits, run.log) if run.cache.possible() else run.cache.disable()
    model.train()
    train_start = time.perf_counter()
    train_batches = batches(run.encoded["train"], cfg.batch_size, run.aligner.pad_id, seeded_rng(cfg.seed, epoch))
    sums, n_sentences = {}, 0
    for i, batch in enumerate(train_batches):
        batch = batch.to(run.device)
        with run.autocast():
            outputs = run.cache.outputs("train", batch) or model(batch.input_ids, batch.attention_mask)
            loss, parts = multitask_loss(outputs, batch.labels, batch.tags, cfg.w_cls, cfg.w_ner)
        if parts and not math.isfinite(loss.item()):
            raise UserError(f"the loss became {loss.item()} at epoch {epoch}, step {progress['step']}: training "
                            f"stopped; the last good checkpoint in {out} is kept (try a lower learning rate)")
        if parts:
            (loss / cfg.grad_accum).backward()
        for task, value in parts.items():
            sums[task] = sums.get(task, 0.0) + value.item() * len(batch.index)
        n_sentences += len(batch.index)
        if (i + 1) % cfg.grad_accum == 0 or i + 1 == len(train_batches):
            if cfg.clip:
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.clip)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * lr_factor(progress["step"], total_steps, warmup_steps)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            progress["step"] += 1
        check_interrupt()
        if sys.stderr.isatty():
            print(f"\r  epoch {epoch} step {i + 1}/{len(train_batches)}", end="", file=sys.stderr)
    if sys.stderr.isatty():
        print("\r" + " " * 60 + "\r", end="", file=sys.stderr)
    train_time = time.perf_counter() - train_start

    dev = run.evaluate("dev")
    score = selection_score(dev, cfg.select)
    improved = score > progress["best"]
    if improved:
        progress["best"], progress["best_epoch"] = score, epoch
    losses = {task: total / n_sentences for task, total in sums.items()}
    record = {"epoch": epoch, "loss": sum(losses.values()), **{f"loss_{k}": v for k, v in losses.items()},
              "dev": dev, "select": score, "best": improved, "lr": optimizer.param_groups[0]["lr"],
              "train_seconds": train_time, "sentences_per_second": n_sentences / train_time,
              "padding": padding_fraction(train_batches), "feature_cache": cached,
              "seconds": time.perf_counter() - start}
    progress["history"].append(record)
    progress["epoch"] = epoch
    # One atomic swap per epoch: the best model (new, or carried over unchanged), the resumable state and
    # the logs always describe the same finished epoch.
    with atomic_directory(out, carry=() if improved else MODEL_FILES) as tmp:
        if improved:
            write_model(tmp, model, run.meta(epoch, dev), run.weights_dir)
        save_state(tmp / STATE_DIR, model, optimizer, {**progress, "config": asdict(cfg)})
        write_logs(tmp, progress["history"])
    return record
