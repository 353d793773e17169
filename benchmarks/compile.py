"""Compile seconds of the NER train and evaluation steps, as the training loop builds them.

    python -m benchmarks.compile [--dataset quick] [--batch 8] [--repeats 3] [--smoke]

On a CPU the quick job's time is partly compilation (per phase: three gradient programs, one optimiser update and
one evaluation shape, about 7, 3 and 4 s each on a 2-core VM), and that part does not shrink with a faster CPU.
This measures it for one batch shape, ``--batch`` real dev instances of ``configs/<dataset>.py:ner`` (so evaluation
length); the train time is a first shape's, its gradient program plus the update. Each repeat builds a fresh
``Runner`` around fresh step functions, so neither JAX's in-memory caches nor the persistent compilation cache
(switched off here) can answer, and ``Runner.compile_train`` / the first ``Runner.eval`` pay the whole trace +
lower + XLA compile. Prints ONE JSON line; compare variants by running them alternately in one
command, since a shared VM drifts. ``--smoke``: the encoder's first layer, 16 wordpieces, 8 candidates, two repeats.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Optional, Sequence

from benchmarks.workload import load_batch, make_setup

SMOKE = dict(max_text_len=16, max_candidates=8, layers=1, repeats=2, batch=1)


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compile", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="quick", help="configs/<dataset>.py, NER phase (default: quick)")
    p.add_argument("--batch", type=int, default=8, help="instances in the compiled batch (default: 8)")
    p.add_argument("--repeats", type=int, default=3, help="fresh compiles of each step (default: 3)")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, two repeats (for tests)")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.batch < 1:
        p.error("--repeats and --batch must be at least 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = _parse(argv)
    import jax

    from lai_jax.build import init_state
    from lai_jax.parallel import Runner
    from lai_jax.steps import TrainStep, bind_steps

    jax.config.update("jax_enable_compilation_cache", False)
    shapes = {k: SMOKE[k] for k in ("max_text_len", "max_candidates", "layers")} if args.smoke else {}
    if args.smoke:
        args.repeats, args.batch = SMOKE["repeats"], SMOKE["batch"]
    config, setup = make_setup("default", dataset=args.dataset, **shapes)
    host_batch, _ = load_batch(config, setup, args.batch)
    state = init_state(setup, host_batch, 1000)
    train_step, eval_step = bind_steps(setup.model, "ner")
    times: dict[str, list[float]] = {"train": [], "eval": []}
    for _ in range(args.repeats):
        # New function objects: pmap's cache is keyed on the function, so each repeat compiles from scratch.
        step = TrainStep(lambda s, b, u: train_step.grad(s, b, u), lambda s, g: train_step.apply(s, g))
        runner = Runner("pmap", step, lambda p, b: eval_step(p, b))
        placed = runner.put_state(state)
        t0 = time.perf_counter()
        runner.compile_train(placed, host_batch, False)
        times["train"].append(round(time.perf_counter() - t0, 2))
        t0 = time.perf_counter()
        runner.eval(placed.params, host_batch)  # the first call compiles; one forward pass is small beside it
        times["eval"].append(round(time.perf_counter() - t0, 2))
    result = {"dataset": args.dataset, "batch": args.batch, "T": int(host_batch["input_ids"].shape[1]),
              "K": int(host_batch["cand_mask"].shape[1]), "backend": jax.default_backend(),
              **{f"{k}_compile_s": v for k, v in times.items()},
              **{f"{k}_compile_median_s": statistics.median(v) for k, v in times.items()}}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
