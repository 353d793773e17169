"""BERT encoder in Flax (linen) with explicit position ids and a 2-D or 3-D attention mask.

SPEC §5: the encoder takes `input_ids`, `position_ids`, `token_type_ids` and a boolean mask that is
either [B, T] (key padding) or [B, T, T] (query row sees key column), and must reproduce
`transformers.BertModel` on the same weights. transformers 5 has no Flax classes, so the modules are
written here; `lai_jax.hf_import` reads and writes Hugging Face weights for them and
`lai_jax.pretrained` finds a model (packaged default, directory or Hub name) and its tokenizer.

Attention runs through cuDNN's fused kernel where it applies (GPU, bfloat16, no attention dropout;
`attention_implementation`), else through XLA.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lai_jax.dropout import Dropout

# HF `hidden_act` names -> activation. "gelu" in HF BERT is the exact erf form.
_ACTIVATIONS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """BERT hyper-parameters; field names as in a Hugging Face `config.json`."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    # Compute dtype; params are always float32.
    dtype: Any = jnp.float32
    # Rematerialise each layer in the backward pass (saves activation memory for long T).
    remat: bool = False
    # Random bits per dropout draw (`lai_jax.dropout`): 8 = a quarter of flax's RNG work, 32 = flax's exactly.
    dropout_bits: int = 8

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(
                f"hidden_act {self.hidden_act!r} is not supported; known: {sorted(_ACTIVATIONS)}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf_dict(cls, d: dict, **overrides: Any) -> "BertConfig":
        """Builds a config from a parsed HF `config.json`; unknown keys are ignored.

        Raises ValueError for architectures this module does not implement (relative position
        embeddings, decoders), which would otherwise load and silently compute something else.
        """
        pos_type = d.get("position_embedding_type", "absolute")
        if pos_type != "absolute":
            raise ValueError(f"position_embedding_type {pos_type!r} is not supported (only 'absolute')")
        if d.get("is_decoder", False) or d.get("add_cross_attention", False):
            raise ValueError("decoder / cross-attention BERT configs are not supported")
        names = {f.name for f in dataclasses.fields(cls)} - {"dtype", "remat"}
        kwargs = {k: d[k] for k in names if k in d}
        kwargs.update(overrides)
        return cls(**kwargs)


# --------------------------------------------------------------------------- modules


def _dense(features: int, config: BertConfig, name: str) -> nn.Dense:
    return nn.Dense(features, dtype=config.dtype, param_dtype=jnp.float32, name=name)


def _layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
    # Two-pass variance as in torch: one-pass E[x^2]-E[x]^2 cancels when a row's mean is large
    # next to its spread (cheap insurance; on MiniLM both forms are within 1e-5 of HF).
    return nn.LayerNorm(
        epsilon=config.layer_norm_eps,
        dtype=config.dtype,
        param_dtype=jnp.float32,
        use_fast_variance=False,
        name=name,
    )


def mask_to_bias(attention_mask: jnp.ndarray, dtype: Any, masked_value: float | None = None) -> jnp.ndarray:
    """Boolean mask [B,T] or [B,T,T] -> additive bias [B,1,1,T] or [B,1,T,T] (0 / `masked_value`).

    `masked_value` defaults to finfo(dtype).min rather than -inf: a fully masked row stays finite (its
    logits all become ~finfo.min, softmax turns uniform and the gradients stay finite), as in HF BERT's
    extended mask.
    """
    mask = jnp.asarray(attention_mask).astype(bool)
    if mask.ndim == 2:
        mask = mask[:, None, None, :]
    elif mask.ndim == 3:
        mask = mask[:, None, :, :]
    else:
        raise ValueError(f"attention_mask must be [B,T] or [B,T,T], got shape {mask.shape}")
    neg = jnp.finfo(dtype).min if masked_value is None else masked_value
    return jnp.where(mask, 0.0, neg).astype(dtype)


# --------------------------------------------------------------------------- attention implementation

# What jax's own cuDNN path puts in masked bf16 logits: cuDNN mis-subtracts two values near finfo.min
# (jax._src.cudnn.fused_attention_stablehlo.get_large_negative_number). Still exp() -> 0 next to any logit.
CUDNN_MASKED_BIAS = -(2.0**41)


def attention_implementation(
    backend: str, dtype: Any, dropout_rate: float, head_dim: int, seq_len: int
) -> tuple[str, str]:
    """("cudnn", "") where cuDNN's fused attention kernel applies, else ("xla", why it does not).

    backend: "cuda" (or "gpu") for NVIDIA GPUs, else "rocm", "cpu", "tpu"; dropout_rate: the attention
    dropout in effect (0 when deterministic). Besides GPU + bfloat16 + no dropout (the kernel in
    `jax.nn.dot_product_attention` has none), cuDNN needs a head dim that is a multiple of 8 and at most
    128 (256 on Hopper, not assumed), and, when a bias is trained through, even sequence lengths;
    outside those it would raise at trace time rather than fall back.
    """
    if backend not in ("cuda", "gpu"):
        return "xla", f"backend {backend}"
    if jnp.dtype(dtype) != jnp.bfloat16:
        return "xla", f"dtype {jnp.dtype(dtype).name}"
    if dropout_rate > 0:
        return "xla", f"attention dropout {dropout_rate:g}"
    if head_dim % 8 or head_dim > 128:
        return "xla", f"head dim {head_dim} (cuDNN: a multiple of 8, at most 128)"
    if seq_len % 2:
        return "xla", f"odd sequence length {seq_len}"
    return "cudnn", ""


def backend_platform() -> str:
    """jax's default backend, with "gpu" told apart as "cuda" or "rocm"."""
    backend = jax.default_backend()
    if backend != "gpu":
        return backend
    from jax.extend import backend as jax_backend

    return "rocm" if "rocm" in jax_backend.get_backend().platform_version.lower() else "cuda"


@functools.lru_cache(maxsize=None)
def _log_xla_reason(reason: str) -> None:
    # Cached: one line per distinct reason, not one per layer and trace.
    logging.getLogger("lai_jax").info("attention: XLA, not the cuDNN fused kernel (%s)", reason)


def manual_attention(
    query: jnp.ndarray,
    key: jnp.ndarray,
    value: jnp.ndarray,
    bias: jnp.ndarray,
    dropout: Callable[[jnp.ndarray], jnp.ndarray] | None = None,
) -> jnp.ndarray:
    """Same maths as `jax.nn.dot_product_attention` (XLA path) but with dropout on the probabilities.

    q/k/v: [B,T,N,H]; bias broadcastable to [B,N,T,S]. Logits and softmax in float32.
    """
    scale = 1.0 / np.sqrt(query.shape[-1])
    logits = jnp.einsum("btnh,bsnh->bnts", query, key, preferred_element_type=jnp.float32)
    logits = logits * scale + bias.astype(jnp.float32)
    probs = jax.nn.softmax(logits, axis=-1)
    if dropout is not None:
        probs = dropout(probs)
    return jnp.einsum("bnts,bsnh->btnh", probs.astype(value.dtype), value)


def fused_attention(query: jnp.ndarray, key: jnp.ndarray, value: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
    """cuDNN's fused attention with the mask bias as a constant: its backward computes no bias gradient.

    jax's cuDNN attention makes its backward kernel write a bias gradient ([B,1,T,T] per layer) for any bias it
    is given (`should_export_dbias` is always true in jax 0.10), whether or not anything differentiates the
    bias; stop_gradient alone does not remove it, since the custom VJP's kernel computes all its outputs. The
    mask bias is a constant, so that export is switched off while the call is traced.
    """
    with _no_bias_gradient():
        return jax.nn.dot_product_attention(query, key, value, bias=jax.lax.stop_gradient(bias),
                                            implementation="cudnn")


@contextlib.contextmanager
def _no_bias_gradient():
    """While tracing: jax's cuDNN attention decides from `should_export_dbias` (private) whether its backward
    writes a bias gradient. Without that hook (another jax) nothing changes and the gradient is only unused."""
    try:
        from jax._src.cudnn import fused_attention_stablehlo as fused
    except ImportError:
        fused = None
    if fused is None or not hasattr(fused, "should_export_dbias"):
        yield
        return
    export = fused.should_export_dbias
    fused.should_export_dbias = lambda *args, **kwargs: False
    try:
        yield
    finally:
        fused.should_export_dbias = export


class BertEmbeddings(nn.Module):
    """word + position + token-type embeddings, LayerNorm, dropout."""

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, position_ids, token_type_ids, deterministic: bool = True):
        cfg = self.config

        def embed(num: int, name: str) -> nn.Embed:
            return nn.Embed(num, cfg.hidden_size, dtype=cfg.dtype, param_dtype=jnp.float32, name=name)

        x = embed(cfg.vocab_size, "word_embeddings")(input_ids)
        x = x + embed(cfg.max_position_embeddings, "position_embeddings")(position_ids)
        x = x + embed(cfg.type_vocab_size, "token_type_embeddings")(token_type_ids)
        x = _layer_norm(cfg, "LayerNorm")(x)
        return Dropout(cfg.hidden_dropout_prob, cfg.dropout_bits)(x, deterministic=deterministic)


class BertLayer(nn.Module):
    """One post-LN transformer block as in HF BertLayer."""

    config: BertConfig
    # "xla" or "cudnn" (`attention_implementation`); "cudnn" needs the bias as [B,1,T,T].
    attention: str = "xla"

    @nn.compact
    def __call__(self, hidden: jnp.ndarray, bias: jnp.ndarray, deterministic: bool = True):
        cfg = self.config
        b, t, d = hidden.shape
        heads = (b, t, cfg.num_attention_heads, cfg.head_dim)
        q = _dense(d, cfg, "query")(hidden).reshape(heads)
        k = _dense(d, cfg, "key")(hidden).reshape(heads)
        v = _dense(d, cfg, "value")(hidden).reshape(heads)
        rate = cfg.attention_probs_dropout_prob
        if deterministic or rate == 0.0:
            # dot_product_attention has no dropout, hence the else.
            if self.attention == "cudnn":
                ctx = fused_attention(q, k, v, bias)
            else:
                ctx = jax.nn.dot_product_attention(q, k, v, bias=bias, implementation="xla")
        else:
            drop = Dropout(rate, cfg.dropout_bits, name="attention_dropout")
            ctx = manual_attention(q, k, v, bias, lambda p: drop(p, deterministic=False))
        ctx = ctx.reshape(b, t, d)

        attn = _dense(d, cfg, "attention_output")(ctx)
        attn = Dropout(cfg.hidden_dropout_prob, cfg.dropout_bits)(attn, deterministic=deterministic)
        hidden = _layer_norm(cfg, "attention_LayerNorm")(attn + hidden)

        ffn = _ACTIVATIONS[cfg.hidden_act](_dense(cfg.intermediate_size, cfg, "intermediate")(hidden))
        ffn = _dense(d, cfg, "output")(ffn)
        ffn = Dropout(cfg.hidden_dropout_prob, cfg.dropout_bits)(ffn, deterministic=deterministic)
        return _layer_norm(cfg, "output_LayerNorm")(ffn + hidden)


class BertEncoder(nn.Module):
    """BERT without pooler: returns the last hidden states [B, T, hidden_size] in `config.dtype`."""

    config: BertConfig

    @nn.compact
    def __call__(
        self,
        input_ids: jnp.ndarray,
        position_ids: jnp.ndarray,
        token_type_ids: jnp.ndarray,
        attention_mask: jnp.ndarray,
        deterministic: bool = True,
    ) -> jnp.ndarray:
        """ids: int [B,T]; attention_mask: bool [B,T] (key padding) or [B,T,T] (row sees column).

        Position ids are not range-checked under jit: ids >= max_position_embeddings give NaN rows
        (jnp.take's fill mode), which is loud rather than silently clipped.
        """
        cfg = self.config
        ids = [jnp.asarray(a, jnp.int32) for a in (input_ids, position_ids, token_type_ids)]
        hidden = BertEmbeddings(cfg, name="embeddings")(*ids, deterministic=deterministic)
        attention, bias = _attention_bias(cfg, attention_mask, deterministic, hidden.shape[1])
        # self is argnum 0, so `deterministic` is 3; it must be static (it picks the attention path).
        layer_cls = nn.remat(BertLayer, static_argnums=(3,)) if cfg.remat else BertLayer
        for i in range(cfg.num_hidden_layers):
            hidden = layer_cls(cfg, attention, name=f"layer_{i}")(hidden, bias, deterministic)
        return hidden


def _attention_bias(
    config: BertConfig, attention_mask: jnp.ndarray, deterministic: bool, seq_len: int
) -> tuple[str, jnp.ndarray]:
    """(implementation, additive bias) for every layer; the reason is logged once when it is not cuDNN."""
    rate = 0.0 if deterministic else config.attention_probs_dropout_prob
    implementation, why = attention_implementation(backend_platform(), config.dtype, rate, config.head_dim, seq_len)
    if implementation == "xla":
        _log_xla_reason(why)
        return implementation, mask_to_bias(attention_mask, config.dtype)
    bias = mask_to_bias(attention_mask, config.dtype, CUDNN_MASKED_BIAS)
    # cuDNN takes a bias of [B or 1, N or 1, T, S] only: a [B,1,1,T] key-padding bias is spelled out over T.
    return implementation, jnp.broadcast_to(bias, (bias.shape[0], 1, seq_len, seq_len))
