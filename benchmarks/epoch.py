"""One SciERC NER training epoch: lai-jax with batch buckets vs the PyTorch reference with per-batch dynamic padding.

    python -m benchmarks.epoch [--limit 64] [--batch 8] [--threads N] [--num-buckets 3] [--smoke]

One process, both frameworks, same weights, same threads, same batches in the same order:

* data: the first ``--limit`` instances of the SciERC training split (``configs/scierc.py:ner`` shapes with the
  packaged MiniLM-L6, ``--encoder default``); 0 = the whole split;
* order: the lai-jax training order (`lai_jax.input_pipeline`, as `lai_jax.train.train_and_evaluate` builds it):
  ``--num-buckets`` (slots, tokens) batch shapes chosen from these instances (`plan_buckets`), each bucket shuffled
  and cut into batches of ``--batch``, all batches shuffled (seed ``--seed``, epoch 0). Both frameworks train
  on exactly these batches, in this order. ``--num-buckets 1`` is the plain shuffled order PL-Marker uses;
* JAX: every batch stacked at the static shape (K, T), cut to its bucket's (slots, tokens) and (the last batch of a bucket)
  padded to ``--batch`` rows with zero-weight instances, run by `lai_jax.parallel.Runner` on one device. Each
  bucket's step is compiled before the epoch (`Runner.compile_train`; ``compile_s``, not part of the epoch);
  ``jax_recompiles`` counts traces during the epoch (0 when every batch hit a precompiled bucket);
* torch: `benchmarks.torch_reference` with the same initial parameters, dropout and optimiser, every batch cut
  to its own longest real row and fullest slot count (dynamic padding, as PL-Marker pads each batch) and not padded with empty rows.

Epoch times include building each host batch (stack + cut, plus the numpy -> torch copy on the torch side).
JAX dispatches asynchronously, as in training; the epoch ends when its last state is ready. Reported:
instances/s for both (real instances, padding rows not counted), ``ratio`` = lai-jax / torch instances/s (>1:
lai-jax faster), process CPU seconds of each epoch and ``cpu_ratio`` = torch / lai-jax CPU seconds (on a shared
machine the wall times depend on what else runs; CPU time tracks the work done, spin-waiting included), and ``*_token_fraction``: real tokens / token slots
computed (how much each side's padding costs). ``*_mean_loss``: the epoch's mean training loss on both sides
(same data and initial weights, different dropout streams: close, not equal).

Prints ONE JSON line. ``--smoke``: 8 instances, batch 4, C=16, K=32 (two buckets), one encoder layer (for tests).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

from benchmarks import timing
from benchmarks.workload import make_setup

USE_GOLD = True  # SciERC's first 40 epochs (cold start); the other branch costs the same
# Tiny, yet two buckets: K=32 slots leave the shorter sentences' instances short.
SMOKE = dict(limit=8, batch=4, num_buckets=4, max_text_len=16, max_candidates=32, layers=1)

Plan = list[tuple[int, list[int]]]  # (bucket index, instance indices) per batch, in training order


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="default", help="HF directory or Hub name (default: packaged MiniLM-L6)")
    p.add_argument("--limit", type=int, default=64, help="first N training instances (0: the whole split)")
    p.add_argument("--batch", type=int, default=8, help="instances per batch, both frameworks")
    p.add_argument("--num-buckets", type=int, default=3, help="lai-jax batch shapes (config.num_buckets)")
    p.add_argument("--threads", type=int, default=None, help="cores for both frameworks (default: all schedulable)")
    p.add_argument("--layers", type=int, default=None, help="use only the first N encoder layers")
    p.add_argument("--max-text-len", type=int, default=None, help="override C (default: the SciERC config's)")
    p.add_argument("--max-candidates", type=int, default=None, help="override K (default: the SciERC config's)")
    p.add_argument("--torch-attn", default="sdpa", choices=("sdpa", "eager"),
                   help="BertModel attention implementation (sdpa: transformers' default)")
    p.add_argument("--tune-malloc", action="store_true",
                   help="glibc: one arena, no mmap, no trim (see benchmarks.timing.tune_malloc)")
    p.add_argument("--no-torch", action="store_true", help="JAX only (e.g. on an accelerator)")
    p.add_argument("--seed", type=int, default=0, help="the batch order's seed")
    p.add_argument("--smoke", action="store_true", help="tiny shapes and 8 instances (for tests)")
    args = p.parse_args(argv)
    if args.smoke:
        args.limit, args.batch, args.num_buckets = SMOKE["limit"], SMOKE["batch"], SMOKE["num_buckets"]
        args.max_text_len = args.max_text_len or SMOKE["max_text_len"]
        args.max_candidates = args.max_candidates or SMOKE["max_candidates"]
        args.layers = args.layers or SMOKE["layers"]
    return args


# ----------------------------------------------------------------------------------------------- data
def train_instances(config, setup, limit: int, num_buckets: int) -> tuple[list, tuple]:
    """(the first `limit` NER instances of the training split, all for 0; lai-jax's batch shapes for them):
    slots split and shapes chosen as `lai_jax.train.train_and_evaluate` does (`input_pipeline.plan_buckets`)."""
    from lai_jax import input_pipeline as ip

    docs = ip.limit_sentences(ip.load_docs(config, "train", setup.labels), limit)
    _, instances, shapes = ip.plan_buckets(setup.featurizer, "ner", docs, num_buckets)
    return (instances[:limit] if limit else instances), shapes


def training_order(instances: Sequence, shapes: Sequence[tuple[int, int]], batch_size: int, seed: int) -> Plan:
    """Epoch-0 batches exactly as lai-jax training forms them: one shape per batch, seeded order."""
    from lai_jax import input_pipeline as ip

    return ip.epoch_batches(ip.assign(instances, shapes), batch_size, seed, 0)


def jax_batch(instances: Sequence, idx: Sequence[int], shape: tuple[int, int], batch_size: int) -> dict[str, np.ndarray]:
    """Static-shape batch: `batch_size` rows (zero-weight padding rows) cut to its bucket's (slots, tokens)."""
    from lai_jax import input_pipeline as ip

    return ip.cut(ip.stack([instances[i] for i in idx], batch_size), shape)


def dynamic_batch(instances: Sequence, idx: Sequence[int]) -> dict[str, np.ndarray]:
    """Only the real rows, cut to the batch's longest real row and its fullest slot count (dynamic padding)."""
    from lai_jax import input_pipeline as ip

    chosen = [instances[i] for i in idx]
    return ip.cut(ip.stack(chosen), (max(1, max(len(i.spans) for i in chosen)), max(ip.real_length(i) for i in chosen)))


def token_fraction(instances: Sequence, plan: Plan, slots: Callable[[int, list[int]], int]) -> float:
    """Real tokens over the token slots a side computes, `slots(bucket, idx)` per batch."""
    from lai_jax import input_pipeline as ip

    real = sum(ip.real_length(inst) for inst in instances)
    return round(real / sum(slots(b, idx) for b, idx in plan), 4)


# ---------------------------------------------------------------------------------------------- sides
def jax_epoch(setup, instances: Sequence, buckets: Sequence[tuple[int, int]], plan: Plan, batch_size: int
              ) -> tuple[dict[str, Any], Any]:
    """Compile every bucket's step, then train one epoch; returns (report, host copy of the initial params)."""
    import jax

    from lai_jax.build import init_state
    from lai_jax.parallel import Runner
    from lai_jax.steps import bind_steps

    runner = Runner("pmap", *bind_steps(setup.model, "ner"), devices=jax.local_devices()[:1])
    state = init_state(setup, jax_batch(instances, plan[0][1], buckets[-1], batch_size), len(plan))
    host_params = jax.tree.map(np.array, state.params)  # a copy: the state's buffers get donated
    state = runner.put_state(state)
    used = sorted({b for b, _ in plan})
    compile_s: dict[str, float] = {}
    for b in used:
        first = next(idx for bb, idx in plan if bb == b)
        _, compile_s[str(tuple(buckets[b]))], _ = timing.timed(
            lambda: runner.compile_train(state, jax_batch(instances, first, buckets[b], batch_size), USE_GOLD))
    traces = runner.compiles["train"]

    # Host time per step, alone: building a batch (stack, cut, transfer to the device). Training builds it in a
    # background thread (`input_pipeline.prefetch`) while the previous step runs.
    t0 = time.perf_counter()
    jax.block_until_ready([runner.put_batch(jax_batch(instances, idx, buckets[b], batch_size)) for b, idx in plan])
    host_s = time.perf_counter() - t0

    def epoch():
        nonlocal state
        losses = []
        for b, idx in plan:
            state, m = runner.train(state, jax_batch(instances, idx, buckets[b], batch_size), USE_GOLD)
            losses.append(runner.scalar(m)["loss"])
        return jax.block_until_ready(losses)

    losses, wall, cpu = timing.timed(epoch)
    return {"jax_epoch_s": round(wall, 2), "jax_epoch_cpu_s": round(cpu, 2),
            "jax_host_ms_per_step": round(1000 * host_s / len(plan), 2),
            "jax_step_ms": round(1000 * wall / len(plan), 2),
            "jax_instances_per_s": round(len(instances) / wall, 3),
            "compile_s": round(sum(compile_s.values()), 2), "compile_s_per_bucket": {k: round(v, 2) for k, v in
                                                                                      compile_s.items()},
            "jax_recompiles": runner.compiles["train"] - traces,
            "jax_mean_loss": round(statistics.fmean(float(np.asarray(x).reshape(())) for x in losses), 4)}, host_params


def torch_epoch(config, setup, instances: Sequence, plan: Plan, host_params, threads: int, attn: str
                ) -> dict[str, Any]:
    """The reference model with the same initial parameters trains on the same batches, dynamically padded."""
    import torch

    from benchmarks import torch_reference as tr

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tmodel = tr.like_lai_jax(setup, host_params, attn)
    opt, sched = tr.make_optimizer(tmodel, config.optim, len(plan))

    def epoch():
        return [tr.train_step(tmodel, opt, sched, tr.to_torch(dynamic_batch(instances, idx)), USE_GOLD,
                              config.optim.grad_clip)["loss"] for _, idx in plan]

    losses, wall, cpu = timing.timed(epoch)
    return {"torch_epoch_s": round(wall, 2), "torch_epoch_cpu_s": round(cpu, 2),
            "torch_instances_per_s": round(len(instances) / wall, 3),
            "torch_mean_loss": round(statistics.fmean(float(x) for x in losses), 4)}


# ----------------------------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = _parse(argv)
    threads = timing.pin_threads(args.threads)
    malloc_tuned = timing.tune_malloc(reexec=argv is None) if args.tune_malloc else False
    import jax

    from lai_jax import input_pipeline

    config, setup = make_setup(args.encoder, args.max_text_len, args.max_candidates, args.layers)
    config.num_buckets = args.num_buckets
    instances, buckets = train_instances(config, setup, args.limit, args.num_buckets)
    plan = training_order(instances, buckets, args.batch, args.seed)
    device = jax.devices()[0]
    result: dict[str, Any] = {
        "jax_instances_per_s": None, "torch_instances_per_s": None, "ratio": None, "cpu_ratio": None,
        "compile_s": None,
        "instances": len(instances), "batches": len(plan), "batch": args.batch, "threads": threads,
        "buckets": [list(b) for b in buckets],
        "batches_per_bucket": [sum(b == k for b, _ in plan) for k in range(len(buckets))],
        "T": buckets[-1][1], "K": buckets[-1][0],
        "layers": setup.model.bert.num_hidden_layers, "hidden": setup.model.bert.hidden_size,
        "device": f"{device.platform}:{device.device_kind}", "malloc_tuned": malloc_tuned,
        "torch_attn": None if args.no_torch else args.torch_attn,
        "jax_token_fraction": token_fraction(instances, plan, lambda b, idx: args.batch * buckets[b][1]),
        "torch_token_fraction": token_fraction(
            instances, plan, lambda b, idx: len(idx) * max(input_pipeline.real_length(instances[i]) for i in idx)),
    }
    jax_report, host_params = jax_epoch(setup, instances, buckets, plan, args.batch)
    result.update(jax_report)
    if not args.no_torch:
        result.update(torch_epoch(config, setup, instances, plan, host_params, threads, args.torch_attn))
        result["ratio"] = round(result["jax_instances_per_s"] / result["torch_instances_per_s"], 3)
        result["cpu_ratio"] = round(result["torch_epoch_cpu_s"] / result["jax_epoch_cpu_s"], 3)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
