"""Tests for lai_jax.g4cn: the vectorised KL adjacency and the G4CN module (SPEC §6)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.g4cn import gaussian_kl_broadcast, gaussian_kl_naive, iter_jaxpr_avals
from lai_jax.g4cn import G4CN, build_adjacency, gaussian_kl_matrix, sublayer_widths

REPO = Path(__file__).resolve().parents[1]
D = 24  # hidden size of the small test models
kl_jit = jax.jit(gaussian_kl_matrix)


def _gauss(rng: np.random.Generator, shape: tuple[int, ...], offset: float = 0.0):
    mu = (rng.normal(size=shape) + offset).astype(np.float32)
    sigma = rng.uniform(0.3, 2.0, size=shape).astype(np.float32)
    return mu, sigma


# ---------------------------------------------------------------- KL matrix


@pytest.mark.parametrize("g", [1, 4])
@pytest.mark.parametrize("lead", [(), (2, 3)])
@pytest.mark.parametrize("offset", [0.0, 100.0])
def test_kl_matches_naive_loop_float32(g: int, lead: tuple[int, ...], offset: float) -> None:
    # offset=100: far-from-zero means, where an un-centred expanded square loses ~1e-2 in float32.
    mu, sigma = _gauss(np.random.default_rng(g + len(lead)), lead + (7, g), offset)
    got = np.asarray(kl_jit(mu, sigma))
    ref = gaussian_kl_naive(mu, sigma)
    assert got.shape == lead + (7, 7) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # Exact zero diagonal, and KL is not symmetric in general.
    assert np.all(np.diagonal(got, axis1=-2, axis2=-1) == 0.0)
    assert np.max(np.abs(got - np.swapaxes(got, -1, -2))) > 0.1


def test_kl_exact_in_float64() -> None:
    rng = np.random.default_rng(0)
    mu, sigma = _gauss(rng, (3, 6, 4))
    ref = gaussian_kl_naive(mu, sigma)
    with jax.enable_x64(True):
        got = np.asarray(
            jax.jit(gaussian_kl_matrix)(
                jnp.asarray(mu, jnp.float64), jnp.asarray(sigma, jnp.float64)
            )
        )
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-11)


def test_kl_direction_is_paper_order() -> None:
    # KL(N(0,1) || N(0,2^2)) = log 2 + 1/8 - 1/2; the reverse is -log 2 + 2 - 1/2.
    mu = np.zeros((2, 1), np.float32)
    sigma = np.array([[1.0], [2.0]], np.float32)
    kl = np.asarray(kl_jit(mu, sigma))
    np.testing.assert_allclose(kl[0, 1], math.log(2) + 0.125 - 0.5, rtol=1e-6)
    np.testing.assert_allclose(kl[1, 0], -math.log(2) + 2 - 0.5, rtol=1e-6)


def _has_nng(avals: list[Any], n: int, g: int) -> bool:
    """An array with two axes of length n and one of length g (the [.., n, n, g] tensor)."""
    for a in avals:
        shape = list(getattr(a, "shape", ()))
        if shape.count(n) >= 2 and g in shape:
            return True
    return False


def test_no_nng_intermediate_in_kl() -> None:
    n, g = 7, 4
    mu, sigma = _gauss(np.random.default_rng(1), (2, 3, n, g))
    fwd = iter_jaxpr_avals(jax.make_jaxpr(gaussian_kl_matrix)(mu, sigma))
    grad = jax.grad(lambda m, s: jnp.sum(gaussian_kl_matrix(m, s)), argnums=(0, 1))
    bwd = iter_jaxpr_avals(jax.make_jaxpr(grad)(mu, sigma))
    assert not _has_nng(fwd, n, g)
    assert not _has_nng(bwd, n, g)
    assert max(math.prod(a.shape) for a in fwd + bwd) < 2 * 3 * n * n * g
    # The detector does catch the broadcasting formulation.
    assert _has_nng(iter_jaxpr_avals(jax.make_jaxpr(gaussian_kl_broadcast)(mu, sigma)), n, g)


# ---------------------------------------------------------------- G4CN module


def _model(**kw: Any) -> G4CN:
    cfg = dict(hidden=D, gcn_layers=2, gcn_sublayers=2, gcn_heads=3, gauss_dim=4, dropout=0.1)
    cfg.update(kw)
    return G4CN(**cfg)


def _init(model: G4CN, seed: int = 0) -> Any:
    """Random parameters with the model's shapes, without compiling ``model.init``.

    Biases are non-zero on purpose (the GCN adds each sub-layer bias twice, as GDPNet does);
    kernels are scaled by 1/sqrt(fan_in) like the default initialiser.
    """
    x = jnp.zeros((1, 3, model.hidden), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x, jnp.ones((1, 3), bool))
    rng = np.random.default_rng(seed)

    def fill(a: jax.ShapeDtypeStruct) -> jnp.ndarray:
        fan_in = a.shape[-2] if len(a.shape) >= 2 else None
        std = 1.0 / math.sqrt(fan_in) if fan_in else 0.1
        return jnp.asarray(rng.normal(size=a.shape) * std, a.dtype)

    return jax.tree_util.tree_map(fill, shapes)


def _run(model: G4CN, params: Any, x: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic output and the sown adjacency."""
    f = jax.jit(lambda p, x_, m: model.apply(p, x_, m, mutable=["intermediates"]))
    y, state = f(params, jnp.asarray(x), jnp.asarray(mask))
    return np.asarray(y), np.asarray(state["intermediates"]["adjacency"][0])


