"""Where the time of a train step goes (`python -m benchmarks.step --profile / --breakdown`).

`profile_step`: XLA op durations from a `jax.profiler` trace, attributed to model parts through the JAX name
stacks in the optimised HLO. `breakdown`: the pieces of a step (forward, forward+backward, optimiser, G4CN)
timed alone on both frameworks.
"""
from __future__ import annotations

import os
import re
import time
from typing import Any, Callable, Optional

from benchmarks import timing

_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.*)$")
_HEADS = ("span_proj", "anno_proj", "classifier", "filter")
_ATTN = re.compile(r"encoder/layer_\d+/(btnh,bsnh->bnts|bnts,bsnh->btnh|reduce_max|reduce_sum|exp|sub|neg|div)")


def hlo_op_names(hlo_text: str) -> dict[str, str]:
    """Optimised-HLO instruction name -> its JAX op_name (name stack), or a tag "<dot>", "<broadcast>",
    "<copy>" or "<other>" for instructions XLA created without metadata (judged from the fused body)."""
    bodies: dict[str, list[str]] = {}
    current: Optional[list[str]] = None
    instrs: list[tuple[str, str]] = []
    for line in hlo_text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):
            current = bodies.setdefault(line.split()[0].lstrip("%"), [])
            continue
        m = _INSTR.match(line)
        if m:
            instrs.append((m.group(1), m.group(2)))
            if current is not None:
                current.append(m.group(2))
    names: dict[str, str] = {}
    for name, rest in instrs:
        op = re.search(r'op_name="([^"]*)"', rest)
        if op:
            names.setdefault(name, op.group(1))
            continue
        called = re.search(r"calls=%?([\w.\-]+)", rest)
        body = " ".join(bodies.get(called.group(1), [])) if called else rest
        tag = ("<dot>" if " dot(" in body or rest.split("(")[0].endswith(" dot") else
               "<broadcast>" if "broadcast(" in body and " dot(" not in body and len(body) < 400 else
               "<copy>" if re.search(r" (copy|transpose)\(", body) else "<other>")
        names.setdefault(name, tag)
    return names


def op_category(op_name: Optional[str]) -> str:
    """Model part of an XLA op from its JAX name stack (flax module path), e.g. `encoder.ffn_matmul`.

    A fused op counts under its root op's name: e.g. the softmax max/sum fused with the QK^T matmul counts
    as attention, and the softmax normalisation fused into the dropout select counts as dropout.
    """
    if op_name is None or op_name == "<other>":
        return "unattributed other"
    if op_name == "<dot>":
        return "unattributed matmul (attention QK^T/PV layouts)"
    if op_name == "<broadcast>":
        return "materialised constant broadcasts"
    if op_name == "<copy>":
        return "copies/transposes"
    if "LAINet" not in op_name:
        return "loss" if "jvp(" in op_name else "optimizer, grad psum, clipping"
    parts = re.split(r"LAINet\)+/", op_name, maxsplit=1)  # "jvp(LAINet)/..." or "transpose(jvp(LAINet))/..."
    path = parts[1] if len(parts) == 2 else ""
    path = path[len("heads/"):] if path.startswith("heads/") else path  # models that nest the heads
    if re.search(r"_bernoulli|_uniform|threefry|random_bits|rng_bit", path):
        return "dropout mask RNG"
    if re.search(r"Dropout|attention_dropout", path):
        return "dropout apply (select; softmax normalisation fused in)"
    if path.startswith("encoder/embeddings"):
        return "encoder.embeddings"
    if re.match(r"encoder/layer_\d+/(query|key|value|attention_output)/", path):
        return "encoder.qkvo_matmul"
    if re.match(r"encoder/layer_\d+/(intermediate|output)/", path):
        return "encoder.ffn_matmul"
    if "LayerNorm" in path:
        return "encoder.layernorm"
    if _ATTN.match(path):
        return "encoder.attention (QK^T, PV, mask bias, softmax)"
    if re.match(r"encoder/layer_\d+/erfc?$", path):
        return "encoder.gelu"
    if path.startswith("encoder/"):
        return "encoder.other (residual adds, reshapes)"
    if path.startswith("g4cn"):
        return "g4cn"
    if path.split("/")[0] in _HEADS:
        return "heads (span/anno proj, classifier, filter)"
    return "lainet.other (mask, gathers, concat)"


def profile_step(step: Callable[[], Any], compiled: Any, steps: int) -> dict[str, Any]:
    """Trace `steps` calls of `step` (jax.profiler) and sum XLA op durations per `op_category`, per step.

    XLA's CPU runtime records one event per executed thunk (`hlo_op`); the optimised HLO of `compiled`
    maps each op to its JAX name stack. Durations are per thread, so independent ops that ran
    concurrently both count (the total can exceed the wall time of a step).
    """
    import collections
    import glob
    import shutil
    import tempfile

    import jax
    from jax.profiler import ProfileData

    names = hlo_op_names(compiled.as_text())
    logdir = tempfile.mkdtemp(prefix="lai_jax_profile_")
    try:
        t0 = time.perf_counter()
        jax.profiler.start_trace(logdir)
        for _ in range(steps):
            step()
        jax.profiler.stop_trace()
        wall = (time.perf_counter() - t0) / steps
        per_cat: collections.Counter = collections.Counter()
        per_dir: collections.Counter = collections.Counter()
        for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
            for plane in ProfileData.from_file(path).planes:
                for line in plane.lines:
                    for ev in line.events:
                        op = dict(ev.stats).get("hlo_op")
                        if op is None:
                            continue
                        name = names.get(op)
                        per_cat[op_category(name)] += ev.duration_ns
                        per_dir["backward" if name and "transpose(" in name else "forward" if name and "jvp(" in name
                                else "unattributed" if name is None or name.startswith("<") else "optimizer/other"
                                ] += ev.duration_ns
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    total = sum(per_cat.values())
    return {"wall_ms_per_step": round(wall * 1e3, 1), "op_ms_per_step": round(total / steps / 1e6, 1),
            "ms_per_step": {k: round(v / steps / 1e6, 1) for k, v in per_cat.most_common()},
            "share": {k: round(v / max(total, 1), 3) for k, v in per_cat.most_common()},
            "direction_share": {k: round(v / max(total, 1), 3) for k, v in per_dir.most_common()}}


