"""Dropout whose mask costs a fraction of the random bits of `flax.linen.Dropout`.

`flax.linen.Dropout` draws one 32-bit uniform per element (`jax.random.bernoulli`). With JAX's default
partitionable threefry, every 32-bit word is one threefry2x32 block, and on CPU generating the masks was
the largest single item of the training-step profile (about 18 % of the SciERC NER step, mostly the
[B, heads, T, T] attention-probability masks). Here each 32-bit word is split into ``32 // bits``
independent ``bits``-wide uniforms, so ``bits=8`` needs a quarter of the threefry work.

The price is resolution: the drop probability is rounded to a multiple of ``2**-bits`` (0.1 -> 26/256 =
0.1016 at 8 bits, 0.100006 at 16 bits) and kept units are scaled by the inverse of the *rounded* keep
probability, so the layer stays unbiased in expectation. ``bits=32`` is flax's behaviour.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_UINT = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32}


def rounded_rate(rate: float, bits: int) -> float:
    """The drop probability actually applied at this resolution."""
    return round(rate * 2**bits) / 2**bits


def keep_mask(rng: jax.Array, rate: float, shape: tuple[int, ...], bits: int = 8) -> jnp.ndarray:
    """Boolean mask, True with probability ``1 - rounded_rate(rate, bits)``, drawn from few threefry blocks."""
    if bits not in _UINT:
        raise ValueError(f"bits must be one of {sorted(_UINT)}, got {bits}")
    n = math.prod(shape)
    per_word = 32 // bits
    words = jax.random.bits(rng, (-(-n // per_word),), jnp.uint32)
    if per_word > 1:
        # uint32[w] -> uintB[w, 32/B]: each word's bytes (or halves) are independent uniform draws.
        words = lax.bitcast_convert_type(words, _UINT[bits])
    draws = words.reshape(-1)[:n].reshape(shape)
    threshold = round(rounded_rate(rate, bits) * 2**bits)  # exact: the rounded rate is a multiple of 2**-bits
    return draws >= jnp.asarray(threshold, _UINT[bits])


class Dropout(nn.Module):
    """Drop-in for `flax.linen.Dropout` (rng stream "dropout") with `keep_mask`'s cheaper masks."""

    rate: float
    bits: int = 8

    @nn.compact
    def __call__(self, x: jnp.ndarray, deterministic: bool = True) -> jnp.ndarray:
        rate = rounded_rate(self.rate, self.bits)
        if deterministic or rate == 0.0:
            return x
        if rate >= 1.0:
            return jnp.zeros_like(x)
        keep = keep_mask(self.make_rng("dropout"), self.rate, x.shape, self.bits)
        return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))
