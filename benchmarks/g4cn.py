"""Benchmark G4CN: vectorised KL adjacency vs baselines, and the full G4CN forward.

    python -m benchmarks.g4cn [--nodes 220] [--anno 13] [--hidden 768] [--batch 16] [--smoke]

Prints one JSON line. Times are medians over ``--repeats`` jitted calls after a warm-up call;
memory is XLA's compiled ``temp_size_in_bytes`` (scratch beyond arguments and outputs), plus
the largest intermediate found in the jaxpr (what the program asks for before XLA fuses it).

The baselines here (`gaussian_kl_naive`, `gaussian_kl_broadcast`) and `iter_jaxpr_avals` are also the
references of tests/test_g4cn.py.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import timing
from lai_jax.g4cn import G4CN, gaussian_kl_matrix


# ------------------------------------------------------------------------ baselines and test references
def gaussian_kl_naive(mu: Any, sigma: Any) -> np.ndarray:
    """Reference: the KL formula evaluated pair by pair in a Python loop, float64 numpy.

    Slow on purpose (test reference and benchmark baseline). Shapes as `lai_jax.g4cn.gaussian_kl_matrix`.
    """
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    lead, (n, _) = mu.shape[:-2], mu.shape[-2:]
    mu2 = mu.reshape((-1, n, mu.shape[-1]))
    sg2 = sigma.reshape((-1, n, mu.shape[-1]))
    out = np.zeros((mu2.shape[0], n, n), dtype=np.float64)
    for b in range(mu2.shape[0]):
        for i in range(n):
            for j in range(n):
                mi, mj, si, sj = mu2[b, i], mu2[b, j], sg2[b, i], sg2[b, j]
                out[b, i, j] = 0.5 * np.sum(
                    2 * np.log(sj) - 2 * np.log(si) + (si**2 + (mi - mj) ** 2) / sj**2 - 1
                )
    return out.reshape(lead + (n, n))


def gaussian_kl_broadcast(mu: jnp.ndarray, sigma: jnp.ndarray) -> jnp.ndarray:
    """GDPNet-style KL that broadcasts to ``[..., n, n, g]`` first (benchmark baseline)."""
    mi, mj = mu[..., :, None, :], mu[..., None, :, :]
    si, sj = sigma[..., :, None, :], sigma[..., None, :, :]
    return 0.5 * jnp.sum(
        2 * jnp.log(sj) - 2 * jnp.log(si) + (si**2 + (mi - mj) ** 2) / sj**2 - 1, axis=-1
    )


def iter_jaxpr_avals(jaxpr: Any) -> Sequence[Any]:
    """All abstract values produced anywhere in a (closed) jaxpr, sub-jaxprs included.

    Used by the tests and the benchmark to prove that no ``[..., n, n, g]`` array is formed.
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    out = [v.aval for v in jaxpr.invars]
    for eqn in jaxpr.eqns:
        out.extend(v.aval for v in eqn.outvars)
        for p in eqn.params.values():
            for sub in p if isinstance(p, (tuple, list)) else (p,):
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    out.extend(iter_jaxpr_avals(sub))
    return out


# ---------------------------------------------------------------------------------------------- timing
def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Median ms of the blocking `fn` after one warm-up call (where any compile happens)."""
    return timing.median_ms(lambda: jax.block_until_ready(fn()), repeats)


def _max_intermediate(fn: Callable[..., Any], *args: Any) -> int:
    """Elements of the largest array appearing in ``fn``'s jaxpr."""
    avals = iter_jaxpr_avals(jax.make_jaxpr(fn)(*args))
    return max(int(math.prod(getattr(a, "shape", ()))) for a in avals)


def _measure(fn: Callable[..., Any], args: Sequence[Any], repeats: int) -> tuple[dict[str, Any], Any]:
    """Timing/memory record of ``fn(*args)`` and the compiled executable (to reuse its output)."""
    # Compile once and time the executable itself, so the memory figure is of what was timed.
    compiled = jax.jit(fn).lower(*args).compile()
    rec = {
        "ms": _median_ms(lambda: compiled(*args), repeats),
        "temp_bytes": timing.memory_stats(compiled)["temp"],
        "max_intermediate_elems": _max_intermediate(fn, *args),
    }
    return rec, compiled


def _grad_of(f: Callable[..., jnp.ndarray]) -> Callable[..., Any]:
    return jax.grad(lambda mu, sg: jnp.sum(f(mu, sg)), argnums=(0, 1))