# ------------------------------------------------------------------------------------------ breakdown
def breakdown(setup, config, host_batch: dict, host_params, torch_side: Any, steps: int, use_gold: bool,
              total_steps: int) -> dict[str, Any]:
    """Median ms of the pieces of a step (same batch, train mode). Pieces overlap (fwd ⊂ fwd+bwd).

    `torch_side`: a `benchmarks.step.TorchSide` or None; `total_steps` shapes the learning-rate schedule only.
    """
    import jax
    import jax.numpy as jnp

    from benchmarks import torch_reference as tr
    from lai_jax.models import ner_loss
    from lai_jax.steps import TrainState, make_optimizer

    model = setup.model
    params = jax.device_put(host_params)
    batch = jax.device_put(host_batch)
    rng = jax.random.PRNGKey(0)
    gold = jnp.asarray(use_gold)

    def objective(p, b):
        out = model.apply({"params": p}, b, deterministic=False, rngs={"dropout": rng})
        sums, counts = ner_loss(out, b, gold)
        return sum(sums[k] / jnp.maximum(counts[k], 1) for k in sums)

    def ms(fn, *a) -> float:
        c = jax.jit(fn).lower(*a).compile()
        return timing.median_ms(lambda: jax.block_until_ready(c(*a)), steps)

    out: dict[str, Any] = {}
    out["jax_forward_ms"] = ms(objective, params, batch)
    out["jax_fwd_bwd_ms"] = ms(jax.grad(objective), params, batch)
    state = TrainState.create(apply_fn=model.apply, params=params, tx=make_optimizer(config.optim, total_steps),
                              rng=rng)
    grads = jax.tree.map(jnp.ones_like, state.params)
    out["jax_optimizer_ms"] = ms(lambda s, g: s.apply_gradients(grads=g), state, grads)
    graph = _g4cn_inputs(setup, host_batch) if setup.head.use_annotations and setup.head.gcn_layers > 0 else None
    if graph is not None:
        g4cn, nodes, node_mask = graph

        def g_loss(p, x):
            return g4cn.apply({"params": p}, x, node_mask, deterministic=False, rngs={"dropout": rng}).sum()

        out["jax_g4cn_fwd_bwd_ms"] = ms(jax.grad(g_loss, argnums=(0, 1)), tr.head_params(params)["g4cn"], nodes)
    if torch_side is not None:
        out.update(_torch_pieces(torch_side, config, graph, steps, use_gold))
    return out


def _g4cn_inputs(setup, host_batch: dict):
    """(the lai-jax G4CN of `setup`, random nodes [B, K + annotations, d], node mask) for timing the G4CN alone."""
    import jax
    import jax.numpy as jnp

    from lai_jax.g4cn import G4CN

    head, d = setup.head, setup.model.bert.hidden_size
    g4cn = G4CN(hidden=d, gcn_layers=head.gcn_layers, gcn_sublayers=head.gcn_sublayers, gcn_heads=head.gcn_heads,
                gauss_dim=head.gauss_dim, edge=head.edge, dropout=head.dropout, dtype=setup.model.bert.dtype)
    n_anno = host_batch["anno_start"].shape[1]
    B, K = host_batch["cand_mask"].shape
    nodes = jax.random.normal(jax.random.PRNGKey(2), (B, K + n_anno, d))
    node_mask = jnp.concatenate([jnp.asarray(host_batch["cand_mask"]), jnp.ones((B, n_anno), bool)], axis=1)
    return g4cn, nodes, node_mask


def _torch_pieces(side: Any, config, graph, steps: int, use_gold: bool) -> dict[str, float]:
    import numpy as np
    import torch

    from benchmarks import torch_reference as tr

    tmodel, tb = side.model, side.batch

    def fwd() -> None:
        with torch.no_grad():
            tr.ner_objective(tmodel(tb), tb, use_gold)

    def fwd_bwd() -> None:
        tmodel.zero_grad(set_to_none=True)
        tr.ner_objective(tmodel(tb), tb, use_gold)[0].backward()

    def opt() -> None:
        torch.nn.utils.clip_grad_norm_(tmodel.parameters(), config.optim.grad_clip)
        side.opt.step()

    pieces = {"torch_forward_ms": fwd, "torch_fwd_bwd_ms": fwd_bwd, "torch_optimizer_ms": opt}
    if tmodel.use_graph and graph is not None:
        tnodes = torch.from_numpy(np.asarray(graph[1])).requires_grad_(True)
        tmask = torch.from_numpy(np.asarray(graph[2]))

        def g4cn() -> None:
            tmodel.zero_grad(set_to_none=True)
            tmodel.g4cn(tnodes, tmask).sum().backward()

        pieces["torch_g4cn_fwd_bwd_ms"] = g4cn
    return {name: timing.median_ms(fn, steps) for name, fn in pieces.items()}
