"""Everything, beyond the best model, that a run needs to continue exactly where it stopped.

Saved at the end of every epoch into `OUT/resume/`, inside the same atomic directory swap as the rest of
the run, so the state on disk always belongs to one finished epoch:

    model.safetensors       the trained weights as they are now (the best ones may be older: in OUT/)
    optimizer.safetensors   AdamW's moment estimates and step counts, one tensor per parameter and kind
    state.json              epoch, step, best score, metric history, the run's settings, the optimizer's
                            parameter groups, and the Python / NumPy / torch random-number states

Random states matter for exact resumption: dropout draws from torch's generator, so a resumed run must
continue the same stream to reproduce the uninterrupted run bit for bit. No pickle anywhere: tensors in
safetensors, the rest in JSON.
"""

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .errors import UserError, read_json
from .weights import read_state_dict

STATE_DIR = "resume"


def save_state(directory, model, optimizer, progress):
    directory = Path(directory)
    directory.mkdir()
    save_file(trained_tensors(model, optimizer), directory / "model.safetensors")
    opt = optimizer.state_dict()
    tensors = {f"{index}.{key}": value.cpu().contiguous()
               for index, state in opt["state"].items() for key, value in state.items()}
    tensors["torch_rng"] = torch.get_rng_state()
    save_file(tensors, directory / "optimizer.safetensors")
    np_state = np.random.get_state()
    state = {
        **progress,
        "param_groups": opt["param_groups"],
        "python_rng": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    (directory / "state.json").write_text(json.dumps(state) + "\n", encoding="utf-8")


def trained_tensors(model, optimizer):
    """The parameters the optimizer holds. Every other one still has the value the run started from,
    which a resumed run rebuilds exactly (same weights file, same seed): with a frozen backbone that is
    a few thousand numbers per epoch instead of the whole encoder."""
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if id(p) in trained}


def read_progress(run_dir):
    """The state.json of an interrupted run in `run_dir`, validated enough to build the run again."""
    path = Path(run_dir) / STATE_DIR / "state.json"
    if not path.is_file():
        raise UserError(f"nothing to resume: no {STATE_DIR}/state.json (only runs of this version that "
                        "finished at least one epoch can be resumed)", run_dir)
    state = read_json(path)
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict) or "epoch" not in state:
        raise UserError("not a training state written by minimtl", path)
    return state


def load_state(run_dir, model, optimizer, state):
    """Put the saved weights, optimizer moments and random states back in place."""
    directory = Path(run_dir) / STATE_DIR
    weights = read_state_dict(directory / "model.safetensors")
    if weights.keys() != trained_tensors(model, optimizer).keys():
        raise UserError("saved weights do not match the model this run builds", directory / "model.safetensors")
    model.load_state_dict(weights, strict=False)
    tensors = load_file(directory / "optimizer.safetensors")
    per_param = {}
    for name, value in tensors.items():
        if name != "torch_rng":
            index, key = name.split(".", 1)
            per_param.setdefault(int(index), {})[key] = value
    try:
        optimizer.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
    except ValueError as e:
        raise UserError(f"optimizer state does not match this run ({e})", directory) from None
    torch.set_rng_state(tensors["torch_rng"])
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy_rng"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
