"""`python -m training`: train a decoder on one task (see `training.train.main`)."""

import sys

from training.train import cli

sys.exit(cli())
