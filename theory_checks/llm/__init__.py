"""The `llm` profile: the paper's LLM experiments on real checkpoints (R4 `collapse`, R5
`tasks`, R6 `precision`, R11 `sensitivity`, R12 `commas`, R12b `windows`), each run once per
model, and the models side by side (`compare`, reading each check's `records`).

Their shared pieces, by role, re-exported here (`from theory_checks import llm as L`):
`models` (which checkpoints, loading once per run, `LLM`), `tokens` (the byte fallback,
tokenisation facts), `prompts` (the paper's prompts, verbatim), `pairs` (Figure 5's
token-level pairs), `sweeps` (Figure 5's sweeps, shared through the run's store).
"""

from theory_checks.llm.models import (
    LLM,
    ModelSource,
    bundled_model_path,
    describe_model,
    figure_name,
    installed_models,
    llm_for,
    load_llm,
    model_sources,
)
from theory_checks.llm.pairs import digits_cut_points, digits_pairs, ones_pairs
from theory_checks.llm.prompts import (
    COMMA_EVERY,
    FIG2_ANSWER,
    FIG2_COPY,
    FIG3_ANSWER,
    FIG3_COUNT,
    FIG3_SUM,
    FIG5_COPY_QUESTION,
    FIG5_COUNT_QUESTION,
    FIG5_PANELS,
    FIG5_SEPARATOR,
    fig5_prefix,
)
from theory_checks.llm.sweeps import (
    COLLAPSE_DTYPES,
    at_lengths,
    collapse_n_max,
    collapse_sweep_lengths,
    figure5_sweep,
    first_identical,
    require_x64,
)
from theory_checks.llm.tokens import (
    PROBE_TEXTS,
    ByteTokenizer,
    matches_text,
    one_token_per_digit,
    tokenization_facts,
)

__all__ = [
    "COLLAPSE_DTYPES", "COMMA_EVERY", "FIG2_ANSWER", "FIG2_COPY", "FIG3_ANSWER", "FIG3_COUNT",
    "FIG3_SUM", "FIG5_COPY_QUESTION", "FIG5_COUNT_QUESTION", "FIG5_PANELS", "FIG5_SEPARATOR",
    "LLM", "PROBE_TEXTS", "ByteTokenizer", "ModelSource", "at_lengths", "bundled_model_path",
    "collapse_n_max", "collapse_sweep_lengths", "describe_model", "digits_cut_points",
    "digits_pairs", "fig5_prefix", "figure5_sweep", "figure_name", "first_identical",
    "installed_models", "llm_for", "load_llm", "matches_text", "model_sources",
    "one_token_per_digit", "ones_pairs", "require_x64", "tokenization_facts",
]
