"""Pure functions that measure a `transformer.Decoder` against the paper's results.

Each function's docstring names the result id (R1..R12 of docs/results.md) it serves and
the shape it returns. Nothing here mutates a model.
"""

from analysis.bound import path_bound
from analysis.bound_report import bound_report, spearman
from analysis.collapse import (
    PairFamily,
    SequenceFamily,
    collapse_lengths,
    collapse_sweep,
    collapse_sweep_slow,
    counting_pairs,
    fit_decay,
    ones_then_zero_pairs,
    pair_distance,
    repeated_last_pair,
    separated_digits,
)
from analysis.counting import counting_contrast, ratio_invariance, token_spread
from analysis.fitting import geometric_rate, loglog_slope
from analysis.jacobian import last_token_jacobian
from analysis.log_bound import PathTerms, log_path_terms
from analysis.sensitivity import (
    block_norms,
    estimate_sensitivity,
    layer_position_map,
    sensitivity_profile,
)
from analysis.softmax import (
    ALTERNATING_TV,
    alternating_tv,
    last_weight_gap,
    softmax_tv,
    total_variation,
    tv_decay_experiment,
)
from analysis.synthetic_collapse import Reading, synthetic_pair_distances
from analysis.validation import UnderflowWarning, states_at_layer
from analysis.spectral import (
    convergence_rate,
    deep_limit,
    distance_to_first_column,
    is_lower_triangular,
    is_row_stochastic,
    numerical_rank,
    ordered_product,
    second_eigenvalue,
    spectrum_check,
    stable_rank,
)

__all__ = [
    "ALTERNATING_TV", "PairFamily", "PathTerms", "Reading", "SequenceFamily", "alternating_tv",
    "block_norms",
    "bound_report", "collapse_lengths", "collapse_sweep", "collapse_sweep_slow",
    "convergence_rate", "counting_contrast", "counting_pairs", "deep_limit",
    "distance_to_first_column", "estimate_sensitivity", "fit_decay", "geometric_rate",
    "is_lower_triangular", "is_row_stochastic", "last_token_jacobian", "last_weight_gap",
    "layer_position_map", "log_path_terms", "loglog_slope", "numerical_rank",
    "ones_then_zero_pairs",
    "ordered_product", "pair_distance", "path_bound", "ratio_invariance",
    "repeated_last_pair", "second_eigenvalue", "sensitivity_profile",
    "separated_digits", "softmax_tv", "spearman", "spectrum_check", "stable_rank",
    "synthetic_pair_distances", "token_spread", "total_variation", "tv_decay_experiment",
    "UnderflowWarning", "states_at_layer",
]
