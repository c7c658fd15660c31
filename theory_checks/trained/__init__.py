"""The `trained` profile's checks (R5 `counting`, R11 `copying`, R12 `mitigations`) on
small decoders trained on the paper's task probes (`recipes`: what is trained, and the
THEORY_CHECKS_CACHE disk cache)."""
