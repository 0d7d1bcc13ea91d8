"""Train one BERT backbone with a sentence-classification head and an NER head.

    python train.py --freeze backbone                  # demo data, default weights, heads only
    python train.py --data ../shared/data/snips         # full fine-tuning on SNIPS
    python train.py --data ../shared/data/conll2003 --data ../shared/data/ag_news   # NER + topics, two corpora
    python train.py --resume runs/latest                # continue an interrupted run exactly
    python train.py --resume runs/latest --epochs 8     # train a finished run further (it needs --keep-resume)
    torchrun --standalone --nproc_per_node 2 train.py   # the same training in 2 processes (README: torchrun)

Every flag below is a field of minimtl/config.py:TrainConfig (the core's) or minimtl/machinery/settings.py:
RunConfig (the run's and the extensions'), where its default and check are declared.
"""
# This docstring is `train.py --help`'s description: train.py and the installed `minimtl-train` both run main().

import argparse
import os
import sys
from dataclasses import MISSING, fields

from ..guards.errors import UserError, quote
from .cli import add_config_flags, base_type, given
from .distributed import PeerLost, joined
from .interrupts import Interrupted
from .resume import resume_config
from .run import train as run_train
from .settings import RunConfig

FIELDS = {f.name: f for f in fields(RunConfig)}
KINDS = {bool: "True or False", int: "a whole number", float: "a number", str: "a string"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR with its own settings "
                        "(from the end of its last finished epoch). Other options are refused but two: --epochs N, "
                        "a new total (for a finished run, which then trains further from the state that "
                        "--keep-resume kept), and --keep-resume")
    add_config_flags(parser)
    args = parser.parse_args(argv)
    settings = given(args)
    if sys.stdout is not None:  # a file name need not be UTF-8, and any log line may name one: say it escaped
        sys.stdout.reconfigure(errors="backslashreplace")
    # Under torchrun every process prints its own errors; the ones after the first say which process they are.
    who = f"rank {os.environ['RANK']}: " if os.environ.get("RANK", "0") != "0" else ""
    try:
        if args.resume:
            if other := next((name for name in settings if name not in ("epochs", "keep_resume")), None):
                raise UserError(f"--resume continues a run with its own settings: drop --{other}".replace("_", "-"))
            _run(resume_config(args.resume, **settings), resume=True)
        else:
            _run(RunConfig(**settings))
    except UserError as e:
        print(f"{who}error: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        print(f"{who}{e}", file=sys.stderr)
        sys.exit(130)  # the shell's code for "stopped by Ctrl-C"
    except PeerLost as e:
        print(f"{who}{e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:  # the system said no where no step above expected it (every save says its own)
        print(f"{who}error: {UserError(e.strerror or e, e.filename)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # before training started: nothing was written
        print(f"{who}interrupted before training started: nothing was saved", file=sys.stderr)
        sys.exit(130)


def train(**settings):
    """One training run from Python (`minimtl.train`), as `train.py` runs it: `settings` are RunConfig's fields,
    train.py's flags with _ for -, e.g. `train(data=["../shared/data/snips"], freeze=["backbone"], out="runs/x")`.
    Returns what run.py's train returns ({"best_epoch", "dev", "test"}). A bad setting raises UserError, which
    names it as its flag."""
    return _run(RunConfig(**{name: _typed(name, value) for name, value in settings.items()}))


def _run(cfg, resume=False):
    cfg.check()
    with joined(cfg.torch_device()) as ddp:  # a process group only when started by torchrun
        return run_train(cfg, resume=resume, ddp=ddp)


def _typed(name, value):
    """`value` for the setting `name` as its flag would parse it: argparse checks the command line's types,
    and a Python caller's must not reach the checks as a TypeError, nor a string be read as a list of letters."""
    if name not in FIELDS:
        raise UserError(f"{name!r} is not a setting: the settings are train.py's flags with _ for - "
                        "(python train.py --help)")
    flag, f = "--" + name.replace("_", "-"), FIELDS[name]
    kind, default = base_type(f.type), f.default if f.default is not MISSING else f.default_factory()
    if value is None and default is None:
        return None
    if kind is list:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{flag} must be a list of strings ({name}=[{quote(value)}] for one), not {quote(value)}")
        return [_typed_one(flag, str, v) for v in value]
    return _typed_one(flag, kind, value)


def _typed_one(flag, kind, value):
    if kind is str and isinstance(value, os.PathLike):  # paths: data, weights, out
        value = os.fspath(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:  # True is an int too
        raise UserError(f"{flag} must be {KINDS[kind]}, not {quote(value)} (a {type(value).__name__})")
    return value
