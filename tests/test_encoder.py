"""Flax BERT encoder: parity with transformers.BertModel, masks, bf16, remat, attention choice, weight import.

Tests that compare against `transformers.BertModel` need torch and are skipped without it; the rest run torch-free.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from lai_jax import encoder, hf_import, pretrained
from lai_jax.encoder import BertConfig, BertEncoder
from lai_jax.hf_import import WeightImportError
from tests.conftest import init_bert_params

NEG = np.finfo(np.float32).min


@pytest.fixture(scope="module")
def packaged():
    """(module, params, tokenizer) for the packaged MiniLM, loaded once."""
    return pretrained.load()


@pytest.fixture(scope="module")
def hf_packaged():
    """The packaged MiniLM as a `transformers.BertModel` (torch) reference."""
    pytest.importorskip("torch")
    import transformers

    return transformers.BertModel.from_pretrained(
        pretrained.default_encoder_path(), attn_implementation="eager", add_pooling_layer=False
    ).eval()


def _truncated(model: BertEncoder, params: dict, layers: int, **overrides):
    """The packaged model cut to its first `layers` layers: real weight scales, faster compiles."""
    cfg = dataclasses.replace(model.config, num_hidden_layers=layers, **overrides)
    keep = {"embeddings"} | {f"layer_{i}" for i in range(layers)}
    return BertEncoder(cfg), {k: v for k, v in params.items() if k in keep}


def _inputs(batch: int, seq: int, vocab: int, seed: int = 0):
    """Random ids, position ids where the tail reuses earlier positions (like span markers)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (batch, seq))
    pos = np.tile(np.arange(seq), (batch, 1))
    tail = seq // 4
    pos[:, -tail:] = rng.integers(0, seq - tail, (batch, tail))
    types = rng.integers(0, 2, (batch, seq))
    return ids, pos, types, rng


def _random_3d_mask(rng, batch: int, seq: int) -> np.ndarray:
    mask = rng.random((batch, seq, seq)) < 0.4
    return mask | np.eye(seq, dtype=bool)[None]


def _hf(ref, ids, pos, types, attention_mask) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = ref(
            input_ids=torch.as_tensor(ids, dtype=torch.long),
            position_ids=torch.as_tensor(pos, dtype=torch.long),
            token_type_ids=torch.as_tensor(types, dtype=torch.long),
            attention_mask=torch.as_tensor(attention_mask),
        )
    return out.last_hidden_state.numpy()


def test_parity_3d_mask(packaged, hf_packaged):
    (model, params, _), ref = packaged, hf_packaged
    ids, pos, types, rng = _inputs(2, 64, model.config.vocab_size)
    mask = _random_3d_mask(rng, 2, 64)
    ours = np.asarray(jax.jit(model.apply)({"params": params}, ids, pos, types, mask))
    # transformers 5 passes a 4-D mask through unchanged and adds it to the eager attention scores.
    additive = np.where(mask, 0.0, NEG).astype(np.float32)[:, None]
    want = _hf(ref, ids, pos, types, additive)
    assert np.abs(ours - want).max() <= 1e-4


def test_parity_2d_padding_mask(packaged, hf_packaged):
    (model, params, _), ref = packaged, hf_packaged
    ids, pos, types, _ = _inputs(2, 64, model.config.vocab_size, seed=1)
    lengths = np.array([64, 7])
    mask = np.arange(64)[None, :] < lengths[:, None]
    ours = np.asarray(jax.jit(model.apply)({"params": params}, ids, pos, types, mask))
    # HF builds its own bias from the [B,T] mask; padded query rows see the real keys in both,
    # so every position (padded ones included) is comparable.
    want = _hf(ref, ids, pos, types, mask.astype(np.int64))
    assert np.abs(ours - want).max() <= 1e-4


def test_bfloat16_close_to_float32(packaged):
    model, params, _ = packaged
    ids, pos, types, rng = _inputs(2, 64, model.config.vocab_size, seed=3)
    mask = _random_3d_mask(rng, 2, 64)
    f32 = np.asarray(jax.jit(model.apply)({"params": params}, ids, pos, types, mask))
    bf_model = BertEncoder(dataclasses.replace(model.config, dtype=jnp.bfloat16))
    bf16 = jax.jit(bf_model.apply)({"params": params}, ids, pos, types, mask)
    assert bf16.dtype == jnp.bfloat16
    bf16 = np.asarray(bf16, np.float32)
    # Per-token relative error; measured (seeds 0-3): mean 0.013-0.014, max 0.028-0.036 at 2x64
    # (max up to 0.061 at 4x256), so the bounds keep >2x margin.
    rel = np.linalg.norm(bf16 - f32, axis=-1) / np.linalg.norm(f32, axis=-1)
    assert rel.mean() < 0.03
    assert rel.max() < 0.08


