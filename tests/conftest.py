"""Shared fixtures: a tiny random BERT in Hugging Face layout and tiny-shape configs."""
from __future__ import annotations

import os
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # configs/ are loaded by path, but tests import them as modules too

# One persistent compilation cache for the session (`lai_jax.compile_cache`; subprocesses inherit it): the many
# runs of the same tiny configs load their train and eval executables instead of compiling them again.
_COMPILE_CACHE = None
if "LAI_JAX_COMPILE_CACHE" not in os.environ:
    _COMPILE_CACHE = tempfile.mkdtemp(prefix="lai-jax-test-jit-")
    os.environ["LAI_JAX_COMPILE_CACHE"] = _COMPILE_CACHE


def pytest_sessionfinish(session, exitstatus):
    if _COMPILE_CACHE:
        shutil.rmtree(_COMPILE_CACHE, ignore_errors=True)
# Subprocess runs of tiny models spend most of their time compiling: LLVM's optimisation passes cost more than
# they save there (a multi-device check ~30 % faster). In-process tests keep the default: the learning checks
# run the 6-layer encoder for dozens of steps, where unoptimised code is slower (measured 309 s against 219 s).
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def subprocess_xla_flags(*flags: str) -> str:
    """XLA_FLAGS for a test's JAX subprocess: `flags` (e.g. a fake device count) plus FAST_COMPILE."""
    return " ".join((*flags, FAST_COMPILE))


# No persistent compilation cache in the user's home from tests (also in their subprocesses): runs stay
# independent; tests of the cache give their own folder.
os.environ.setdefault("LAI_JAX_COMPILE_CACHE", "off")


def init_bert_params(config, seed: int = 0) -> dict:
    """`BertEncoder(config)` params drawn with jax.random as HF BERT initialises them.

    normal(0, 0.02) kernels and embeddings, zero biases, unit LayerNorm scales (`BertPreTrainedModel._init_weights`,
    its zeroed padding row aside), so fixtures built on it behave like a freshly initialised Hugging Face model.
    """
    import jax
    import numpy as np
    from lai_jax.encoder import BertEncoder
    ids = np.zeros((1, 8), np.int32)
    shapes = jax.eval_shape(BertEncoder(config).init, jax.random.PRNGKey(0), ids, ids, ids, ids > -1)["params"]
    paths, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(paths))

    def draw(path, leaf, key):
        name = path[-1].key
        if name in ("kernel", "embedding"):
            return np.asarray(0.02 * jax.random.normal(key, leaf.shape, np.float32))
        return np.full(leaf.shape, 1.0 if name == "scale" else 0.0, np.float32)

    return jax.tree_util.tree_unflatten(treedef, [draw(p, leaf, k) for (p, leaf), k in zip(paths, keys)])


TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def make_tiny_bert(path: Path, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0) -> Path:
    """A random BERT (jax-initialised, no torch) saved as a HF folder, with the packaged model's uncased vocabulary."""
    from lai_jax.encoder import BertConfig
    from lai_jax.hf_import import save_pretrained
    from lai_jax.pretrained import default_encoder_path
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=2 * hidden, max_position_embeddings=512)
    save_pretrained(init_bert_params(config, seed), config, path)
    src = Path(default_encoder_path())
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, path / name)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny_bert")))


def tiny_config(phase: str, encoder: str, /, **overrides):
    """configs/quick.py with toy shapes: trains a step in about a second on a CPU."""
    from configs.quick import get_config
    from lai_jax.config_base import set_fields
    c = get_config(phase)
    base = {"encoder": encoder, "data.train_limit": 24, "data.eval_limit": 12, "max_text_len": 24,
            "max_span_len": 3, "max_candidates": 24, "max_objects": 4, "batch_size": 4,
            "per_device_eval_batch_size": 8, "model.gcn_heads": 2, "model.dropout": 0.1, "log_every_steps": 1,
            "num_epochs": 1,
            # The shapes and full enumeration the tests were written for (configs/quick.py now samples).
            "num_buckets": 1, "ner.train_negatives": 0, "re.negative_subject_rate": 1.0, "re.reweight_subjects": True,
            "ner.reweight_negatives": True,
            "re.re_decode": "sum", "re.type_constraints": False, "cold_start_epochs": 1 if phase == "ner" else 0,
            # The loss, decoding and rates they were calibrated with (quick.py's RE rates are higher now).
            "model.span_loss_weight": 1.0, "ner.overlap": "plmarker", "optim.learning_rate": 3e-3,
            "optim.encoder_learning_rate": 2e-4}
    base.update(overrides)
    return set_fields(c, **base)


# The longest files first: `pytest -n 2 --dist loadfile` (.ci/run) hands whole files to its two workers in this
# order, so these start at once instead of leaving one worker on them at the end.
_FIRST = ("test_multiprocess.py", "test_train.py", "test_learning.py", "test_gpu_check.py", "test_bench.py",
          "test_input_pipeline.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(_FIRST)))  # stable: file order kept otherwise
