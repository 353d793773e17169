"""Forward+backward speed of the Flax encoder vs `transformers.BertModel` (torch) on the same weights.

    python -m benchmarks.encoder [--batch 4] [--seq-len 608] [--threads N] [--steps 5] [--smoke]

Loss is the sum of the last hidden states; gradients are taken w.r.t. all parameters on both
sides. The JAX step is jitted and compiled before timing; after one warm-up step each, JAX and torch
steps alternate and the medians are reported. Prints one JSON line.

Default --seq-len is the SciERC NER static length (SPEC §3): 1 + C(150) + 1 + N_anno(8 wordpieces
for the six SciERC annotations) + 1 + 2*K(220) = 601, rounded up to a multiple of 8 = 608.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable, Sequence

from benchmarks import timing

SCIERC_NER_SEQ_LEN = 608


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="HF directory or Hub name (default: packaged MiniLM)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=SCIERC_NER_SEQ_LEN)
    p.add_argument("--steps", type=int, default=5, help="timed steps per framework")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU cores for both frameworks (pins the process; XLA sizes its pool from the affinity "
        "mask). Default: all schedulable cores",
    )
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="JAX compute dtype")
    p.add_argument(
        "--train", action="store_true", help="dropout on (torch train mode, JAX deterministic=False)"
    )
    p.add_argument("--remat", action="store_true", help="JAX per-layer rematerialisation")
    p.add_argument("--torch-attn", default="sdpa", choices=("sdpa", "eager"))
    p.add_argument("--no-torch", action="store_true", help="time JAX only (e.g. on an accelerator)")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, one step (for tests)")
    args = p.parse_args(argv)
    if args.smoke:
        args.batch, args.seq_len, args.steps = 1, 16, 1
    return args


def _inputs(batch: int, seq_len: int, vocab: int, max_pos: int, seed: int = 0):
    """Random ids, marker-like repeated position ids and a random 3-D mask with a true diagonal."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab, (batch, seq_len)).astype(np.int32)
    text = min(seq_len // 4, max_pos)
    pos = np.tile(np.arange(seq_len) % max_pos, (batch, 1))
    # Second half imitates span markers that reuse the text's position ids.
    pos[:, seq_len // 2 :] = rng.integers(0, max(text, 1), (batch, seq_len - seq_len // 2))
    types = np.zeros((batch, seq_len), np.int32)
    mask = rng.random((batch, seq_len, seq_len)) < 0.5
    mask |= np.eye(seq_len, dtype=bool)[None]
    return ids, pos.astype(np.int32), types, mask


def main(argv: Sequence[str] | None = None) -> dict:
    args = _parse(argv)
    threads = timing.pin_threads(args.threads)  # before JAX creates its CPU client

    import jax
    import jax.numpy as jnp

    from lai_jax import pretrained

    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    path = pretrained.resolve_encoder_path(args.model)
    t0 = time.perf_counter()
    model, params, _ = pretrained.load(path, dtype=dtype, remat=args.remat)
    load_s = time.perf_counter() - t0
    cfg = model.config
    ids, pos, types, mask = _inputs(args.batch, args.seq_len, cfg.vocab_size, cfg.max_position_embeddings)
    params = jax.device_put(params)
    batch = jax.device_put((ids, pos, types, mask))

    def loss(p, rng, b):
        out = model.apply({"params": p}, *b, deterministic=not args.train, rngs={"dropout": rng})
        return out.astype(jnp.float32).sum()

    step = jax.jit(jax.value_and_grad(loss))
    keys = iter(jax.random.split(jax.random.PRNGKey(0), args.steps + 2))
    t0 = time.perf_counter()
    compiled = step.lower(params, next(keys), batch).compile()
    compile_s = time.perf_counter() - t0

    def jax_step() -> None:
        jax.block_until_ready(compiled(params, next(keys), batch))

    steps: dict[str, Callable[[], None]] = {"jax": jax_step}
    if not args.no_torch:
        steps["torch"] = _torch_step(path, args, threads, ids, pos, types, mask)
    for fn in steps.values():
        fn()  # warm-up
    # Interleaved step by step so that load from other processes hits both frameworks alike; medians per step.
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, fn in steps.items():
            times[name] += timing.time_steps(fn, 1)
    med = {name: statistics.median(ts) for name, ts in times.items()}

    result = {
        "jax_steps_per_s": round(1.0 / med["jax"], 4),
        "torch_steps_per_s": round(1.0 / med["torch"], 4) if "torch" in med else None,
        # >1: JAX faster.
        "ratio": round(med["torch"] / med["jax"], 3) if "torch" in med else None,
        "compile_s": round(compile_s, 2),
        "load_s": round(load_s, 2),
        "batch": args.batch,
        "seq_len": args.seq_len,
        "steps": args.steps,
        "threads": threads,
        "jax_dtype": args.dtype,
        "train": args.train,
        "remat": args.remat,
        "layers": cfg.num_hidden_layers,
        "hidden": cfg.hidden_size,
        "jax_device": str(jax.devices()[0].device_kind),
        "torch_attn": None if args.no_torch else args.torch_attn,
        "step_s": {name: [round(t, 3) for t in ts] for name, ts in times.items()},
    }
    print(json.dumps(result))
    return result


def _torch_step(path: str, args: argparse.Namespace, threads: int, ids, pos, types, mask):
    """A closure running one forward+backward of `transformers.BertModel` on the same inputs."""
    import numpy as np
    import torch
    from transformers import BertModel

    torch.set_num_threads(threads)
    # No pooler: the JAX side has none either.
    model = BertModel.from_pretrained(path, attn_implementation=args.torch_attn, add_pooling_layer=False)
    model.train(args.train)
    neg = np.finfo(np.float32).min
    inputs = dict(
        input_ids=torch.from_numpy(ids.astype(np.int64)),
        position_ids=torch.from_numpy(pos.astype(np.int64)),
        token_type_ids=torch.from_numpy(types.astype(np.int64)),
        attention_mask=torch.from_numpy(np.where(mask, 0.0, neg).astype(np.float32)[:, None]),
    )

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(**inputs).last_hidden_state.sum().backward()

    return step


if __name__ == "__main__":
    main()