def test_params_tree_matches_module(packaged):
    model, params, _ = packaged
    ids = np.zeros((1, 8), np.int32)
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), ids, ids, ids, ids > -1)["params"]
    got = jax.tree.map(lambda x: (x.shape, x.dtype), params)
    want = jax.tree.map(lambda x: (x.shape, x.dtype), abstract)
    assert got == want
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(abstract))


def test_fully_masked_rows_finite_and_remat_equal(packaged):
    """A PAD row that sees nothing stays finite in outputs and grads; remat changes nothing."""
    ids, pos, types, rng = _inputs(2, 32, packaged[0].config.vocab_size, seed=4)
    mask = _random_3d_mask(rng, 2, 32)
    mask[0, 20:, :] = False  # fully padded query rows (not even the diagonal)
    mask[:, :, 20:] = False  # ... and keys nobody sees
    mask[1, 5, :] = False

    def run(remat: bool):
        m, params = _truncated(*packaged[:2], layers=2, remat=remat)

        def loss(p):
            out = m.apply({"params": p}, ids, pos, types, mask)
            return (out**2).mean(), out

        return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

    (_, out), grads = run(False)
    assert np.isfinite(np.asarray(out)).all()
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    (_, out_r), grads_r = run(True)
    np.testing.assert_allclose(np.asarray(out_r), np.asarray(out), atol=1e-5)
    for g_r, g in zip(jax.tree.leaves(grads_r), jax.tree.leaves(grads)):
        np.testing.assert_allclose(np.asarray(g_r), np.asarray(g), atol=1e-5, rtol=1e-4)


def test_manual_attention_matches_fused():
    """The dropout path (manual softmax) computes the same attention as jax.nn.dot_product_attention."""
    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal((2, 10, 3, 8)).astype(np.float32) for _ in range(3))
    mask = rng.random((2, 10, 10)) < 0.5
    mask[0, 4] = False

    @jax.jit
    def both(q, k, v, mask):
        bias = encoder.mask_to_bias(mask, jnp.float32)
        return jax.nn.dot_product_attention(q, k, v, bias=bias), encoder.manual_attention(q, k, v, bias)

    fused, manual = both(q, k, v, mask)
    np.testing.assert_allclose(np.asarray(manual), np.asarray(fused), atol=1e-5)


def test_dropout_path_runs_and_is_stochastic(packaged):
    model, params = _truncated(*packaged[:2], layers=1)
    ids, pos, types, rng = _inputs(1, 16, model.config.vocab_size, seed=7)
    mask = _random_3d_mask(rng, 1, 16)

    @jax.jit
    def run(seeds):
        def one(seed):
            # rbg keys compile much faster than threefry on CPU; the PRNG is not under test.
            rngs = {"dropout": jax.random.key(seed, impl="rbg")}
            return model.apply({"params": params}, ids, pos, types, mask, False, rngs=rngs)

        return jax.vmap(one)(seeds)

    a, b = np.asarray(run(jnp.arange(2)))
    assert np.isfinite(a).all() and np.isfinite(b).all()
    assert not np.allclose(a, b)


# ----------------------------------------------------------------------------- attention implementation


@pytest.mark.parametrize("backend, dtype, rate, head_dim, seq_len, want", [
    ("cuda", jnp.bfloat16, 0.0, 32, 64, ("cudnn", "")),
    ("gpu", jnp.bfloat16, 0.0, 64, 608, ("cudnn", "")),
    ("cpu", jnp.bfloat16, 0.0, 32, 64, ("xla", "backend cpu")),
    ("tpu", jnp.bfloat16, 0.0, 32, 64, ("xla", "backend tpu")),
    ("rocm", jnp.bfloat16, 0.0, 32, 64, ("xla", "backend rocm")),
    ("cuda", jnp.float32, 0.0, 32, 64, ("xla", "dtype float32")),
    ("cuda", jnp.float16, 0.0, 32, 64, ("xla", "dtype float16")),
    ("cuda", jnp.bfloat16, 0.1, 32, 64, ("xla", "attention dropout 0.1")),
    ("cuda", jnp.bfloat16, 0.0, 12, 64, ("xla", "head dim 12 (cuDNN: a multiple of 8, at most 128)")),
    ("cuda", jnp.bfloat16, 0.0, 256, 64, ("xla", "head dim 256 (cuDNN: a multiple of 8, at most 128)")),
    ("cuda", jnp.bfloat16, 0.0, 32, 63, ("xla", "odd sequence length 63")),
])
def test_attention_implementation(backend, dtype, rate, head_dim, seq_len, want):
    assert encoder.attention_implementation(backend, dtype, rate, head_dim, seq_len) == want


