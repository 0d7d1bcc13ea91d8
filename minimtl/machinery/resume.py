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
"""

import json
import random
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..config import TrainConfig
from ..errors import UserError, read_json
from ..weights import read_state_dict
from .rundir import check_out, is_finished

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
    save_file({names[p]: p.detach().cpu().contiguous() for p in trained}, directory / "model.safetensors")
    # AdamW's state per parameter *name*: the optimizer of any epoch can be rebuilt from the trainable units
    # (freezing.make_optimizer) and take back the state of each parameter it holds.
    tensors = {f"{names[p]}:{key}": value.detach().cpu().contiguous()
               for p in trained for key, value in optimizer.state.get(p, {}).items()}
    tensors["torch_rng"] = torch.get_rng_state()
    save_file(tensors, directory / "optimizer.safetensors")
    py_version, py_internal, py_gauss = random.getstate()
    np_state = np.random.get_state()
    state = {**progress, "python_rng": [py_version, list(py_internal), py_gauss],
             "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    (directory / "state.json").write_text(json.dumps(state) + "\n", encoding="utf-8")


def read_progress(run_dir):
    """The state.json of an interrupted run in `run_dir`, validated enough to build the run again."""
    path = Path(run_dir) / STATE_DIR / "state.json"
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
            raise UserError(f"{key!r} should be {kind.__name__}, not {value!r}: the training state is damaged", path)
    if not 1 <= state["epoch"] == len(state["history"]) or not 0 <= state["best_epoch"] <= state["epoch"]:
        raise UserError("'epoch', 'best_epoch' and 'history' do not agree: the training state is damaged", path)
    world = state.setdefault("world_size", 1)  # runs saved before torchrun support were single processes
    if type(world) is not int or world < 1:
        raise UserError(f"'world_size' should be a positive integer, not {world!r}: the training state is damaged",
                        path)
    return state


def load_state(run_dir, model, optimizer, state):
    """Put the saved weights, AdamW state and random states back; `optimizer` holds what the run trained
    in its last finished epoch."""
    directory = Path(run_dir) / STATE_DIR
    params = {name: p for name, p in model.named_parameters()}
    trained = {name for name, p in params.items() if any(p is q for g in optimizer.param_groups for q in g["params"])}
    weights = read_state_dict(directory / "model.safetensors")
    if weights.keys() != trained:
        raise UserError("saved weights do not match the model this run builds", directory / "model.safetensors")
    model.load_state_dict(weights, strict=False)
    tensors = read_state_dict(directory / "optimizer.safetensors")
    for key, value in tensors.items():
        if key == "torch_rng":
            continue
        name, _, kind = key.partition(":")
        if name not in trained:
            raise UserError(f"optimizer state for {name!r}, which this run does not train", directory)
        optimizer.state[params[name]][kind] = value if kind == "step" else value.to(params[name].device)
    torch.set_rng_state(tensors["torch_rng"])
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy_rng"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))


def resume_config(run_dir):
    """The settings of the interrupted run in `run_dir`: a resumed run must use exactly the same ones."""
    saved = read_progress(run_dir)["config"]
    known = {f.name: f for f in fields(TrainConfig)}
    unknown = set(saved) - set(known)
    if unknown:
        raise UserError(f"the saved run has settings this version does not know: {', '.join(sorted(unknown))}",
                        run_dir)
    missing = set(known) - set(saved)
    if missing:  # an older version's run: filling in today's defaults would change its recipe halfway
        raise UserError(f"the saved run lacks settings this version has: {', '.join(sorted(missing))} (it was "
                        "written by an older version; train it again)", run_dir)
    default, path = TrainConfig(), Path(run_dir) / STATE_DIR / "state.json"
    for name, value in saved.items():
        # The type of the default (None for "by rule" settings such as epochs) is what a setting must have.
        wanted = type(getattr(default, name))
        if value is not None and not (type(value) is wanted or wanted is float and type(value) is int) \
                and getattr(default, name) is not None:
            raise UserError(f"setting {name!r} should be {wanted.__name__}, not {value!r}: the training state is "
                            "damaged", path)
    cfg = TrainConfig(**{**saved, "out": str(run_dir)})
    try:  # a saved value out of range is damage in this file, not a flag the user gave
        cfg.check()
    except UserError as e:
        raise UserError(f"a saved setting is impossible ({e}): the training state is damaged", path) from None
    return cfg


def claim_run_directory(cfg, resume, sources, epochs, world=1):
    """--out as a Path, once it is sure that training may write there (machinery/rundir.py has the rules).

    `epochs`: the recipe's; `world`: how many processes train (torchrun); a run is resumed only by as many
    as started it, because their number sets the global batch, each one's share of the batches and the
    learning-rate schedule.
    """
    out = Path(cfg.out)
    if not resume:
        check_out(out, cfg.overwrite)
        return out
    saved = read_progress(out)
    if is_finished(out) or saved["epoch"] >= epochs:
        raise UserError("this run already finished: nothing to resume", out)
    if saved["data_sha256"] != {s.name: s.sha256 for s in sources}:
        raise UserError("the data changed since this run was interrupted: resume it with the data it started "
                        "with, or start a new run", out)
    if saved["world_size"] != world:
        started = "python train.py" if saved["world_size"] == 1 else \
            f"torchrun --nproc_per_node {saved['world_size']} train.py"
        raise UserError(f"this run trained in {saved['world_size']} process(es), not {world}: the number sets the "
                        f"global batch and the learning-rate schedule, so resume it as it started: {started} "
                        f"--resume {out}", out)
    return out
