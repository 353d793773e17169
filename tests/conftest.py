"""Shared fixtures: a tiny random BERT in Hugging Face layout and tiny-shape configs."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # configs/ are loaded by path, but tests import them as modules too


def make_tiny_bert(path: Path, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0) -> Path:
    """A random BertModel saved as safetensors, with the packaged model's uncased vocabulary."""
    import torch
    import transformers
    from lai_jax.encoder import default_encoder_path
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
                                  num_attention_heads=heads, intermediate_size=2 * hidden, max_position_embeddings=512)
    transformers.BertModel(cfg).save_pretrained(str(path), safe_serialization=True)
    src = Path(default_encoder_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, path / name)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny_bert")))


def tiny_config(phase: str, encoder: str, **overrides):
    """configs/quick.py with toy shapes: trains a step in about a second on a CPU."""
    from configs.quick import get_config
    from lai_jax.config_base import set_fields
    c = get_config(phase)
    base = {"encoder": encoder, "data.train_limit": 24, "data.eval_limit": 12, "max_text_len": 24,
            "max_span_len": 3, "max_candidates": 24, "max_objects": 4, "batch_size": 4,
            "per_device_eval_batch_size": 8, "model.gcn_heads": 2, "model.dropout": 0.1, "log_every_steps": 1,
            "num_epochs": 1}
    base.update(overrides)
    return set_fields(c, **base)
