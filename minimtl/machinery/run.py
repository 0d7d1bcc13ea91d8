"""A training run around the loop of training.py: what makes it safe to start, stop and continue.

    build      data files -> vocabularies -> encoder + heads (the recipe resolved) -> (LoRA)
    claim      --out checked and locked: only a minimtl run is ever replaced, one writer at a time
    epochs     the lesson's optimizer_for_epoch / features_for_epoch / train_epoch, then dev, then one atomic
               save of the run directory; Ctrl-C honoured between batches; early stop
    finally    the best checkpoint reloaded from disk and scored on the test split; each head's temperature
               fitted on dev (calibration.py) and written into the checkpoint; reliability.svg; results.json

Under torchrun every process runs this; rank 0 alone prints, holds the lock and writes (distributed.py).
"""

import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from torch.nn.parallel import DistributedDataParallel

from ..guards.errors import UserError
from ..evaluation import format_scores, selection_score
from ..extensions.calibration import calibration_report, fit_temperatures
from ..extensions.lora import add_lora
from ..extensions.features import CachedModel
from ..freezing import backbone_units, frozen_in_epoch, units
from ..training import lr_factor, optimizer_for_epoch, seed_everything, train_epoch
from .assemble import build_model
from .sampling import epoch_batches, evaluate_sources, outputs_of, steps_per_epoch
from .steps import labelled, precision_for_epoch, scoring, shown_scoring, step_loss, summed
from .storage import cache_dir, cache_place, features_for_epoch
from .settings import recipe as resolve_recipe
from .settings import trained_pooling
from .checkpoint import (MODEL_FILES, atomic_directory, load_checkpoint, load_pretrained, write_json,
                         write_logs, write_model, write_temperatures)
from .distributed import Processes
from .download import resolve_weights, sha256
from .interrupts import Checked, ctrl_c_between_batches, what_is_saved
from .plots import write_reliability
from .report import entity_tables, parameter_table
from .resume import STATE_DIR, claim_run_directory, load_state, read_progress, reopen, save_state
from .rundir import RunLock, drop_state, write_marker
from .progress_line import CURVE_POINTS, ProgressLine
from .threads import Paced
from .warm_start import keep_trained_heads
from .sources import check_tasks, encode_sources, load_sources, vocabularies
from ..extensions.family_tokenizers import load_tokenizer