@pytest.fixture(scope="module")
def kl_model() -> tuple[G4CN, Any]:
    m = _model()
    return m, _init(m)


@pytest.fixture(scope="module")
def exp_model() -> tuple[G4CN, Any]:
    # Also covers sub-layer widths that do not divide d (24 = 5 + 5 + 5 + 5 + 4), one block, and
    # dropout=0 (kl_model has dropout on; a second RNG program would only cost compile time).
    m = _model(
        edge="exp_neg_kl", gcn_sublayers=5, gcn_heads=2, gauss_dim=1, gcn_layers=1, dropout=0.0
    )
    return m, _init(m)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _reference_forward(model: G4CN, params: Any, x: np.ndarray, mask: np.ndarray):
    """GDPNet's MultiGraphConvLayer written out literally (float64, loops over heads)."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params["params"])
    H, g, d = model.gcn_heads, model.gauss_dim, model.hidden
    x = np.where(mask[..., None], x, 0.0).astype(np.float64)
    B, n, _ = x.shape
    gp = (x @ p["gauss"]["kernel"] + p["gauss"]["bias"]).reshape(B, n, H, 2, g)
    mu = gp[..., 0, :].transpose(0, 2, 1, 3)
    sigma = (_softplus(gp[..., 1, :]) + model.sigma_eps).transpose(0, 2, 1, 3)
    adj = gaussian_kl_naive(mu, sigma)  # [B, H, n, n], row i = KL(N_i || N_j)
    if model.edge == "exp_neg_kl":
        adj = np.exp(-adj)
    pair = mask[:, None, :, None] & mask[:, None, None, :]
    adj = np.where(pair, adj, 0.0)
    denom = adj.sum(-1, keepdims=True) + 1.0
    for blk in range(model.gcn_layers):
        bp = p[f"block_{blk}"]
        heads = []
        for h in range(H):
            cache, outs = [x], []
            for l in range(model.gcn_sublayers):
                X = np.concatenate(cache, axis=-1)
                W, b = bp[f"kernel_{l}"][h], bp[f"bias_{l}"][h]
                ax = adj[:, h] @ X
                pre = (ax @ W + b) + (X @ W + b)  # same W_l on both terms, bias twice
                out = np.maximum(pre / denom[:, h], 0.0)
                cache.append(out)
                outs.append(out)
            heads.append(np.concatenate(outs, axis=-1) + x)
        y = np.concatenate(heads, axis=-1) @ bp["out"]["kernel"] + bp["out"]["bias"]
        x = np.where(mask[..., None], y, 0.0)
    return x, adj


@pytest.mark.parametrize("which", ["kl_model", "exp_model"])
def test_forward_reference_and_padding(which: str, request: pytest.FixtureRequest) -> None:
    """One compiled forward checks: the literal GDPNet reference, masking and padding invariance."""
    model, params = request.getfixturevalue(which)
    rng = np.random.default_rng(4)
    real = rng.normal(size=(2, 6, D)).astype(np.float32)
    # 4 huge garbage padded nodes between the real ones (padded candidate slots sit between the
    # candidates and the annotations); batch row 1 has one more padded node.
    pos = np.array([0, 2, 3, 5, 6, 9])
    mask = np.zeros((2, 10), bool)
    mask[:, pos] = True
    mask[1, 9] = False
    x = (rng.normal(size=(2, 10, D)) * 1e4).astype(np.float32)
    x[:, pos] = real

    y, adj = _run(model, params, x, mask)
    assert y.shape == (2, 10, D) and y.dtype == np.float32
    assert adj.shape == (2, model.gcn_heads, 10, 10)

    # Same numbers as GDPNet's layer written out literally (float64).
    y_ref, adj_ref = _reference_forward(model, params, x, mask)
    np.testing.assert_allclose(adj, adj_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)

    # Padding neither adds edges nor changes real nodes: compare with the unpadded graph.
    y_np, adj_np = _run(model, params, real, np.ones((2, 6), bool))
    np.testing.assert_allclose(y[0, pos], y_np[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(adj[0][:, pos][:, :, pos], adj_np[0], rtol=1e-5, atol=1e-5)
    pad = ~mask
    assert np.all(y[pad] == 0.0)
    for b in range(2):
        assert np.all(adj[b][:, pad[b], :] == 0.0) and np.all(adj[b][:, :, pad[b]] == 0.0)

    if model.edge == "exp_neg_kl":
        real_adj = adj[0][:, pos][:, :, pos]
        assert np.all((real_adj >= 0) & (real_adj <= 1))
        np.testing.assert_array_equal(np.diagonal(real_adj, axis1=-2, axis2=-1), 1.0)
    else:
        assert np.max(np.abs(adj - np.swapaxes(adj, -1, -2))) > 1e-3  # asymmetric edges


def test_no_nng_intermediate_in_module(kl_model: tuple[G4CN, Any]) -> None:
    model, params = kl_model
    n, g = 11, model.gauss_dim  # 11 is no other dimension of the model
    x, mask = jnp.ones((2, n, D)), jnp.ones((2, n), bool)
    fwd = jax.make_jaxpr(lambda p, x_: model.apply(p, x_, mask))(params, x)
    grad = jax.make_jaxpr(jax.grad(lambda p, x_: jnp.sum(model.apply(p, x_, mask)), (0, 1)))(
        params, x
    )
    assert not _has_nng(iter_jaxpr_avals(fwd), n, g)
    assert not _has_nng(iter_jaxpr_avals(grad), n, g)


def _key(seed: int) -> jax.Array:
    # "rbg" keys compile far faster than threefry on CPU; dropout's semantics do not change.
    return jax.random.key(seed, impl="rbg")


@pytest.mark.parametrize("which", ["kl_model", "exp_model"])
def test_gradients_finite_with_dropout(which: str, request: pytest.FixtureRequest) -> None:
    model, params = request.getfixturevalue(which)
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(2, 8, D)) * 10, jnp.float32)  # large inputs -> large KL
    mask = jnp.asarray(np.arange(8)[None] < np.array([[8], [5]]))

    @jax.jit
    def loss(p: Any, x_: jnp.ndarray, key: jax.Array) -> tuple[jnp.ndarray, Any]:
        def f(p_: Any, xx: jnp.ndarray) -> jnp.ndarray:
            y = model.apply(p_, xx, mask, deterministic=False, rngs={"dropout": key})
            return jnp.sum(jnp.square(y))

        return jax.value_and_grad(f, argnums=(0, 1))(p, x_)

    (v1, (gp, gx)), (v2, _) = loss(params, x, _key(1)), loss(params, x, _key(2))
    assert np.isfinite(float(v1))
    assert (float(v1) != float(v2)) == (model.dropout > 0)  # dropout is active iff rate > 0
    leaves = jax.tree_util.tree_leaves(gp) + [gx]
    assert all(np.all(np.isfinite(np.asarray(a))) for a in leaves)
    assert np.all(np.asarray(gx)[1, 5:] == 0.0)  # padded inputs do not influence anything
    assert any(float(np.max(np.abs(np.asarray(a)))) > 0 for a in jax.tree_util.tree_leaves(gp))


def test_zero_layers_is_identity() -> None:
    model = _model(gcn_layers=0)
    x = jnp.asarray(np.random.default_rng(6).normal(size=(2, 5, D)), jnp.float32)
    mask = jnp.array([[True] * 5, [True, True, False, False, False]])
    variables = model.init(jax.random.key(0), x, mask)
    assert not jax.tree_util.tree_leaves(variables)  # no parameters at all
    y = model.apply(variables, x, mask)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(0.5 * (x + y)), np.asarray(x))  # caller's 1/2[H + G]


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(hidden=18, gcn_heads=4), "gcn_heads"),  # does not divide d
        (dict(hidden=20, gcn_heads=5), "gcn_heads"),  # divides d but not in {1,2,3,4,6}
        (dict(gcn_layers=6), "gcn_layers"),
        (dict(gcn_layers=-1), "gcn_layers"),
        (dict(edge="softmax"), "edge"),
        (dict(gcn_sublayers=0), "gcn_sublayers"),
        (dict(gauss_dim=0), "gauss_dim"),
    ],
)
def test_invalid_config_raises(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _model(**kw)


def test_sublayer_widths_add_up() -> None:
    assert sublayer_widths(768, 2) == [384, 384]
    assert sublayer_widths(24, 5) == [5, 5, 5, 5, 4]
    assert sum(sublayer_widths(770, 3)) == 770


def test_build_adjacency_masks_and_direction() -> None:
    rng = np.random.default_rng(7)
    mu, sigma = _gauss(rng, (2, 3, 5, 2))
    mask = np.array([[True, True, True, False, True], [True] * 5])
    adj = np.asarray(jax.jit(build_adjacency, static_argnums=3)(mu, sigma, mask, "kl"))
    ref = gaussian_kl_naive(mu, sigma)
    np.testing.assert_allclose(adj[1], ref[1], rtol=1e-5, atol=1e-5)
    keep = mask[0]
    np.testing.assert_allclose(adj[0][:, keep][:, :, keep], ref[0][:, keep][:, :, keep], atol=1e-5)
    assert np.all(adj[0, :, 3, :] == 0) and np.all(adj[0, :, :, 3] == 0)
    # Only the source nodes' columns stay (model.gcn_edges="labels": the annotation nodes).
    sources = np.array([[False, False, True, True, True]] * 2)
    only = np.asarray(jax.jit(build_adjacency, static_argnums=3)(mu, sigma, mask, "kl", sources))
    assert np.all(only[:, :, :, :2] == 0)
    np.testing.assert_array_equal(only[:, :, :, 2:], adj[:, :, :, 2:])


@pytest.mark.slow  # a fresh process compiling ~8 small programs: ~10 s on 2 CPU cores
def test_bench_smoke() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.g4cn", "--smoke"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    assert len(lines) == 1
    out = json.loads(lines[0])
    adj = out["adjacency"]["g4"]
    assert adj["max_abs_diff"] < 1e-3
    # The vectorised program never asks for the [B, H, n, n, g] tensor; the baseline does.
    b, h, n, g = adj["shape_in"]
    assert adj["vectorised"]["max_intermediate_elems"] < b * h * n * n * g
    assert adj["broadcast_nng"]["max_intermediate_elems"] >= b * h * n * n * g
    assert out["loop"]["g4"]["max_abs_err_vs_float64_loop"] < 1e-4
    assert out["g4cn"]["forward"]["ms"] > 0
