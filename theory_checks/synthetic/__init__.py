"""The `quick` and `paper` profiles' checks, R1..R12 (`rNN_*.py`): exact softmax and matrix
experiments and small random decoders built to each theorem's setting (`models`)."""
