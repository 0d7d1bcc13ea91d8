"""Train the multi-task model. Not implemented yet: the training loop lands with the train/infer issue."""

import argparse

parser = argparse.ArgumentParser(description=__doc__)
parser.print_help()
