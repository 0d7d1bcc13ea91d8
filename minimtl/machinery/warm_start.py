"""--weights RUN: a new run that starts from an earlier run's encoder and, where they fit, its trained heads.

A run's heads are worth keeping: more epochs on new text with the same labels, or the same data under other
loop settings (--freeze, learning rates, --epochs), should start from what the heads already know. A head fits
when this run names the same classes in the same order (an output row is one class) and builds the same
layout (every tensor's name and shape: --pooling, --layers, --sentence-head / --token-head, --crf); a head that
does not fit starts new, and the log says which and why. The temperatures are not carried: training fits its
own on dev at the end.
"""

from pathlib import Path

from ..guards.errors import read_json
from ..guards.files import read_state_dict
from .checkpoint import read_meta

HEADS = (("cls_head", "labels"), ("ner_head", "tags"))  # each head, and the vocabulary its output rows name
SHARED = "head_input."  # word shapes added to what both heads read: kept with the heads that were trained on them


def keep_trained_heads(model, directory, vocab, log):
    """Load into `model` (as built for this run, on the CPU) the heads of the run in `directory` that fit it;
    log which are kept and which start new. A published checkpoint (no minimtl section) has no heads."""
    raw = read_json(Path(directory) / "config.json")
    if not (isinstance(raw, dict) and isinstance(raw.get("minimtl"), dict)):
        return
    meta = read_meta(directory)[1]
    theirs = {k: v for k, v in read_state_dict(Path(directory) / "model.safetensors").items() if not k.startswith("bert.")}
    ours = {k: v for k, v in model.state_dict().items() if not k.startswith("bert.")}
    kept, new = [], []
    for head, names in HEADS:
        if getattr(model, head) is None:
            continue
        mine = getattr(vocab, names)
        keys = {k for k in ours if k.startswith(head + ".")}
        if meta.get(names) != mine.names:
            new.append(f"{head} (the run's {names} are {meta.get(names)}, this data's {mine.names})")
        elif keys != {k for k in theirs if k.startswith(head + ".")} or any(ours[k].shape != theirs[k].shape
                                                                           for k in keys):
            new.append(f"{head} (built otherwise: --pooling, --layers, --sentence-head/--token-head or --crf differ)")
        else:
            kept.append(head)
    shared = [k for k in ours if k.startswith(SHARED)]
    if kept and shared and all(k in theirs and theirs[k].shape == ours[k].shape for k in shared):
        kept.append(SHARED.rstrip("."))
    model.load_state_dict({k: theirs[k] for k in theirs if k.split(".")[0] in kept}, strict=False)
    log(f"--weights {directory} is a minimtl run: this run starts from its encoder"
        + (f" and its trained {', '.join(kept)}" if kept else "")
        + (f"; new: {', '.join(new)}" if new else "") + " (--resume continues a run itself)")
