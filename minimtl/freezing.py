r"""Which parameters learn, and how fast: freezing, parameter groups, gradual unfreezing.

The model is cut into units that are frozen or trained as a whole:

    embeddings | layer.0 ... layer.N-1 | cls-head | ner-head    (+ adapters, when the model has any)
    \________________ backbone _______/   (+ head-input, what the model adds to the heads' input)

Freezing a unit is three things: `requires_grad=False` (no gradient), leaving it out of the optimizer
(AdamW's weight decay would still shrink it), and eval mode (no dropout: MultiTaskModel.train). What trains
is grouped by learning rate (small for the pretrained backbone, large for fresh heads) and by weight decay
(off for biases and LayerNorm weights: decaying them only fights the normalisation).
"""

import torch
import torch.nn as nn

from .guards.errors import UserError

FREEZE_MODES = ("none", "all", "backbone", "embeddings", "cls-head", "ner-head")


def backbone_units(n_layers):
    """The encoder's unit names, bottom to top."""
    return ["embeddings"] + [f"layer.{i}" for i in range(n_layers)]


def unit_modules(model):
    """The one list of units: name -> module, bottom to top. Everything else here is derived from it."""
    embeddings = model.bert.embeddings
    if model.embedding_input is not None:  # what the model adds to the input embeddings is part of them
        embeddings = nn.ModuleList([embeddings, model.embedding_input])
    modules = dict(zip(backbone_units(len(model.bert.layers)), [embeddings, *model.bert.layers]))
    modules.update({name: head for name, head in (("head-input", model.head_input), ("cls-head", model.cls_head),
                                                  ("ner-head", model.ner_head)) if head is not None})
    return modules


def adapter_parameters(model):
    """The parameters of modules that train in place of the frozen weights around them, which they name with
    `adapter_parameters()` (extensions/lora.py)."""
    return [p for m in model.modules() if hasattr(m, "adapter_parameters") for p in m.adapter_parameters()]


def units(model):
    """name -> its parameters, bottom to top. Adapters are a unit of their own, taken out of the layers that
    hold them; what the model adds to its input embeddings joins them (it too learns in place of the frozen
    encoder), and without adapters is part of the embeddings."""
    adapters = adapter_parameters(model)
    if adapters and model.embedding_input is not None:
        adapters = adapters + list(model.embedding_input.parameters())
    inside = {id(p) for p in adapters}
    named = {name: [p for p in m.parameters() if id(p) not in inside] for name, m in unit_modules(model).items()}
    if adapters:
        named["adapters"] = adapters
    return named


def kind(unit):
    """Which learning rate a unit trains with: "heads", "adapters" or "backbone"."""
    return "heads" if unit.endswith("-head") or unit == "head-input" else "adapters" if unit == "adapters" \
        else "backbone"


def freezes_backbone(modes):
    """Whether `--freeze MODES` keeps the whole backbone frozen for the whole run (the frozen-backbone recipe)."""
    return bool({"backbone", "all"} & set(modes))


def frozen_units(model, modes, freeze_layers=0):
    """The unit names that `--freeze MODES --freeze-layers N` freeze. With adapters in the model, the backbone
    is frozen too: the adapters are what learns in its place."""
    n_layers = len(model.bert.layers)
    unknown = [m for m in modes if m not in FREEZE_MODES]
    if unknown:
        raise UserError(f"unknown freeze mode {unknown[0]!r}: choose from {', '.join(FREEZE_MODES)}")
    if not 0 <= freeze_layers <= n_layers:
        raise UserError(f"--freeze-layers {freeze_layers}: the encoder has {n_layers} layers")
    if "none" in modes and len(modes) > 1:
        raise UserError("--freeze none cannot be combined with other modes")
    backbone = backbone_units(n_layers)
    names = set(backbone) if adapter_parameters(model) else set()
    if "all" in modes:
        names.update(units(model))
    if freezes_backbone(modes):
        names.update(backbone)
    if "embeddings" in modes:
        names.add("embeddings")
    names.update(head for head in ("cls-head", "ner-head") if head in modes)
    if freeze_layers:
        names.update(backbone[: freeze_layers + 1])  # the embeddings sit below layer 0: they go too
    return {name for name in names if name in units(model)}


