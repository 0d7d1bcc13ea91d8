"""Everything, beyond the best model, that a run needs to continue exactly where it stopped.

Saved at the end of every epoch into `OUT/resume/`, inside the same atomic directory swap as the rest of
the run, so the state on disk always belongs to one finished epoch:

    model.safetensors       the trained weights as they are now (the best ones may be older: in OUT/)
    optimizer.safetensors   AdamW's moment estimates and step counts, per parameter name and kind
    state.json              epoch, step, best score, metric history, the run's settings, and the
                            Python / NumPy / torch random-number states

Random states matter for exact resumption: dropout draws from torch's generator, so a resumed run must
continue the same stream to reproduce the uninterrupted run bit for bit. No pickle anywhere: tensors in
safetensors, the rest in JSON.

A run that finishes drops this state (rundir.drop_state), three times the size of what it trains and of no use
to `--resume` on a finished run, unless it was started with `--keep-resume`: then `--resume OUT --epochs N`
trains it further (`resume_config`, `reopen`).
"""

import json
import random
import types
import typing
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import torch

from .settings import RunConfig, planned_epochs
from ..guards.errors import UserError, quote, read_json
from ..guards.files import read_state_dict
from .rundir import check_out, is_finished, save_tensors, write_marker, write_whole

STATE_DIR = "resume"


