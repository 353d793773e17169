"""Forward+backward speed of the Flax encoder vs `transformers.BertModel` (torch) on the same weights.

    python -m lai_jax.bench_encoder [--batch 4] [--seq-len 608] [--threads N] [--steps 5] [--smoke]

Loss is the sum of the last hidden states; gradients are taken w.r.t. all parameters on both
sides. The JAX step is jitted and compiled before timing. Prints one JSON line.

Default --seq-len is the SciERC NER static length (SPEC §3): 1 + C(150) + 1 + N_anno(8 wordpieces
for the six SciERC annotations) + 1 + 2*K(220) = 601, rounded up to a multiple of 8 = 608.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Sequence

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
    if args.threads:
        # Before JAX creates its CPU client, so XLA's intra-op pool gets this many threads.
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.threads]))
    threads = len(os.sched_getaffinity(0))

    import jax
    import jax.numpy as jnp
    import numpy as np

    from lai_jax import encoder

    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    path = encoder.resolve_encoder_path(args.model)
    t0 = time.perf_counter()
    model, params, _ = encoder.load(path, dtype=dtype, remat=args.remat)
    load_s = time.perf_counter() - t0
    cfg = model.config
    ids, pos, types, mask = _inputs(args.batch, args.seq_len, cfg.vocab_size, cfg.max_position_embeddings)
    params = jax.device_put(params)
    batch = jax.device_put((ids, pos, types, mask))

    def loss(p, rng, b):
        out = model.apply({"params": p}, *b, deterministic=not args.train, rngs={"dropout": rng})
        return out.astype(jnp.float32).sum()

    step = jax.jit(jax.value_and_grad(loss))
    rng = jax.random.PRNGKey(0)
    t0 = time.perf_counter()
    compiled = step.lower(params, rng, batch).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(params, rng, batch))  # warm-up
    t0 = time.perf_counter()
    for i in range(args.steps):
        jax.block_until_ready(compiled(params, jax.random.fold_in(rng, i), batch))
    jax_s = (time.perf_counter() - t0) / args.steps

    result = {
        "jax_steps_per_s": round(1.0 / jax_s, 4),
        "torch_steps_per_s": None,
        "ratio": None,
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
    }

    if not args.no_torch:
        import torch
        from transformers import BertModel

        torch.set_num_threads(threads)
        # No pooler: the JAX side has none either.
        tmodel = BertModel.from_pretrained(
            path, attn_implementation=args.torch_attn, add_pooling_layer=False
        )
        tmodel.train(args.train)
        neg = np.finfo(np.float32).min
        tb = dict(
            input_ids=torch.from_numpy(ids.astype(np.int64)),
            position_ids=torch.from_numpy(pos.astype(np.int64)),
            token_type_ids=torch.from_numpy(types.astype(np.int64)),
            attention_mask=torch.from_numpy(np.where(mask, 0.0, neg).astype(np.float32)[:, None]),
        )

        def torch_step() -> None:
            tmodel.zero_grad(set_to_none=True)
            tmodel(**tb).last_hidden_state.sum().backward()

        torch_step()  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.steps):
            torch_step()
        torch_s = (time.perf_counter() - t0) / args.steps
        result["torch_steps_per_s"] = round(1.0 / torch_s, 4)
        result["ratio"] = round(torch_s / jax_s, 3)  # >1: JAX faster
        result["torch_attn"] = args.torch_attn
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
