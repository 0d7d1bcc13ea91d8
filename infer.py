"""Predict with a trained model: `python infer.py --help`. The command is minimtl/machinery/infer_command.py,
which the installed `minimtl-infer` runs as well."""

from minimtl.machinery.infer_command import main

if __name__ == "__main__":
    main()
