"""The cheap-mask dropout: drop rate, scaling, independence of the packed draws, bit budget."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lai_jax.dropout import Dropout, keep_mask, rounded_rate


@pytest.mark.parametrize("bits", [8, 16, 32])
def test_drop_fraction_matches_rounded_rate(bits):
    shape = (64, 125, 33)
    keep = np.asarray(keep_mask(jax.random.key(0), 0.1, shape, bits))
    assert keep.shape == shape and keep.dtype == bool
    p = rounded_rate(0.1, bits)
    sd = np.sqrt(p * (1 - p) / keep.size)
    assert abs((1 - keep.mean()) - p) < 5 * sd


def test_rounding_is_what_is_documented():
    assert rounded_rate(0.1, 8) == 26 / 256
    assert abs(rounded_rate(0.1, 16) - 0.1) < 1e-5
    assert rounded_rate(0.001, 8) == 0.0


def test_odd_sizes_and_neighbouring_bytes_independent():
    # An odd size leaves the last word partly used. Bytes of the same word must not be correlated.
    keep = np.asarray(keep_mask(jax.random.key(1), 0.5, (400_001,), 8)).astype(np.float64)
    assert keep.shape == (400_001,)
    by_word = keep[:400_000].reshape(-1, 4)  # row = the 4 bytes of one 32-bit word
    corr = np.corrcoef(by_word.T)
    assert np.all(np.abs(corr[np.triu_indices(4, 1)]) < 0.02)
    assert abs(keep.mean() - 0.5) < 0.005


def test_module_scales_and_passes_through():
    x = jnp.ones((200, 300), jnp.float32)
    layer = Dropout(0.25)
    assert layer.apply({}, x, deterministic=True) is x
    y = np.asarray(layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(3)}))
    kept = y[y != 0]
    np.testing.assert_allclose(kept, 1 / 0.75, rtol=1e-6)  # 0.25 is exact at 8 bits
    assert abs(y.mean() - 1.0) < 0.02  # unbiased in expectation
    assert np.all(np.asarray(Dropout(1.0).apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(3)})) == 0)


def test_bfloat16_input_keeps_dtype():
    x = jnp.ones((8, 16), jnp.bfloat16)
    y = Dropout(0.1).apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
    assert y.dtype == jnp.bfloat16


@pytest.mark.parametrize("bits,words", [(8, 250), (16, 500), (32, 1000)])
def test_threefry_work_shrinks_with_bits(bits, words):
    jaxpr = jax.make_jaxpr(lambda k: keep_mask(k, 0.1, (10, 100), bits))(jax.random.key(0))
    shapes = [tuple(eqn.outvars[0].aval.shape) for eqn in jaxpr.jaxpr.eqns if eqn.primitive.name == "random_bits"]
    assert shapes == [(words,)]