def test_xla_reason_logged_once(packaged, caplog, monkeypatch):
    """On CPU every layer and every trace takes XLA; the reason is logged once, on the "lai_jax" logger."""
    model, params = _truncated(*packaged[:2], layers=2)
    ids, pos, types, rng = _inputs(1, 8, model.config.vocab_size, seed=8)
    mask = _random_3d_mask(rng, 1, 8)
    monkeypatch.setattr(logging.getLogger("lai_jax"), "propagate", True)  # cli.setup_logging stops it
    encoder._log_xla_reason.cache_clear()
    with caplog.at_level(logging.INFO, logger="lai_jax"):
        for t in (8, 6):  # two traces (shapes), two layers each
            model.apply({"params": params}, ids[:, :t], pos[:, :t], types[:, :t], mask[:, :t, :t])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("attention:")]
    assert lines == ["attention: XLA, not the cuDNN fused kernel (backend cpu)"]


@pytest.mark.parametrize("mask_dims", [2, 3])
def test_cudnn_bias_masks_like_the_xla_bias(mask_dims, monkeypatch):
    """The bias built for cuDNN ([B,1,T,T], jax's cuDNN masked value) attends like the usual one, fully masked rows too.

    Run through XLA (no GPU here): the kernel's maths is the same softmax(QK^T/sqrt(H) + bias) V.
    """
    monkeypatch.setattr(encoder, "backend_platform", lambda: "cuda")
    cfg = BertConfig(hidden_size=32, num_attention_heads=2, dtype=jnp.bfloat16)
    rng = np.random.default_rng(9)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 10, 2, 16)), jnp.bfloat16) for _ in range(3))
    mask = rng.random((2, 10, 10)) < 0.5 if mask_dims == 3 else np.arange(10)[None] < np.array([[10], [4]])
    if mask_dims == 3:
        mask[0, 4] = False  # a row that sees nothing
    implementation, bias = encoder._attention_bias(cfg, mask, True, 10)
    assert implementation == "cudnn" and bias.shape == (2, 1, 10, 10) and bias.dtype == jnp.bfloat16
    got = jax.nn.dot_product_attention(q, k, v, bias=bias, implementation="xla")
    want = jax.nn.dot_product_attention(q, k, v, bias=encoder.mask_to_bias(mask, jnp.bfloat16), implementation="xla")
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=1e-2)


def test_cudnn_path_meets_the_kernel_contract(monkeypatch):
    """Traces forward + backward of a bf16 encoder down the cuDNN path with jax's own cuDNN checks.

    Without a GPU the kernel cannot run, but jax validates shapes, dtypes, bias layout and the flash-attention
    constraints while tracing; only its cuDNN-version probe needs a GPU, so that one is stubbed (private API).
    """
    fused = pytest.importorskip("jax._src.cudnn.fused_attention_stablehlo")
    if not hasattr(fused, "check_cudnn_version"):
        pytest.skip("jax's cuDNN attention internals changed")
    monkeypatch.setattr(fused, "check_cudnn_version", lambda: 91000)
    monkeypatch.setattr(encoder, "backend_platform", lambda: "cuda")
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=48, max_position_embeddings=40, dtype=jnp.bfloat16)
    model = BertEncoder(cfg)
    params = init_bert_params(cfg)
    ids = np.ones((2, 16), np.int32)
    seen = []
    monkeypatch.setattr(jax.nn, "dot_product_attention", _spy(jax.nn.dot_product_attention, seen))
    for mask in (ids > 0, np.ones((2, 16, 16), bool)):
        def loss(p):
            return model.apply({"params": p}, ids, ids, ids * 0, mask).astype(jnp.float32).sum()

        out = jax.eval_shape(jax.value_and_grad(loss), params)
        assert out[0].shape == ()
        # The backward kernel returns dQ, dK, dV and no gradient of the constant mask bias (jax's default
        # would add a [B,1,T,T] dbias output).
        backward = [e for e in jax.make_jaxpr(jax.grad(loss))(params).eqns
                    if "dot_product_attention_bwd" in str(e.primitive)]
        assert len(backward) == 1 and [v.aval.shape for v in backward[0].outvars] == [(2, 16, 2, 16)] * 3
    assert seen == ["cudnn"] * 4


