"""Train a model: `python train.py --help`. The command is minimtl/machinery/train_command.py, which the
installed `minimtl-train` runs as well (and torchrun runs this file)."""

from minimtl.machinery.train_command import main

if __name__ == "__main__":
    main()