def set_frozen(model, frozen):
    """Freeze exactly the named units and thaw all others (once per epoch: training.optimizer_for_epoch)."""
    for name, params in units(model).items():
        for p in params:
            p.requires_grad_(name not in frozen)


def frozen_in_epoch(model, cfg, epoch):
    """The units frozen during `epoch` (1-based): --freeze, --freeze-layers and adapters, then the schedule."""
    frozen = frozen_units(model, cfg.freeze, cfg.freeze_layers)
    if cfg.unfreeze_schedule:
        frozen |= UnfreezeSchedule(cfg.unfreeze_schedule, len(model.bert.layers)).frozen_backbone(epoch)
    return frozen


def unit_learning_rates(model, lrs, layer_decay=1.0):
    """unit -> its peak learning rate, `lrs` giving each kind's. With layer-wise decay D < 1 the backbone's rate
    shrinks by D per unit going down (the embeddings train at D^N times the top layer's): lower layers hold the
    general features every task needs, so a small dataset should reshape the top more than the bottom."""
    backbone = backbone_units(len(model.bert.layers))
    depth = {name: len(backbone) - 1 - i for i, name in enumerate(backbone)}  # units above it: 0 for the top layer
    return {unit: lrs[kind(unit)] * layer_decay ** depth.get(unit, 0) for unit in units(model)}


def parameter_groups(model, lrs, weight_decay, layer_decay=1.0):
    """AdamW groups of what trains: (backbone | adapters | heads) x (decay | no decay), the backbone one group
    per unit when layer-wise decay gives each its own rate. "base_lr" is the peak the schedule scales."""
    unit_lrs = unit_learning_rates(model, lrs, layer_decay)
    groups = {}
    for unit, params in units(model).items():
        name = unit if layer_decay != 1 and kind(unit) == "backbone" else kind(unit)
        for p in params:
            if not p.requires_grad:
                continue
            decay = weight_decay if p.ndim >= 2 else 0.0  # 1-d tensors are biases and LayerNorm weights
            group = groups.setdefault((name, decay > 0), {"params": [], "lr": unit_lrs[unit], "base_lr": unit_lrs[unit],
                                                          "weight_decay": decay,
                                                          "name": f"{name}{'' if decay else ' (no decay)'}"})
            group["params"].append(p)
    return list(groups.values())


def make_optimizer(model, lrs, weight_decay, layer_decay=1.0, previous=None):
    """AdamW over exactly what trains now (`parameter_groups`). Built afresh when that changes (gradual
    unfreezing) and on resume; a parameter `previous` trained keeps its moments and step count."""
    groups = parameter_groups(model, lrs, weight_decay, layer_decay)
    if not groups:
        raise UserError("nothing is trainable: check --freeze and --unfreeze-schedule")
    # fused: one pass over each parameter per step instead of a dozen foreach passes.
    optimizer = torch.optim.AdamW(groups, fused=groups[0]["params"][0].device.type in ("cpu", "cuda"))
    if previous is not None:
        training = {p for g in groups for p in g["params"]}
        optimizer.state.update({p: state for p, state in previous.state.items() if p in training})
    return optimizer


class UnfreezeSchedule:
    """`--unfreeze-schedule`: how many top encoder layers train in each epoch. "gradual": heads only in epoch 1,
    then one more layer from the top each epoch, then the embeddings (ULMFiT: fresh heads' large early gradients
    never reach the general lower layers). "0,2,4,all": the count per epoch, the last for every later one."""

    def __init__(self, spec, n_layers):
        if spec == "gradual":
            steps = [str(k) for k in range(n_layers + 1)] + ["all"]
        else:
            steps = [s.strip() for s in spec.split(",")]
        self.stages = []
        for s in steps:
            if s == "all":
                self.stages.append(n_layers + 1)  # every layer plus the embeddings
            elif s.isascii() and s.isdigit() and int(s) <= n_layers:  # "²".isdigit() is true too
                self.stages.append(int(s))
            else:
                raise UserError(f"--unfreeze-schedule {spec!r}: {s!r} is not 'all' or a layer count "
                                f"from 0 to {n_layers}")
        self.backbone = backbone_units(n_layers)

    def frozen_backbone(self, epoch):
        """Backbone unit names frozen during `epoch` (1-based)."""
        thawed = self.stages[min(epoch, len(self.stages)) - 1]
        return set(self.backbone[: len(self.backbone) - thawed])