def _spy(fn, seen: list):
    def wrapped(*args, implementation=None, **kwargs):
        seen.append(implementation)
        return fn(*args, implementation=implementation, **kwargs)

    return wrapped


# ----------------------------------------------------------------------------- weight import

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=48, max_position_embeddings=40, type_vocab_size=2)


def _distinct_params(config: BertConfig, seed: int) -> dict:
    """jax-initialised params with every leaf (biases, LayerNorms too) made distinct, so a swapped name shows."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: x + rng.normal(0, 0.05, x.shape).astype(np.float32), init_bert_params(config, seed))


def _tiny_hf_torch(tmp_path, cls_name: str = "BertModel"):
    """Saves a tiny random torch HF BERT's config.json; returns (dir, torch model)."""
    torch = pytest.importorskip("torch")
    import transformers

    torch.manual_seed(0)
    hf_cfg = transformers.BertConfig(**TINY)
    model = getattr(transformers, cls_name)(hf_cfg).eval()
    (tmp_path / "config.json").write_text(json.dumps(hf_cfg.to_dict()))
    return tmp_path, model


def test_weight_import_names_missing_and_misshaped(tmp_path):
    config = BertConfig(**TINY)
    state = hf_import.state_dict_from_params(init_bert_params(config), config)
    (tmp_path / "config.json").write_text(json.dumps(hf_import.hf_config_dict(config)))
    del state["encoder.layer.1.attention.self.key.bias"]
    state["encoder.layer.0.intermediate.dense.weight"] = np.zeros((48, 31), np.float32)
    state["encoder.layer.0.extra.weight"] = np.zeros((3,), np.float32)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightImportError) as info:
        hf_import.load_params(str(tmp_path), hf_import.read_config(str(tmp_path)))
    msg = str(info.value)
    assert "missing encoder.layer.1.attention.self.key.bias: expected shape (32,)" in msg
    assert "encoder.layer.0.intermediate.dense.weight: expected (48, 32), found (48, 31)" in msg
    assert "unexpected encoder.layer.0.extra.weight" in msg


def test_prefixed_pytorch_bin_with_heads_loads(tmp_path, caplog):
    """`bert.`-prefixed pytorch_model.bin with MLM/NSP heads: heads ignored (logged once), parity holds."""
    path, pretraining = _tiny_hf_torch(tmp_path, "BertForPreTraining")
    import torch

    torch.save(pretraining.state_dict(), path / "pytorch_model.bin")
    config = hf_import.read_config(str(path))
    with caplog.at_level(logging.INFO, logger="lai_jax.hf_import"):
        params = hf_import.load_params(str(path), config)
    logged = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(logged) == 1 and "cls" in logged[0] and "pooler" in logged[0]

    ids, pos, types, rng = _inputs(2, 24, TINY["vocab_size"], seed=5)
    mask = _random_3d_mask(rng, 2, 24)
    ours = np.asarray(BertEncoder(config).apply({"params": params}, ids, pos, types, mask))
    ref = pretraining.bert
    ref.config._attn_implementation = "eager"
    want = _hf(ref, ids, pos, types, np.where(mask, 0.0, NEG).astype(np.float32)[:, None])
    assert np.abs(ours - want).max() <= 1e-5


def test_pytorch_bin_without_torch_names_the_file(tmp_path, monkeypatch):
    config = BertConfig(**TINY)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(WeightImportError, match=r"pytorch_model\.bin is a PyTorch checkpoint and torch is not"):
        hf_import.load_params(str(tmp_path), config)


