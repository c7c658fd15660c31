"""`TransformerConfig`: every architectural and numerical switch of the decoder.

The defaults give the paper's model (docs/results.md, "The model the paper analyses"):
a causal Pre-LN decoder. Architecture-specific behaviour (GPT-2, Llama, Gemma, Qwen) is
expressed by setting these switches, never by branching on a model name.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp

POS_ENCODINGS = ("none", "sinusoidal", "learned", "rope", "alibi")
ABS_POS_PLACEMENTS = ("residual", "scores")
NORMS = ("layernorm", "rmsnorm", "none", "constant")
NORM_PLACEMENTS = ("pre", "post", "sandwich", "post_sublayer", "shared_pre")
QK_NORM_OVER = ("head", "projection")
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu")
DTYPES = ("float64", "float32", "bfloat16", "float16")
MATMUL_PRECISIONS = ("highest", "high", "default")
# How attention turns scores into weights (`transformer.layers.attention_softmax`).
ATTN_SOFTMAXES = ("standard", "adaptive_temperature", "scalable")
# Storage formats of fake quantisation (`activation_format`, `kv_format`).
FLOAT8_FORMATS = ("float8_e4m3fn", "float8_e5m2")


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")


def _check_positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


# Every float field must be a finite real number (`_check_float_fields` loops over the
# annotations, so fields added later are covered); these must also be positive / at least 0.
_POSITIVE_FLOATS = (
    "rope_theta", "rope_theta_local", "rope_fraction", "rope_linear_factor", "norm_beta",
    "attn_logit_softcap", "final_logit_softcap", "query_scale", "embedding_scale", "init_std",
    "ssmax_s",
)
_NON_NEGATIVE_FLOATS = ("norm_eps",)
_AT_MOST = {"rope_fraction": 1.0}


def _check_float_fields(config) -> None:
    """Every float-annotated field (an optional one may be None) is a finite real number in
    its range. A NaN epsilon, RoPE base, query scale or initialisation scale, or an infinite
    norm_beta, would otherwise build a model whose every logit is NaN or zero."""
    for field in dataclasses.fields(config):
        if str(field.type) not in ("float", "float | None"):  # scalars; tuples check themselves
            continue
        name, value = field.name, getattr(config, field.name)
        if value is None and "None" in str(field.type):
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        if name in _POSITIVE_FLOATS and not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")
        if name in _NON_NEGATIVE_FLOATS and not value >= 0:
            raise ValueError(f"{name} must be non-negative, got {value!r}")
        if name in _AT_MOST and value > _AT_MOST[name]:
            raise ValueError(f"{name} must be at most {_AT_MOST[name]:g}, got {value!r}")


def resolve_dtype(name: str) -> jnp.dtype:
    """The jnp dtype for a config dtype name; float64 needs `jax_enable_x64`."""
    _check_choice("dtype", name, DTYPES)
    if name == "float64" and not jax.config.jax_enable_x64:
        raise ValueError(
            "float64 was requested but JAX runs in 32-bit mode; call "
            "jax.config.update('jax_enable_x64', True) before building the model"
        )
    return jnp.dtype(name)


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Configuration of a decoder-only Transformer.

    Sizes:
        vocab_size, d_model, n_layers, n_heads: the usual meanings.
        n_kv_heads: key/value heads (None: = n_heads, MHA; 1: MQA; in between: GQA).
        d_head: width of one head (None: d_model // n_heads); independent of d_model.
        d_mlp: hidden width of the MLP (None: 4 * d_model).
        max_len: longest sequence; enforced for `learned` positions, a default elsewhere.

    Positions:
        pos_encoding: "none" (NoPE), "sinusoidal" / "learned" (absolute; where they enter
            is `abs_pos_placement`), "rope" (rotary on q and k), "alibi" (linear per-head
            bias on the scores).
        abs_pos_placement: where absolute (sinusoidal / learned) positions p_i enter.
            "residual" (GPT-2, the original Transformer): v^(0)_i = embedding_i + p_i, so
            positions flow through the residual stream and the values. "scores" (the
            paper's Section 2 model, k(q_i, k_j, p_ij)): positions enter only the attention
            scores: q_i = (x_i + p_i) W_q and k_j = (x_j + p_j) W_k in every layer (x the
            attention input, after norm1 in the pre placement), while values and the
            residual stream never see p. Ignored by the other encodings.
        rope_theta: rotary base; rope_fraction: share of each head's dims that rotate
            (partial rotary); rope_theta_local: base used on sliding-window layers (Gemma 3);
            rope_linear_factor: linear RoPE scaling (positions / factor) on the layers that
            use rope_theta, i.e. all layers, or the global ones when rope_theta_local is set
            (Gemma 3 4B+ global layers; 1.0: none).

    Norms:
        norm: "layernorm", "rmsnorm", "none", or "constant" (x / norm_beta: the scaling
            Theorem 5.1 assumes, no parameters).
        norm_placement: "pre" (the paper's), "post", "sandwich" (before and after each
            sublayer, as Gemma 2), "post_sublayer" (OLMo-2: a norm on each sub-layer's
            output before the residual add, no input norm), "shared_pre" (Phi-2,
            StableLM's parallel blocks: one input norm that both sub-layers read).
        norm_eps, norm_bias (layernorm bias), rmsnorm_unit_offset (scale = 1 + w, Gemma),
        norm_beta (the constant of the `constant` norm), final_norm, qk_norm (RMS-normalise
        each query and key head, Gemma 3).

    MLP:
        activation: "relu", "gelu" (exact), "gelu_tanh", "silu"; gated: SwiGLU/GeGLU form
        act(x W_gate) * (x W_up) W_down; mlp_bias.

    Attention:
        causal: lower-triangular mask (False: bidirectional).
        window: None (global), an int for every layer, or one entry per layer (None or int)
            so layers can alternate local and global. A query at position q sees keys
            k with q - window < k <= q.
        qkv_bias, out_bias: biases on the q/k/v and output projections.
        attn_logit_softcap: scores -> c * tanh(scores / c) when set.
        query_scale: multiplier of q.k (None: 1 / sqrt(d_head)).
        attn_softmax: how scores become weights (`transformer.layers.attention_softmax`):
            "standard" (softmax), "adaptive_temperature" (Velickovic et al. 2024, "Softmax
            is not enough", arXiv 2410.01104: scores x beta(entropy), their inference-time
            polynomial fit) or "scalable" (Scalable-Softmax, Nakanishi 2025, arXiv
            2501.19399: scores x ssmax_s * log n, n the number of keys the query sees).
        ssmax_s: the scalar s of Scalable-Softmax (finite, > 0; ignored otherwise).

    Embeddings:
        tie_embeddings: unembed with the embedding matrix; embedding_scale: multiply token
        embeddings (Gemma: sqrt(d_model)); final_logit_softcap; lm_head_bias.

    Precision:
        dtype: compute dtype; param_dtype: storage dtype of the parameters;
        softmax_dtype: dtype of the softmax and of the normalisation statistics (None: the
            compute dtype; "float32" keeps them in float32 as production models do);
        matmul_precision: "highest" (full float32 passes, default here because TPUs and
            H100s otherwise run float32 matmuls as bf16/TF32), "high", "default".
    """

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int | None = None
    d_head: int | None = None
    d_mlp: int | None = None
    max_len: int = 2048

    pos_encoding: str = "rope"
    abs_pos_placement: str = "residual"
    rope_theta: float = 10_000.0
    rope_fraction: float = 1.0
    rope_theta_local: float | None = None
    rope_linear_factor: float = 1.0

    norm: str = "layernorm"
    norm_placement: str = "pre"
    norm_eps: float = 1e-5
    norm_bias: bool = True
    rmsnorm_unit_offset: bool = False
    norm_beta: float = 1.0
    final_norm: bool = True
    qk_norm: bool = False

    activation: str = "gelu"
    gated: bool = False
    mlp_bias: bool = False

    causal: bool = True
    window: int | None | tuple[int | None, ...] = None
    qkv_bias: bool = False
    out_bias: bool = False
    attn_logit_softcap: float | None = None
    query_scale: float | None = None
    attn_softmax: str = "standard"
    ssmax_s: float = 1.0

    tie_embeddings: bool = True
    embedding_scale: float | None = None
    final_logit_softcap: float | None = None
    lm_head_bias: bool = False

    dtype: str = "float32"
    param_dtype: str = "float32"
    softmax_dtype: str | None = "float32"
    matmul_precision: str = "highest"
    activation_format: str | None = None
    kv_format: str | None = None

    init_std: float = 0.02

    # ---- switches of the models researchers use (issue 22): Llama 3, OLMo-2, SmolLM3,
    # GPT-NeoX / Phi-2, Granite. Validated in `_check_architecture_switches`.
    # rope_llama3: Llama 3.1's frequency-dependent RoPE scaling, (factor, low_freq_factor,
    #   high_freq_factor, original_max_position_embeddings); None: off. Applies where
    #   rope_linear_factor would (every RoPE layer, or the global ones with rope_theta_local).
    rope_llama3: tuple[float, float, float, int] | None = None
    # no_rope_layers: indices of layers that skip RoPE (SmolLM3's NoPE layers).
    no_rope_layers: tuple[int, ...] = ()
    # qk_norm_over: what qk_norm normalises, each "head" (Qwen3, Gemma 3) or the whole
    #   query / key "projection" of width n_heads * d_head / n_kv_heads * d_head (OLMo-2).
    qk_norm_over: str = "head"
    # parallel_residual: v' = v + Attn(pre_a(v)) + MLP(pre_m(v)) (GPT-NeoX, Phi-2).
    parallel_residual: bool = False
    # residual_scale: each sub-layer's branch times this before the add (Granite);
    # logit_scale: logits times this, before any final soft-cap (Granite: 1 / logits_scaling).
    residual_scale: float = 1.0
    logit_scale: float = 1.0

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_len"):
            _check_positive_int(name, getattr(self, name))
        # Fill derived defaults (frozen dataclass: object.__setattr__).
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        _check_positive_int("n_kv_heads", self.n_kv_heads)
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}"
            )
        if self.d_head is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                    "set d_head explicitly"
                )
            object.__setattr__(self, "d_head", self.d_model // self.n_heads)
        _check_positive_int("d_head", self.d_head)
        if self.d_mlp is None:
            object.__setattr__(self, "d_mlp", 4 * self.d_model)
        _check_positive_int("d_mlp", self.d_mlp)

        _check_choice("pos_encoding", self.pos_encoding, POS_ENCODINGS)
        _check_choice("abs_pos_placement", self.abs_pos_placement, ABS_POS_PLACEMENTS)
        _check_choice("norm", self.norm, NORMS)
        _check_choice("norm_placement", self.norm_placement, NORM_PLACEMENTS)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("param_dtype", self.param_dtype, DTYPES)
        if self.softmax_dtype is not None:
            _check_choice("softmax_dtype", self.softmax_dtype, DTYPES)
        _check_choice("matmul_precision", self.matmul_precision, MATMUL_PRECISIONS)
        _check_choice("attn_softmax", self.attn_softmax, ATTN_SOFTMAXES)
        for name in ("activation_format", "kv_format"):
            fmt = getattr(self, name)
            if fmt is not None:
                _check_choice(name, fmt, FLOAT8_FORMATS)
                if self.dtype not in ("float32", "float64"):
                    raise ValueError(
                        f"{name}={fmt!r} rounds stored values with float32 arithmetic; "
                        f"it needs dtype float32 or float64, got dtype={self.dtype!r}")

        _check_float_fields(self)
        if self.pos_encoding == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {self.d_model}")
        if self.pos_encoding == "rope" and self.rope_dims < 2:
            raise ValueError(
                f"rope_fraction={self.rope_fraction} of d_head={self.d_head} rotates "
                "fewer than 2 dimensions"
            )

        window = self.window
        if isinstance(window, (list, tuple)):
            window = tuple(window)
            if len(window) != self.n_layers:
                raise ValueError(
                    f"window has {len(window)} entries but n_layers={self.n_layers}"
                )
            object.__setattr__(self, "window", window)
            entries = window
        else:
            entries = (window,)
        for w in entries:
            if w is not None:
                if not isinstance(w, int) or isinstance(w, bool):
                    raise ValueError(f"window entries must be int or None, got {w!r}")
                if w < 1:
                    raise ValueError(f"window must be >= 1 (or None), got {w}")
        self._check_architecture_switches()

    def _check_architecture_switches(self) -> None:
        """The issue-22 switches: finite, in range, and combined only where defined."""
        _check_choice("qk_norm_over", self.qk_norm_over, QK_NORM_OVER)
        for name in ("residual_scale", "logit_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and positive, got {value!r}")
        layers = self.no_rope_layers
        if isinstance(layers, list):
            layers = tuple(layers)
            object.__setattr__(self, "no_rope_layers", layers)
        if not isinstance(layers, tuple) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < self.n_layers
            for i in layers
        ):
            raise ValueError(
                f"no_rope_layers must be layer indices in [0, n_layers={self.n_layers}), "
                f"got {self.no_rope_layers!r}"
            )
        if self.rope_llama3 is not None:
            llama3 = tuple(self.rope_llama3)
            object.__setattr__(self, "rope_llama3", llama3)
            if len(llama3) != 4 or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                for x in llama3
            ):
                raise ValueError(
                    "rope_llama3 must be 4 finite numbers (factor, low_freq_factor, "
                    f"high_freq_factor, original_max_position_embeddings), got {llama3!r}"
                )
            factor, low, high, original = llama3
            if not (factor > 0 and 0 < low < high and original > 0):
                raise ValueError(
                    "rope_llama3 needs factor > 0, 0 < low_freq_factor < high_freq_factor and "
                    f"original_max_position_embeddings > 0, got {llama3!r}"
                )
            if self.rope_linear_factor != 1.0:
                raise ValueError("rope_llama3 and rope_linear_factor are two scalings of the "
                                 "same frequencies: set one of them")
        if self.parallel_residual and self.norm_placement not in ("pre", "shared_pre"):
            raise ValueError(
                "parallel_residual needs norm_placement 'pre' or 'shared_pre' (input norms "
                f"only), got {self.norm_placement!r}"
            )
        if self.norm_placement == "shared_pre" and not self.parallel_residual:
            raise ValueError("norm_placement='shared_pre' (one input norm for both "
                             "sub-layers) is defined for parallel_residual=True only")

    # ---- derived quantities -------------------------------------------------------

    @property
    def n_groups(self) -> int:
        """Query heads per key/value head."""
        return self.n_heads // self.n_kv_heads

    @property
    def positions_in_scores(self) -> bool:
        """Absolute positions enter the attention scores only (abs_pos_placement="scores")."""
        absolute = self.pos_encoding in ("sinusoidal", "learned")
        return absolute and self.abs_pos_placement == "scores"

    @property
    def positions_in_residual(self) -> bool:
        """Absolute positions are added to v^(0) (abs_pos_placement="residual")."""
        absolute = self.pos_encoding in ("sinusoidal", "learned")
        return absolute and self.abs_pos_placement == "residual"

    @property
    def rope_dims(self) -> int:
        """Number of rotated dimensions per head (even)."""
        return int(self.d_head * self.rope_fraction) // 2 * 2

    def layer_window(self, layer: int) -> int | None:
        """The sliding window of one layer (None: global attention)."""
        if isinstance(self.window, tuple):
            return self.window[layer]
        return self.window

    @property
    def compute_dtype(self) -> jnp.dtype:
        return resolve_dtype(self.dtype)

    @property
    def params_dtype(self) -> jnp.dtype:
        return resolve_dtype(self.param_dtype)

    @property
    def accum_dtype(self) -> jnp.dtype:
        return resolve_dtype(self.softmax_dtype or self.dtype)

    @property
    def precision(self) -> jax.lax.Precision:
        return {
            "highest": jax.lax.Precision.HIGHEST,
            "high": jax.lax.Precision.HIGH,
            "default": jax.lax.Precision.DEFAULT,
        }[self.matmul_precision]

    def replace(self, **changes) -> "TransformerConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # ---- presets --------------------------------------------------------------------

    @classmethod
    def tiny(cls, **overrides) -> "TransformerConfig":
        """A model small enough for tests and teaching (runs in milliseconds on a CPU)."""
        base = dict(
            vocab_size=32, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_head=8,
            d_mlp=64, max_len=128, pos_encoding="rope", norm="layernorm",
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def paper_one_layer(cls, **overrides) -> "TransformerConfig":
        """The paper's synthetic collapse model (R4, Figure 10): one layer, d = 64, one head."""
        base = dict(
            vocab_size=16, d_model=64, n_layers=1, n_heads=1, d_mlp=256, max_len=4096,
            pos_encoding="none", norm="layernorm",
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def gpt2_small(cls, **overrides) -> "TransformerConfig":
        """GPT-2 small (124M): learned positions, LayerNorm, tanh-GELU, biases, tied."""
        base = dict(
            vocab_size=50257, d_model=768, n_layers=12, n_heads=12, d_mlp=3072, max_len=1024,
            pos_encoding="learned", norm="layernorm", norm_bias=True, activation="gelu_tanh",
            mlp_bias=True, qkv_bias=True, out_bias=True, tie_embeddings=True,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def smollm2_135m(cls, **overrides) -> "TransformerConfig":
        """SmolLM2-135M (Llama family): RoPE, RMSNorm, SwiGLU, GQA 9/3, tied."""
        base = dict(
            vocab_size=49152, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3, d_head=64,
            d_mlp=1536, max_len=8192, pos_encoding="rope", rope_theta=100_000.0,
            norm="rmsnorm", norm_eps=1e-5, activation="silu", gated=True,
            tie_embeddings=True,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def gemma2_2b(cls, **overrides) -> "TransformerConfig":
        """Gemma 2 2B: sandwich RMSNorm (1 + w), GeGLU, alternating local/global, soft-caps."""
        n_layers = 26
        base = dict(
            vocab_size=256000, d_model=2304, n_layers=n_layers, n_heads=8, n_kv_heads=4,
            d_head=256, d_mlp=9216, max_len=8192, pos_encoding="rope", norm="rmsnorm",
            norm_eps=1e-6, rmsnorm_unit_offset=True, norm_placement="sandwich",
            activation="gelu_tanh", gated=True, window=tuple(
                4096 if layer % 2 == 0 else None for layer in range(n_layers)
            ),
            attn_logit_softcap=50.0, final_logit_softcap=30.0, query_scale=256**-0.5,
            embedding_scale=2304**0.5, tie_embeddings=True,
        )
        base.update(overrides)
        return cls(**base)