def bench_adjacency(b: int, h: int, n: int, g: int, repeats: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    mu = jnp.asarray(rng.normal(size=(b, h, n, g)), jnp.float32)
    sg = jnp.asarray(rng.uniform(0.3, 2.0, size=(b, h, n, g)), jnp.float32)
    vec_rec, vec_fn = _measure(gaussian_kl_matrix, (mu, sg), repeats)
    bro_rec, bro_fn = _measure(gaussian_kl_broadcast, (mu, sg), repeats)
    vec, bro = np.asarray(vec_fn(mu, sg)), np.asarray(bro_fn(mu, sg))
    return {
        "shape_in": [b, h, n, g],
        "vectorised": vec_rec,
        "broadcast_nng": bro_rec,
        "vectorised_grad": _measure(_grad_of(gaussian_kl_matrix), (mu, sg), repeats)[0],
        "broadcast_nng_grad": _measure(_grad_of(gaussian_kl_broadcast), (mu, sg), repeats)[0],
        "max_abs_diff": float(np.max(np.abs(vec - bro))),
        "max_kl": float(np.max(bro)),
    }


def bench_loop(h: int, n: int, g: int, repeats: int, seed: int = 0) -> dict[str, Any]:
    """Python per-pair loop vs vectorised on a small graph (the loop is O(n^2) interpreted)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(1, h, n, g)).astype(np.float32)
    sg = rng.uniform(0.3, 2.0, size=(1, h, n, g)).astype(np.float32)
    t0 = time.perf_counter()
    ref = gaussian_kl_naive(mu, sg)
    loop_ms = (time.perf_counter() - t0) * 1e3
    jitted = jax.jit(gaussian_kl_matrix)
    args = (jnp.asarray(mu), jnp.asarray(sg))
    vec_ms = _median_ms(lambda: jitted(*args), repeats)
    err = float(np.max(np.abs(np.asarray(jitted(*args), np.float64) - ref)))
    return {
        "shape_in": [1, h, n, g],
        "python_loop_ms": round(loop_ms, 3),
        "vectorised_ms": vec_ms,
        "speedup": round(loop_ms / max(vec_ms, 1e-6), 1),
        "max_abs_err_vs_float64_loop": err,
    }


def bench_g4cn(
    b: int, n_cand: int, n_anno: int, d: int, heads: int, layers: int, sublayers: int,
    g: int, repeats: int, seed: int = 0,
) -> dict[str, Any]:
    n = n_cand + n_anno
    rng = np.random.default_rng(seed)
    nodes = jnp.asarray(rng.normal(size=(b, n, d)), jnp.float32)
    # Realistic padding: each instance fills a random number of candidate slots; annotations are real.
    filled = rng.integers(1, n_cand + 1, size=(b, 1))
    mask = jnp.asarray(
        np.concatenate([np.arange(n_cand)[None] < filled, np.ones((b, n_anno), bool)], axis=1)
    )
    model = G4CN(hidden=d, gcn_layers=layers, gcn_sublayers=sublayers, gcn_heads=heads, gauss_dim=g)
    # Jitted (eager init compiles op by op) and with an "rbg" key: threefry compiles slowly on CPU.
    params = jax.jit(model.init)(jax.random.key(seed, impl="rbg"), nodes, mask)
    n_params = int(sum(x.size for x in jax.tree_util.tree_leaves(params)))

    def fwd(p: Any, x: jnp.ndarray, m: jnp.ndarray) -> jnp.ndarray:
        return model.apply(p, x, m)

    def fwd_bwd(p: Any, x: jnp.ndarray, m: jnp.ndarray) -> Any:
        return jax.grad(lambda p_, x_: jnp.sum(jnp.square(fwd(p_, x_, m))), argnums=(0, 1))(p, x)

    return {
        "nodes": n, "hidden": d, "batch": b, "heads": heads, "gcn_layers": layers,
        "gcn_sublayers": sublayers, "gauss_dim": g, "params": n_params,
        "forward": _measure(fwd, (params, nodes, mask), repeats)[0],
        "forward_backward": _measure(fwd_bwd, (params, nodes, mask), repeats)[0],
    }


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=220, help="candidate slots K")
    ap.add_argument("--anno", type=int, default=13, help="annotation nodes")
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--gcn-layers", type=int, default=2)
    ap.add_argument("--gcn-sublayers", type=int, default=2)
    ap.add_argument("--gauss-dims", default="1,4", help="comma list of g for the adjacency bench")
    ap.add_argument("--loop-nodes", type=int, default=48, help="n for the python-loop comparison")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, g=4 only, one repeat (tests)")
    a = ap.parse_args(argv)
    if a.smoke:
        a.nodes, a.anno, a.hidden, a.batch, a.loop_nodes, a.repeats = 12, 3, 24, 2, 6, 1
        a.gauss_dims = "4"  # compiles dominate the smoke run; g=4 covers every code path
    gs = [int(x) for x in a.gauss_dims.split(",") if x]
    n = a.nodes + a.anno
    result = {
        "bench": "g4cn",
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "smoke": a.smoke,
        "adjacency": {
            f"g{g}": bench_adjacency(a.batch, a.heads, n, g, a.repeats) for g in gs
        },
        "loop": {f"g{g}": bench_loop(a.heads, a.loop_nodes, g, a.repeats) for g in gs},
        "g4cn": bench_g4cn(
            a.batch, a.nodes, a.anno, a.hidden, a.heads, a.gcn_layers, a.gcn_sublayers,
            1, a.repeats,
        ),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