def test_save_pretrained_round_trip(tmp_path):
    """jax-initialised params -> save_pretrained -> read_config / load_params: the same config, identical arrays."""
    config = BertConfig(**TINY, hidden_act="gelu_new", layer_norm_eps=1e-7)
    params = _distinct_params(config, seed=1)
    hf_import.save_pretrained(params, config, tmp_path / "out")
    loaded_config = hf_import.read_config(str(tmp_path / "out"))
    assert loaded_config == config
    loaded = hf_import.load_params(str(tmp_path / "out"), loaded_config)
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    for got, want in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
        assert got.dtype == np.float32 and np.array_equal(got, want)


def test_saved_folder_loads_in_transformers(tmp_path):
    """What save_pretrained writes is a HF folder: transformers.BertModel on it equals the lai-jax encoder."""
    pytest.importorskip("torch")
    import transformers

    config = BertConfig(**TINY)
    params = _distinct_params(config, seed=2)
    path = hf_import.save_pretrained(params, config, tmp_path)
    ref = transformers.BertModel.from_pretrained(path, attn_implementation="eager", add_pooling_layer=False).eval()
    ids, pos, types, rng = _inputs(2, 24, TINY["vocab_size"], seed=6)
    mask = _random_3d_mask(rng, 2, 24)
    ours = np.asarray(BertEncoder(config).apply({"params": params}, ids, pos, types, mask))
    want = _hf(ref, ids, pos, types, np.where(mask, 0.0, NEG).astype(np.float32)[:, None])
    assert np.abs(ours - want).max() <= 1e-5


def test_from_hf_dict():
    cfg = BertConfig.from_hf_dict({**TINY, "model_type": "bert", "pad_token_id": 0}, remat=True)
    assert cfg.hidden_size == 32 and cfg.remat and cfg.dtype == jnp.float32
    with pytest.raises(ValueError, match="relative_key"):
        BertConfig.from_hf_dict({**TINY, "position_embedding_type": "relative_key"})


# ----------------------------------------------------------------------------- locating models


def test_resolve_encoder_path(tmp_path, monkeypatch):
    default = pretrained.default_encoder_path()
    assert os.path.isfile(os.path.join(default, "config.json"))
    assert pretrained.resolve_encoder_path(None) == default
    assert pretrained.resolve_encoder_path("default") == default
    assert pretrained.resolve_encoder_path(str(tmp_path)) == str(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        pretrained.resolve_encoder_path(str(tmp_path / "nope"))
    # huggingface_hub reads HF_HUB_OFFLINE / HF_HUB_CACHE at import, so patch its constants.
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(pretrained.EncoderNotFoundError,
                       match="no-such-org/no-such-bert.*local directory.*--config.encoder=/path/to/hf_dir.*"
                             "--config.encoder=default"):
        pretrained.resolve_encoder_path("no-such-org/no-such-bert")


def test_random_encoder_spec():
    """random:<size> is that size of BERT with the packaged vocabulary and tokenizer, HF-initialised, no files."""
    enc, params, tok = pretrained.load("random:tiny", dtype=jnp.bfloat16)
    cfg = enc.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (32, 2, 2, 64)
    assert cfg.vocab_size == len(tok) == 30522 and cfg.dtype == jnp.bfloat16
    assert tok("Hello world")["input_ids"] == pretrained.load_tokenizer("default")("Hello world")["input_ids"]
    kernel = params["layer_0"]["query"]["kernel"]
    assert kernel.shape == (32, 32) and abs(float(kernel.std()) - 0.02) < 0.005
    assert (params["layer_1"]["output_LayerNorm"]["scale"] == 1).all()
    assert (params["embeddings"]["LayerNorm"]["bias"] == 0).all()
    base = pretrained.random_config("random:bert-base")
    assert (base.hidden_size, base.num_hidden_layers, base.num_attention_heads, base.intermediate_size) == (
        768, 12, 12, 3072)
    with pytest.raises(ValueError, match="unknown random size 'huge'.*random:bert-base"):
        pretrained.random_config("random:huge")
    with pytest.raises(ValueError, match="no weights folder"):
        pretrained.resolve_encoder_path("random:bert-base")


def test_tokenizer_is_fast(packaged):
    import transformers

    tok = packaged[2]
    assert isinstance(tok, transformers.PreTrainedTokenizerFast)
    assert tok.convert_tokens_to_ids("[unused0]") != tok.unk_token_id


def test_bench_smoke(capsys):
    pytest.importorskip("torch")
    from benchmarks import encoder as bench_encoder

    result = bench_encoder.main(["--smoke"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(line) == result
    assert result["jax_steps_per_s"] > 0 and result["torch_steps_per_s"] > 0