def train(cfg, log=print, resume=False, ddp=Processes()):
    """Train as configured (or continue the interrupted run in cfg.out when `resume`).

    `ddp`: this process's place in a torchrun job (distributed.py); the default is a plain run.
    Returns {"best_epoch", "dev": best dev scores, "test": test scores of the best checkpoint or None}; in a
    torchrun job only rank 0 evaluates the test split, and the others return None there.
    """
    cfg.check()
    log = log if ddp.main else lambda line: None  # one process speaks for the job
    log(f"{'resuming' if resume else 'run'} in {Path(cfg.out).resolve()}: the best checkpoint, its logs and the "
        "state to resume from are written there")
    model, sources, weights_dir, recipe = build(cfg, log)  # every input file is read and checked here
    weights_sha256 = sha256(weights_dir / "model.safetensors")  # a resumed run must start from the same
    first = frozen_in_epoch(model, cfg, 1)  # checks --freeze against this model, too
    if set(units(model)) <= first and not cfg.unfreeze_schedule:
        log("--freeze all: nothing can learn, so this only evaluates the untrained heads on the backbone")
        results = {"best_epoch": None, "dev": evaluate_sources(model, sources, "dev"),
                   "test": evaluate_sources(model, sources, "test") or None}
        for split in ("dev", "test"):
            if results[split]:
                log(f"{split} (untrained heads): {format_scores(results[split])}")
        return results
    out, device = Path(cfg.out), next(model.parameters()).device
    # Where the frozen backbone's features go is decided before anything is written: a budget too small for
    # them is a bad flag like any other.
    place = cache_place(model, sources, cfg, recipe.max_len, ddp.world, log) \
        if set(backbone_units(len(model.bert.layers))) <= first and not cfg.lora else "off"
    progress = Progress()
    if ddp.main or resume:  # before the lock file is made beside --out: a refused --out is left exactly as it was
        claim_run_directory(cfg, resume, sources, recipe.epochs, ddp.world, weights_sha256)
    # A resumed run's state is read whole, and checked, before the lock too: damage in it changes nothing.
    optimizer = progress.resume(out, model, cfg, recipe, log) if resume else None
    with claimed(cfg, resume, sources, recipe, ddp, weights_sha256, progress.epoch), ddp.peers_watched(progress, out), \
            ctrl_c_between_batches(progress, out, ddp.command(), ddp.stop_signals) as ctrl_c, ExitStack() as files:
        # On disk, the cache is a file without a name: the kernel removes it when it is closed or the process
        # dies, however it dies, so no run leaves gigabytes behind.
        cache_file = files.enter_context(tempfile.TemporaryFile(dir=cache_dir(out))) if place == "disk" else None
        log(parameter_table(model, frozen_in_epoch(model, cfg, progress.epoch + 1), recipe.learning_rates,
                            recipe.layer_decay))
        log(recipe.describe())
        if ddp.launched:
            log(f"global batch: {cfg.batch_size} sentences x {ddp.world} processes x {cfg.grad_accum} accumulated "
                f"= {global_batch(cfg, ddp)} per optimizer step")
        total_steps = steps_per_epoch(sources, cfg, ddp.world) * recipe.epochs  # optimizer steps of the whole job
        schedule = partial(lr_factor, total=total_steps, warmup_steps=max(1, round(cfg.warmup * total_steps)))
        features, bf16 = None, None
        for epoch in range(progress.epoch + 1, recipe.epochs + 1):
            optimizer = optimizer_for_epoch(model, cfg, recipe.learning_rates, recipe.layer_decay, epoch, optimizer,
                                            log)
            quiet = cfg.quiet or not ddp.main

            def pace(batches):  # the feature cache's batches, at the thread count measured fastest, shown going by
                return ProgressLine(Paced(batches, cfg.threads, "feature cache", log), "feature cache", log, quiet)
            try:
                features = features_for_epoch(model, sources, features, log, cache_file, pace) if place != "off" \
                    else None
            except OSError as e:  # its disk filled up after cache_place looked (another program wrote there)
                if cache_file is None:
                    raise
                raise UserError(f"cannot write the feature cache in {cache_dir(out)} ({e.strerror or e}): free "
                                "space there, or give --feature-cache off") from None
            bf16 = precision_for_epoch(recipe, cfg, device, features is not None, bf16, log)
            # With the cache the heads alone run; DDP watches what trains now (the frozen encoder has no gradient).
            net = CachedModel(model, features) if features else model
            if ddp.launched:
                net = DistributedDataParallel(net, device_ids=[ddp.device] if device.type == "cuda" else None)
            ddp.seed_epoch(cfg.seed, epoch)
            batches = ProgressLine(Paced(Checked(labelled(epoch_batches(sources, cfg, epoch), cfg, ddp),
                                                 ctrl_c.check), cfg.threads, f"epoch {epoch}", log),
                                   f"epoch {epoch}/{recipe.epochs}", log, quiet, CURVE_POINTS // recipe.epochs)
            try:
                progress.step, stats = train_epoch(model, optimizer, batches, schedule, progress.step, cfg,
                                                   shown(step_loss(model, net, cfg, bf16, ddp.launched), batches))
            except FloatingPointError as e:
                raise UserError(not_finite(*e.args, epoch, cfg)) from None
            dev = evaluate_sources(model, sources, "dev", shown_scoring(model, sources, "dev", log, quiet, features))
            record = progress.finish_epoch(epoch, summed(stats, ddp.device).summary(optimizer), dev, batches.curve)
            with ctrl_c.saving():  # a first Ctrl-C waits for the save: what is on disk is then this epoch
                if ddp.main:
                    try:
                        save_epoch(model, optimizer, progress,
                                   meta(cfg, recipe, sources, weights_dir, weights_sha256, dev, ddp))
                    except OSError as e:  # a full disk, say: the half-written version was discarded whole
                        raise UserError(f"cannot save epoch {epoch} ({e.strerror}): training stopped; "
                                        f"{what_is_saved(progress, out, ddp.command())}", out) from None
                progress.saved = epoch
            log(epoch_line(record, recipe))
            ctrl_c.check()
            if cfg.patience and epoch - progress.best_epoch >= cfg.patience:
                log(f"early stop: no better dev score for {cfg.patience} epochs")
                break
        results = {"best_epoch": progress.best_epoch, "dev": progress.history[progress.best_epoch - 1]["dev"],
                   "test": None}
        if ddp.main:  # the test split once, by rank 0, from the checkpoint as infer.py will see it
            # The test split and calibration compute with the count the last epoch measured fastest.
            best = load_checkpoint(out)[0].to(device)
            # One forward pass over each test split gives its scores and its calibration errors.
            test = outputs_of(best, sources, "test", shown_scoring(best, sources, "test", log, cfg.quiet))
            results["test"] = evaluate_sources(best, sources, "test", outputs=test) or None
            if results["test"] is not None:
                log(f"test (best epoch {progress.best_epoch}): {format_scores(results['test'])}")
                if table := entity_tables(results["test"], [s.name for s in sources]):
                    log(f"test entities by type:\n{table}")
            results["calibration"], pooled, drawn = calibrate(best, sources, features, test, log)
            with ctrl_c.saving():
                # Into the checkpoint first: results.json and the finished marker then describe a checkpoint
                # that has its temperatures. Each write replaces one file whole, so nothing is ever lost.
                try:
                    write_temperatures(out, results["calibration"]["temperature"])
                    write_reliability(out / "reliability.svg", pooled, results["calibration"]["temperature"], drawn)
                    write_json(out / "results.json", results)
                    write_marker(out, finished=True)  # complete: --resume refuses it, but for more --epochs
                except OSError as e:  # a full disk, say
                    raise UserError(f"cannot write the run's test results ({e.strerror or e}); its best checkpoint "
                                    "is saved there, whole, for infer.py", out) from None
            log(drop_state(out / STATE_DIR, out, cfg.keep_resume))  # only now: the run is finished, on disk
    return results


def calibrate(model, sources, features, test, log):
    """Each head's temperature fitted on the dev split of the best checkpoint (read from the frozen backbone's
    `features` when the run has them), and its expected calibration error on the test split before and after,
    from the `test` outputs its scores came from: ({"temperature", "test"}, the predictions pooled for a
    reliability diagram, the split they are of: test, or dev where no source has a test split)."""
    dev = outputs_of(model, sources, "dev", scoring(model, features))  # one pass: fit, draw
    temperatures = fit_temperatures(model, sources, "dev", log=log, outputs=dev)
    errors, pooled = calibration_report(model, sources, "test", temperatures, test)
    changes = []
    for name, before in errors.items():  # "label_ece_before", or per source "snips/label_ece_before"
        if name.endswith("_ece_before"):
            what, after = name.removesuffix("_ece_before"), errors[name.replace("_before", "_after")]
            changes.append(f"{what.replace('/', ' ')} ECE {100 * before:.2f}% -> {100 * after:.2f}%"
                           + (" (worse after calibration)" if after > before else ""))
    log("calibration: " + "  ".join(f"{head} T = {t:.3f}" for head, t in temperatures.items())
        + "".join(f"  {change}" for change in changes) + (" (test ECE, before -> after)" if changes else ""))
    drawn = "test"
    if not pooled:  # no test split: the diagram shows dev, which is better than an empty picture
        drawn, pooled = "dev", calibration_report(model, sources, "dev", temperatures, dev)[1]
    return {"temperature": temperatures, "test": errors or None}, pooled, drawn


def shown(loss_of, line):
    """`loss_of` (a step's loss), each loss also handed to the progress `line`."""
    def watched(batch):
        loss, parts = loss_of(batch)
        line.loss = loss.item()
        return loss, parts
    return watched


@contextmanager
def claimed(cfg, resume, sources, recipe, ddp, weights_sha256, resumed_epoch):
    """Hold --out for the whole run: rank 0 writes, and locks it. Checked (again) under the lock, since another
    process may have written there since it was checked: a resumed run must still find the epoch it read."""
    with ddp.main_only(RunLock(cfg.out)):
        if ddp.main:
            claim_run_directory(cfg, resume, sources, recipe.epochs, ddp.world, weights_sha256, resumed_epoch)
            if resume:  # --epochs / --keep-resume: on disk before the first step, for a Ctrl-C's --resume to hold
                reopen(cfg.out, cfg)
        ddp.barrier()  # the others go on once rank 0 holds the run directory
        yield


def build(cfg, log):
    """(model on its device, data sources with their encoded splits, the weights directory, the recipe)."""
    seed_everything(cfg.seed)
    sources = load_sources(cfg.data, cfg.text_column, cfg.label_column)
    weights_dir = resolve_weights(cfg.weights)
    encoder = load_pretrained(weights_dir)
    tokenizer = load_tokenizer(weights_dir, encoder.config.vocab_size, encoder.config.model_type)
    positions = encoder.config.max_tokens  # an explicit --max-len must fit; the default does (settings.recipe)
    if cfg.max_len is not None and cfg.max_len > positions:
        raise UserError(f"--max-len {cfg.max_len}: the model in {weights_dir} has only {positions} positions")
    vocab = vocabularies(sources)
    check_tasks(sources, cfg)
    device = cfg.torch_device()
    # Read only for a tokenizer that lower-cases; it stops at the first capital letter.
    erases_case = tokenizer.lowercases and any(word != word.lower() for s in sources for ex in s.splits.train
                                             for word in ex.words)
    recipe = resolve_recipe(cfg, encoder.config, trained_pooling(weights_dir), len(vocab.labels or []),
                            len(vocab.tags or []), device, erases_case=erases_case)
    # Evaluation never cuts a sentence short: only the model's position table limits it.
    encode_sources(sources, tokenizer, vocab, cfg, recipe.max_len, positions, log,
                   word_shapes=recipe.word_shapes is not None)
    model = build_model(encoder, recipe.heads, vocab.tags and vocab.tags.names, recipe.word_shapes, cfg.context)
    keep_trained_heads(model, weights_dir, vocab, log)  # --weights RUN: its heads, where they fit this run
    if cfg.lora:  # wraps the target Linears; with adapters in the model, freezing.py freezes the backbone
        add_lora(encoder, cfg.lora, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
    return model.to(device), sources, weights_dir, recipe


def not_finite(value, step, epoch, cfg):
    return (f"the loss became {value} at epoch {epoch}, step {step}: training stopped; "
            + (f"the last good checkpoint in {cfg.out} is kept" if epoch > 1 else
               "no epoch had finished, so nothing was saved")
            + " (check the learning rates and loss weights)")


def global_batch(cfg, ddp):
    """Sentences per optimizer step (at most: a source's last batch may be smaller)."""
    return cfg.batch_size * ddp.world * cfg.grad_accum


def epoch_line(record, recipe):
    return (f"epoch {record['epoch']:>2}/{recipe.epochs}  loss {record['loss']:.4f}  dev {format_scores(record['dev'])}"
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
    saved: int = 0  # the last epoch whose save ended: what --resume would continue from

    def finish_epoch(self, epoch, summary, dev, curve):  # curve: the epoch's ProgressLine.curve
        score = selection_score(dev)
        improved = score > self.best
        if improved:
            self.best, self.best_epoch = score, epoch
        record = {"epoch": epoch, **summary, "dev": dev, "select": score, "best": improved, "step_losses": curve,
                  "seconds": time.perf_counter() - self.started}
        self.history.append(record)
        self.epoch, self.started = epoch, time.perf_counter()
        return record

    def to_json(self):
        return {"epoch": self.epoch, "step": self.step, "best": self.best, "best_epoch": self.best_epoch,
                "history": self.history}

    def resume(self, out, model, cfg, recipe, log):
        """Continue the interrupted run in `out`: its progress, weights, AdamW state and random states come
        back; returns that AdamW."""
        saved = read_progress(out)
        for key in ("epoch", "step", "best", "best_epoch", "history"):
            setattr(self, key, saved[key])
        self.saved = self.epoch
        # The optimizer of the last finished epoch: what it trained is a function of the settings and epoch.
        optimizer = optimizer_for_epoch(model, cfg, recipe.learning_rates, recipe.layer_decay, self.epoch)
        load_state(out, model, optimizer, saved)
        log(f"resuming after epoch {self.epoch} of {recipe.epochs} (best dev score {self.best:.4f} at epoch "
            f"{self.best_epoch})")
        return optimizer


def meta(cfg, recipe, sources, weights_dir, weights_sha256, dev, ddp):
    """The "minimtl" section of a checkpoint's config.json: what inference needs, and where it came from."""
    labels = next((s.labels.names for s in sources if s.labels), None)
    tags = next((s.tags.names for s in sources if s.tags), None)
    return {"labels": labels, "tags": tags, "max_len": recipe.max_len, "dev": dev, "weights": str(weights_dir),
            "sources": {s.name: s.tasks for s in sources}, "train_args": asdict(cfg), "recipe": asdict(recipe),
            "word_shapes": recipe.word_shapes, "context": cfg.context,
            "data_sha256": {s.name: s.sha256 for s in sources}, "weights_sha256": weights_sha256,
            "world_size": ddp.world,
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
                    "weights_sha256": checkpoint_meta["weights_sha256"],
                    "world_size": checkpoint_meta["world_size"]})
        write_marker(tmp, finished=False)
        write_logs(tmp, progress.history, progress.best_epoch)
