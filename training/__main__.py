"""`python -m training`: train a decoder on one task (see `training.cli`)."""

import sys

from training.cli import cli

sys.exit(cli())
