"""`train.py`'s flags, generated from the RunConfig fields: each setting is declared once, in config.py (the
core's) or settings.py (the run's and the extensions')."""

import argparse
import types
import typing
from dataclasses import MISSING, fields

from .settings import GROUPS, RunConfig


def add_config_flags(parser, names=None):
    """One flag per RunConfig field, grouped as the fields are; defaults are left to the dataclass. `names`: only
    these fields' flags, ungrouped (for infer.py, which shares a few)."""
    groups = {name: parser.add_argument_group(name) for name in GROUPS} if names is None else {}
    for f in fields(RunConfig):
        meta = f.metadata
        if names is not None and f.name not in names:
            continue
        group = groups.get(meta["group"], parser)
        default = f.default if f.default is not MISSING else f.default_factory()
        kind = base_type(f.type)
        shown = " ".join(default) if kind is list else default
        # A None default is resolved from other settings, which the help text itself explains, as some others do.
        help = meta["help"] if kind is bool or default is None or "default:" in meta["help"] else \
            f"{meta['help']} (default: {shown})"
        kwargs = {"default": None, "help": help.replace("%", "%%"), "choices": meta["choices"]}
        if kind is bool:  # a None default is resolved by the recipe: --flag and --no-flag both say so
            kwargs.update(action="store_true" if default is not None else argparse.BooleanOptionalAction)
            del kwargs["choices"]
        elif kind is list:
            # --freeze backbone cls-head, or --data A --data B: both add to the list
            kwargs.update(nargs="+", action="extend", metavar=f.name.upper().rstrip("S") if meta["choices"] else None)
        else:
            kwargs.update(type=kind)
        group.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def given(args):
    """The settings named on the command line (those left out keep the dataclass default)."""
    return {f.name: getattr(args, f.name) for f in fields(RunConfig) if getattr(args, f.name) is not None}


def base_type(annotation):
    """int for `int | None`, list for `list[str]`."""
    if isinstance(annotation, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return typing.get_origin(annotation) or annotation
