"""Predict with a trained model. Not implemented yet: inference lands with the train/infer issue."""

import argparse

parser = argparse.ArgumentParser(description=__doc__)
parser.print_help()
