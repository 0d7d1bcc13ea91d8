"""Train one BERT backbone with a sentence-classification head and an NER head.

    python train.py --freeze backbone                  # demo data, default weights, heads only
    python train.py --data ../shared/data/snips         # full fine-tuning on SNIPS
    python train.py --data ../shared/data/conll2003 --data ../shared/data/ag_news   # NER + topics, two corpora
    python train.py --resume runs/latest                # continue an interrupted run exactly
    torchrun --standalone --nproc_per_node 2 train.py   # the same training in 2 processes (README: torchrun)

Every flag below is a field of minimtl/config.py:TrainConfig (the core's) or minimtl/machinery/settings.py:
RunConfig (the run's and the extensions'), where its default and check are declared.
"""

import argparse
import os
import sys

from minimtl.machinery.settings import RunConfig
from minimtl.machinery.cli import add_config_flags, given
from minimtl.machinery.distributed import PeerLost, joined
from minimtl.guards.errors import UserError
from minimtl.machinery.interrupts import Interrupted
from minimtl.machinery.resume import resume_config
from minimtl.machinery.run import train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR with its own settings "
                        "(from the end of its last finished epoch; give no other option)")
    add_config_flags(parser)
    args = parser.parse_args(argv)
    settings = given(args)
    if sys.stdout is not None:  # a file name need not be UTF-8, and any log line may name one: say it escaped
        sys.stdout.reconfigure(errors="backslashreplace")
    # Under torchrun every process prints its own errors; the ones after the first say which process they are.
    who = f"rank {os.environ['RANK']}: " if os.environ.get("RANK", "0") != "0" else ""
    try:
        if args.resume:
            if settings:
                raise UserError(f"--resume continues a run with its own settings: drop --{next(iter(settings))}"
                                .replace("_", "-"))
            cfg = resume_config(args.resume)
        else:
            cfg = RunConfig(**settings)
        cfg.check()
        with joined(cfg.torch_device()) as ddp:  # a process group only when started by torchrun
            train(cfg, resume=bool(args.resume), ddp=ddp)
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


if __name__ == "__main__":
    main()
