"""Hugging Face BERT checkpoints <-> `lai_jax.encoder.BertEncoder` parameters.

Reads a Hugging Face directory (config.json + model.safetensors, sharded safetensors or
pytorch_model.bin) into the flax tree that `BertEncoder` expects, and writes such a tree back out as a
directory `transformers.BertModel.from_pretrained` loads. Parameter tree (the value under
{"params": ...}):

    embeddings/{word_embeddings,position_embeddings,token_type_embeddings}/embedding
    embeddings/LayerNorm/{scale,bias}
    layer_{i}/{query,key,value,attention_output,intermediate,output}/{kernel,bias}
    layer_{i}/{attention_LayerNorm,output_LayerNorm}/{scale,bias}

`_hf_names` maps each leaf to its Hugging Face key; reading and writing both go through it.
torch is imported only to read a pytorch_model.bin.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Iterator, Mapping

import numpy as np

from lai_jax.encoder import BertConfig

logger = logging.getLogger(__name__)


class WeightImportError(ValueError):
    """A checkpoint does not fit the encoder: missing, unexpected or mis-shaped tensors."""


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

# BertConfig fields that are run-time choices of lai-jax, not part of a checkpoint's config.json.
_RUNTIME_FIELDS = ("dtype", "remat", "dropout_bits")


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


def param_leaves(config: BertConfig) -> Iterator[_Leaf]:
    """Every parameter of `BertEncoder(config)`: its flax path, HF key and flax shape."""
    return _hf_names(config)


def _normalise_key(key: str) -> str:
    """Strips the `bert.` prefix and renames TF-era LayerNorm `gamma`/`beta`."""
    if key.startswith("bert."):
        key = key[len("bert.") :]
    if key.endswith(".gamma"):
        key = key[: -len(".gamma")] + ".weight"
    elif key.endswith(".beta"):
        key = key[: -len(".beta")] + ".bias"
    return key


# --------------------------------------------------------------------------- reading


def _read_safetensors(path: str) -> dict[str, np.ndarray] | None:
    """model.safetensors, or the shards named by model.safetensors.index.json; None if neither exists."""
    from safetensors.numpy import load_file

    single = os.path.join(path, "model.safetensors")
    if os.path.isfile(single):
        return load_file(single)
    index = os.path.join(path, "model.safetensors.index.json")
    if not os.path.isfile(index):
        return None
    with open(index) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
    state: dict[str, np.ndarray] = {}
    for shard in shards:
        state.update(load_file(os.path.join(path, shard)))
    return state


def _read_torch_bin(bin_file: str) -> dict[str, np.ndarray]:
    """A pytorch_model.bin as numpy; torch is imported here only (lai-jax runs without it otherwise)."""
    try:
        import torch
    except ImportError as e:
        raise WeightImportError(
            f"{bin_file} is a PyTorch checkpoint and torch is not installed: install torch "
            "(CPU build is enough) or convert the checkpoint to model.safetensors"
        ) from e
    sd = torch.load(bin_file, map_location="cpu", weights_only=True)
    return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in sd.items()}


def _read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads model.safetensors (single or sharded) or pytorch_model.bin from a HF directory."""
    state = _read_safetensors(path)
    if state is not None:
        return state
    bin_file = os.path.join(path, "pytorch_model.bin")
    if os.path.isfile(bin_file):
        return _read_torch_bin(bin_file)
    raise WeightImportError(
        f"no weights in {path}: expected model.safetensors, model.safetensors.index.json "
        "or pytorch_model.bin"
    )


def read_config(path: str, **overrides: Any) -> BertConfig:
    """`BertConfig` from `<path>/config.json`."""
    with open(os.path.join(path, "config.json")) as f:
        return BertConfig.from_hf_dict(json.load(f), **overrides)


def params_from_state_dict(state: Mapping[str, np.ndarray], config: BertConfig) -> dict:
    """HF BERT state dict (any prefix, numpy) -> flax params tree of float32 numpy arrays.

    Raises WeightImportError naming every missing, unexpected or mis-shaped tensor.
    """
    normalised = {_normalise_key(k): v for k, v in state.items()}
    ignored = sorted({p.rstrip(".") for k in normalised for p in _IGNORED_PREFIXES if k.startswith(p)})
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
            problems.append(f"mis-shaped {leaf.hf_key}: expected {torch_shape}, found {tuple(value.shape)}")
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
            f"checkpoint does not fit BertEncoder ({len(problems)} problem(s)):\n  " + "\n  ".join(problems)
        )
    return params


def load_params(path: str, config: BertConfig) -> dict:
    """Flax params (the dict under {"params": ...}) for `BertEncoder(config)` from a HF directory."""
    state = _read_state_dict(path)
    try:
        return params_from_state_dict(state, config)
    except WeightImportError as e:
        raise WeightImportError(f"{path}: {e}") from None


# --------------------------------------------------------------------------- writing


def state_dict_from_params(params: Mapping[str, Any], config: BertConfig) -> dict[str, np.ndarray]:
    """Flax params tree -> HF `BertModel` state dict (float32 numpy; the inverse of `params_from_state_dict`)."""
    state = {}
    for leaf in _hf_names(config):
        node = params
        for part in leaf.path:
            node = node[part]
        value = np.asarray(node, dtype=np.float32)
        state[leaf.hf_key] = np.ascontiguousarray(value.T if leaf.transpose else value)
    return state


def hf_config_dict(config: BertConfig) -> dict:
    """A HF `config.json` for `config` (lai-jax's run-time fields left out)."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in _RUNTIME_FIELDS}
    return {"model_type": "bert", "architectures": ["BertModel"], **fields}


def save_pretrained(params: Mapping[str, Any], config: BertConfig, path: str | os.PathLike) -> str:
    """Writes config.json + model.safetensors that `load_params` and `transformers.BertModel` both read.

    Tokenizer files are not written: copy them from the model the weights came from.
    """
    from safetensors.numpy import save_file

    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_config_dict(config), f, indent=2)
    # transformers refuses safetensors files whose metadata lacks a known "format".
    save_file(state_dict_from_params(params, config), os.path.join(path, "model.safetensors"),
              metadata={"format": "pt"})
    return path