def save_state(directory, model, optimizer, progress):
    """Write the state after a finished epoch into `directory` (a new folder inside the atomic swap)."""
    directory = Path(directory)
    directory.mkdir()
    names = {p: name for name, p in model.named_parameters()}
    trained = [p for group in optimizer.param_groups for p in group["params"]]
    # The parameters the optimizer holds. Every other one still has the value the run started from, which a
    # resumed run rebuilds exactly (same weights file, same seed): with a frozen backbone that is a few
    # thousand numbers per epoch instead of the whole encoder.
    save_tensors({names[p]: p.detach().cpu().contiguous() for p in trained}, directory / "model.safetensors")
    # AdamW's state per parameter *name*: the optimizer of any epoch can be rebuilt from the trainable units
    # (freezing.make_optimizer) and take back the state of each parameter it holds.
    tensors = {f"{names[p]}:{key}": value.detach().cpu().contiguous()
               for p in trained for key, value in optimizer.state.get(p, {}).items()}
    tensors["torch_rng"] = torch.get_rng_state()
    save_tensors(tensors, directory / "optimizer.safetensors")
    py_version, py_internal, py_gauss = random.getstate()
    np_state = np.random.get_state()
    state = {**progress, "python_rng": [py_version, list(py_internal), py_gauss],
             "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    (directory / "state.json").write_text(json.dumps(state) + "\n", encoding="utf-8")


def read_progress(run_dir):
    """The state.json of an interrupted run in `run_dir`, validated enough to build the run again: every
    value has its type, and the random states are ones Python and NumPy take back."""
    path = Path(run_dir) / STATE_DIR / "state.json"
    if not path.is_file() and is_finished(run_dir):
        raise UserError(f"this run finished, and its {STATE_DIR}/ state was dropped at the end: nothing to resume "
                        "(a run started with --keep-resume keeps it, and --resume DIR --epochs N then trains it "
                        "further)", run_dir)
    if not path.is_file():
        raise UserError(f"nothing to resume: no {STATE_DIR}/state.json (only runs of this version that "
                        "finished at least one epoch can be resumed)", run_dir)
    state = read_json(path)
    if not isinstance(state, dict):
        raise UserError("not a training state written by minimtl", path)
    expected = {"config": dict, "epoch": int, "step": int, "best": float, "best_epoch": int, "history": list,
                "data_sha256": dict, "python_rng": list, "numpy_rng": list}
    for key, kind in expected.items():
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UserError(f"{key!r} should be {kind.__name__}, not {quote(value)}: the training state is damaged",
                            path)
    if not 1 <= state["epoch"] == len(state["history"]) or not 0 <= state["best_epoch"] <= state["epoch"] \
            or not all(isinstance(record, dict) for record in state["history"]):
        raise UserError("'epoch', 'best_epoch' and 'history' do not agree: the training state is damaged", path)
    world = state.setdefault("world_size", 1)  # runs saved before torchrun support were single processes
    if type(world) is not int or world < 1:
        raise UserError(f"'world_size' should be a positive integer, not {quote(world)}: the training state is "
                        "damaged", path)
    _check_random_states(state, path)
    return state


def _check_random_states(state, path):
    """The shapes random.getstate() and np.random.get_state() give, then a trial on a scratch generator of
    each kind, which checks the values (an index in range, ...) without touching the process's own."""
    python, numpy = state["python_rng"], state["numpy_rng"]
    if not (len(python) == 3 and type(python[0]) is int and isinstance(python[1], list) and len(python[1]) == 625
            and all(type(w) is int for w in python[1]) and (python[2] is None or type(python[2]) is float)):
        raise UserError("'python_rng' should be [version, 625 integers, null or a float], as random.getstate() "
                        "gives: the training state is damaged", path)
    if not (len(numpy) == 5 and type(numpy[0]) is str and isinstance(numpy[1], list) and len(numpy[1]) == 624
            and all(type(k) is int and 0 <= k < 2**32 for k in numpy[1]) and type(numpy[2]) is int
            and type(numpy[3]) is int and type(numpy[4]) is float):
        raise UserError("'numpy_rng' should be [name, 624 integers of 32 bits, position, has_gauss, float], as "
                        "np.random.get_state() gives: the training state is damaged", path)
    for key, scratch in (("python_rng", lambda: random.Random().setstate(_python_state(python))),
                         ("numpy_rng", lambda: np.random.RandomState().set_state(_numpy_state(numpy)))):
        try:
            scratch()
        except (ValueError, TypeError, OverflowError) as e:
            raise UserError(f"{key!r} is not a random state ({quote(e, 80)}): the training state is damaged",
                            path) from None


def _python_state(saved):
    version, internal, gauss = saved
    return version, tuple(internal), gauss


def _numpy_state(saved):
    name, keys, *rest = saved
    return (name, np.array(keys, dtype=np.uint32), *rest)


def load_state(run_dir, model, optimizer, state):
    """Put the saved weights, AdamW state and random states back; `optimizer` holds what the run trained
    in its last finished epoch. Every tensor is checked against the model before anything is changed: a
    moment of the wrong shape or a NaN in it would otherwise train a whole epoch and end as a NaN loss."""
    directory = Path(run_dir) / STATE_DIR
    params = {name: p for name, p in model.named_parameters()}
    trained = {name for name, p in params.items() if any(p is q for g in optimizer.param_groups for q in g["params"])}
    weights_path, optimizer_path = directory / "model.safetensors", directory / "optimizer.safetensors"
    weights = read_state_dict(weights_path)
    if weights.keys() != trained:
        raise UserError("saved weights do not match the model this run builds", weights_path)
    for name, value in weights.items():
        _check_like(value, params[name], f"weight {quote(name, 80)}", weights_path)
    tensors = read_state_dict(optimizer_path)
    amsgrad = any(group.get("amsgrad") for group in optimizer.param_groups)
    kinds = {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if amsgrad else set())
    moments = {}
    for key, value in tensors.items():
        if key == "torch_rng":
            continue
        name, _, kind = key.partition(":")
        if name not in trained:
            raise UserError(f"optimizer state for {quote(name, 80)}, which this run does not train", optimizer_path)
        if kind not in kinds:
            raise UserError(f"{quote(key, 80)} is no part of AdamW's state ({', '.join(sorted(kinds))})",
                            optimizer_path)
        _check_moment(value, params[name], kind, quote(key, 80), optimizer_path)
        moments.setdefault(name, {})[kind] = value
    for name, state_of in moments.items():
        if state_of.keys() != kinds:
            raise UserError(f"AdamW's state for {quote(name, 80)} lacks {', '.join(sorted(kinds - state_of.keys()))}",
                            optimizer_path)
    rng = tensors.get("torch_rng")
    expected = torch.get_rng_state()
    if rng is None or rng.dtype != expected.dtype or rng.shape != expected.shape:
        raise UserError(f"'torch_rng' should be {expected.numel():,} bytes (torch.uint8), as torch.get_rng_state() "
                        f"gives, not {_described(rng)}", optimizer_path)
    try:
        torch.Generator().set_state(rng)  # a scratch generator: checks the bytes, changes nothing of ours
    except RuntimeError as e:
        raise UserError(f"'torch_rng' is not a torch random state ({quote(e, 80)})", optimizer_path) from None
    # Everything is checked: only now does anything change.
    model.load_state_dict(weights, strict=False)
    for name, state_of in moments.items():
        device = params[name].device
        optimizer.state[params[name]] = {kind: value if kind == "step" else value.to(device)
                                         for kind, value in state_of.items()}
    torch.set_rng_state(rng)
    random.setstate(_python_state(state["python_rng"]))
    np.random.set_state(_numpy_state(state["numpy_rng"]))


def _check_like(value, param, what, path):
    """`value` must be able to stand in for `param`: its shape and dtype, finite."""
    if value.shape != param.shape or value.dtype != param.dtype:
        raise UserError(f"{what} should be {str(param.dtype).removeprefix('torch.')} of shape "
                        f"{tuple(param.shape)}, as the model has it, not {_described(value)}", path)
    if not torch.isfinite(value).all():
        raise UserError(f"{what} holds NaN or infinite values", path)


def _check_moment(value, param, kind, what, path):
    """AdamW's `step` is a float scalar counting steps; a moment is a tensor like its parameter, and the
    second moments (running means of squares) are never negative."""
    if kind == "step":
        if value.ndim != 0 or not value.is_floating_point() or not torch.isfinite(value) or value < 0 \
                or value != value.floor():
            raise UserError(f"{what} should be a step count (a float scalar, a whole number >= 0), not "
                            f"{_described(value)}", path)
        return
    _check_like(value, param, what, path)
    if kind != "exp_avg" and (value < 0).any():
        raise UserError(f"{what} holds negative values: a mean of squares cannot", path)


def _described(tensor):
    if tensor is None:
        return "missing"
    shown = f" {tensor.item():g}" if tensor.numel() == 1 and not tensor.dtype.is_complex else ""
    return f"{str(tensor.dtype).removeprefix('torch.')} of shape {tuple(tensor.shape)}{shown}"


def resume_config(run_dir, epochs=None, keep_resume=False):
    """The settings of the interrupted run in `run_dir`: a resumed run must use exactly the same ones, but for
    `epochs`, a new total to train to (a finished run whose state was kept trains further: `extended`), and
    `keep_resume`, which changes only what the run leaves on disk when it finishes."""
    state = read_progress(run_dir)
    saved = state["config"]
    known = {f.name: f for f in fields(RunConfig)}
    unknown = set(saved) - set(known)
    if unknown:
        raise UserError(f"the saved run has settings this version does not know: {', '.join(sorted(unknown))}",
                        run_dir)
    missing = set(known) - set(saved)
    if missing:  # an older version's run: filling in today's defaults would change its recipe halfway
        raise UserError(f"the saved run lacks settings this version has: {', '.join(sorted(missing))} (it was "
                        "written by an older version; train it again)", run_dir)
    path = Path(run_dir) / STATE_DIR / "state.json"
    for name, value in saved.items():
        # The declared type is what a setting must have: `int | None` for the ones a recipe resolves.
        declared = known[name].type
        kinds = tuple(typing.get_origin(t) or t for t in
                      (typing.get_args(declared) if isinstance(declared, types.UnionType) else (declared,)))
        ok = type(value) in kinds or float in kinds and type(value) is int
        if ok and type(value) is list:
            ok = all(type(v) is str for v in value)
        if not ok:
            wanted = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise UserError(f"setting {name!r} should be {wanted}, not {quote(value)}: the training state is damaged",
                            path)
    cfg = RunConfig(**{**saved, "out": str(run_dir)})
    try:  # a saved value out of range is damage in this file, not a flag the user gave
        cfg.check()
    except UserError as e:
        raise UserError(f"a saved setting is impossible ({e}): the training state is damaged", path) from None
    if keep_resume and cfg.keep_resume:
        raise UserError("--keep-resume: this run keeps its resume state already (drop the flag: it would change "
                        "nothing)", run_dir)
    return replace(extended(cfg, state, epochs, run_dir), keep_resume=cfg.keep_resume or keep_resume)


def extended(cfg, state, epochs, run_dir):
    """`cfg` training to `epochs` (None: the run's own total), or a UserError when that is no training to do.

    Allowed: more epochs than a finished run trained (its kept state is where they start), or another total
    than an interrupted run's, above the epochs it trained (its learning rate then follows the new total's
    schedule from the step it stopped at). Refused: a run that stopped early. Its patience rule would stop the
    extension after the first epoch that fails to beat the best, which is not the N epochs asked for; a new run
    with a larger --patience is what such a run needs."""
    done, planned, finished = state["epoch"], planned_epochs(cfg), is_finished(run_dir)
    if epochs is None:
        if finished or done >= planned:
            raise UserError(f"this run already finished: nothing to resume (--epochs N, more than its {done}, "
                            "trains it further)", run_dir)
        return cfg
    if epochs <= done:
        raise UserError(f"--epochs {epochs}: this run has trained {done} epoch{'s' * (done != 1)} already; give "
                        "more to train it further", run_dir)
    if epochs == planned and not finished:
        raise UserError(f"--epochs {epochs} is the total this run trains to already: drop it (it would change "
                        "nothing)", run_dir)
    if finished and cfg.patience and done - state["best_epoch"] >= cfg.patience:
        raise UserError(f"--epochs {epochs}: this run stopped early (no better dev score than epoch "
                        f"{state['best_epoch']}'s for --patience {cfg.patience}), and would stop again after one more "
                        "epoch unless it beat that: train a new run with a larger --patience instead", run_dir)
    return replace(cfg, epochs=epochs)


def reopen(out, cfg):
    """Record, before the first step, the settings a resumed run in `out` changed (--epochs, --keep-resume): from
    then on it is an interrupted run of those settings, which a plain --resume continues. The marker first: a
    crash before the state is rewritten leaves an interrupted run whose --epochs is still to give."""
    path = Path(out) / STATE_DIR / "state.json"
    state = read_json(path)
    settings = {**asdict(cfg), "out": state["config"]["out"]}  # where it is now read from changes nothing
    if settings == state["config"]:
        return
    write_marker(out, finished=False)
    write_whole(path, json.dumps({**state, "config": settings}) + "\n")


def claim_run_directory(cfg, resume, sources, epochs, world=1, weights_sha256=None, resumed_epoch=None):
    """--out as a Path, once it is sure that training may write there (machinery/rundir.py has the rules).

    `epochs`: the recipe's; `weights_sha256`: of the --weights file it starts from, which must be the one the
    run started from; `resumed_epoch`: the epoch whose state was read, which must still be the one saved;
    `world`: how many processes train (torchrun); a run is resumed only by as many
    as started it, because their number sets the global batch, each one's share of the batches and the
    learning-rate schedule.
    """
    out = Path(cfg.out)
    if not resume:
        check_out(out, cfg.overwrite)
        return out
    saved = read_progress(out)
    if resumed_epoch is not None and saved["epoch"] != resumed_epoch:
        raise UserError(f"another process saved epoch {saved['epoch']} of this run while its epoch {resumed_epoch} "
                        "was being read: is it still training? Resume it once that one stops", out)
    extending = cfg.epochs != saved["config"]["epochs"]  # --epochs N: resume_config allowed it
    if is_finished(out) and not extending or saved["epoch"] >= epochs:
        raise UserError("this run already finished: nothing to resume", out)
    if saved["data_sha256"] != {s.name: s.sha256 for s in sources}:
        raise UserError("the data changed since this run was interrupted: resume it with the data it started "
                        "with, or start a new run", out)
    if saved.get("weights_sha256", weights_sha256) != weights_sha256:  # runs saved before this have none
        raise UserError(f"the pretrained weights changed since this run was interrupted ({cfg.weights} holds "
                        "another model.safetensors): resume it from the weights it started with, or start a new "
                        "run", out)
    if saved["world_size"] != world:
        started = "python train.py" if saved["world_size"] == 1 else \
            f"torchrun --nproc_per_node {saved['world_size']} train.py"
        raise UserError(f"this run trained in {saved['world_size']} process(es), not {world}: the number sets the "
                        f"global batch and the learning-rate schedule, so resume it as it started: {started} "
                        f"--resume {out}", out)
    return out
