"""Plan a run before renting GPUs: memory, FLOPs and time per device, from the step compiled ahead of time here.

    python -m benchmarks.plan --config=configs/scierc.py:ner --encoder=random:bert-base --devices=8 [--tflops=400]

The per-device train step (`lai_jax.steps.TrainStep`, as the runner's shard_map maps it) is lowered and
compiled on this machine's first device for each batch shape of the run (`input_pipeline.plan_buckets` and
`TrainingSet` on the training split, as training does: the shapes and how many steps each gets per epoch) at
the per-device micro-batch, batch_size / (devices x grad_accum_steps) rows. Nothing is placed or run: the state
is `jax.eval_shape` of `init_state`. Printed per device:

* memory: parameters and optimiser state (float32; exact), the batch, and XLA's temporaries of the largest
  shape (activations and scratch) for the compiled backend (on a CPU: XLA:CPU's buffer assignment with XLA's
  attention; cuDNN's fused attention on a GPU keeps no [B, H, T, T] tensors and needs less);
* FLOPs per step (XLA's cost analysis of each compiled shape, times grad_accum_steps; the forward-only count
  pass of NER accumulation is left out) and per epoch (the sum over the epoch's steps of their shape's FLOPs);
* time per epoch and for the run at ``--tflops`` sustained TFLOP/s per device (compute only: the gradient
  all-reduce, whose size is printed, and the host are not in it).

``--dtype`` (default bfloat16, what a GPU run computes in) and ``--set FIELD=VALUE`` change the config;
``--json`` prints one JSON line instead of the table.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Optional, Sequence

from benchmarks import timing


def attention_matmul_flops(bert, batch: int, seq_len: int, train: bool = True) -> float:
    """FLOPs of the two attention matmuls (Q K^T and P V) of every layer: 2 x 2 B T^2 d forward, 3x that in
    training (the backward pass has twice the forward's matmuls)."""
    forward = 4.0 * batch * seq_len ** 2 * bert.hidden_size * bert.num_hidden_layers
    return 3.0 * forward if train else forward


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="config file and phase, e.g. configs/scierc.py:ner")
    p.add_argument("--encoder", default=None, help="encoder spec (default: the config's), e.g. random:bert-base")
    p.add_argument("--devices", type=int, default=1, help="data-parallel devices of the run (all hosts)")
    p.add_argument("--tflops", type=float, default=400.0, help="sustained TFLOP/s per device for the time estimate")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"), help="model.dtype of the run")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="config field (repeatable)")
    p.add_argument("--json", action="store_true", help="one JSON line instead of the table")
    args = p.parse_args(argv)
    if args.devices < 1 or args.tflops <= 0:
        p.error("--devices must be >= 1 and --tflops > 0")
    return args


def load_config(args: argparse.Namespace):
    """The config file with --encoder, --dtype and --set applied; `error:` and exit 2 on a bad one."""
    from lai_jax.config_base import load_config_file, parse_assignment, set_fields

    path, _, phase = args.config.partition(":")
    try:
        config = load_config_file(path, phase or None)
        if args.encoder:
            config.encoder = args.encoder
        config.model.dtype = args.dtype
        for item in args.set:
            set_fields(config, **dict([parse_assignment(config, item)]))
    except (FileNotFoundError, ValueError, KeyError) as e:
        _fail(f"--config={args.config}: {e}")
    return config


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _bytes(tree) -> int:
    import jax

    return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def compile_step(setup, state_shapes, batch: dict, phase: str):
    """The per-device train step compiled for `batch`'s shapes on one device (the runner's shard_map form)."""
    import jax
    import numpy as np
    from jax.sharding import Mesh, PartitionSpec as P

    from lai_jax.parallel import AXIS
    from lai_jax.steps import bind_steps

    train_step, _ = bind_steps(setup.model, phase, ema_decay=setup.config.optim.ema_decay)
    mesh = Mesh(np.asarray(jax.devices()[:1]), (AXIS,))
    step = jax.jit(jax.shard_map(train_step, mesh=mesh, in_specs=(P(), P(AXIS), P()), out_specs=(P(), P())),
                   donate_argnums=(0,))
    abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
    return step.lower(state_shapes, abstract, jax.ShapeDtypeStruct((), bool)).compile()


def plan(config, devices: int, tflops: float) -> dict[str, Any]:
    """The plan of `config` on `devices` data-parallel devices (see the module docstring)."""
    import jax

    from lai_jax import input_pipeline as ip
    from lai_jax.build import build, init_state
    from lai_jax.train import per_device_batch

    try:
        micro = per_device_batch(config, devices)
    except ValueError as e:
        _fail(str(e))
    accum = config.grad_accum_steps
    try:
        setup = build(config)
    except (ValueError, FileNotFoundError) as e:  # an unknown random size, a missing encoder folder, a bad field
        _fail(f"encoder {config.encoder!r}: {e}")
    docs = ip.load_splits(config, setup.labels)
    featurizer, train_inst, shapes = ip.plan_buckets(setup.featurizer, config.phase, docs["train"],
                                                     config.num_buckets)
    if not train_inst:
        _fail("the training split produced no instances")
    # As train_and_evaluate: an epoch's instances (sampled negatives or subjects when configured), their shapes.
    training = ip.TrainingSet(featurizer, config.phase, docs["train"], train_inst, shapes, config)
    train_inst, shapes = training.first, training.shapes
    steps_per_shape = [-(-len(g) // config.batch_size) for g in training.groups]
    steps_per_epoch = sum(steps_per_shape)
    sample = ip.stack(train_inst[:1])
    encoder_shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), setup.encoder_params)
    state = jax.eval_shape(lambda enc: init_state(setup, sample, steps_per_epoch * config.num_epochs, enc),
                           encoder_shapes)
    per_shape, largest = [], None
    for shape, n in zip(shapes, steps_per_shape):
        compiled = compile_step(setup, state, ip.cut(ip.stack(train_inst[:1], micro), shape), config.phase)
        flops = timing.compiled_flops(compiled)
        if flops is None:
            _fail(f"XLA reports no FLOPs for the compiled step on {jax.devices()[0].platform}")
        per_shape.append({"slots": shape[0], "tokens": shape[1], "steps_per_epoch": n, "flop_per_step": flops * accum})
        largest = timing.memory_stats(compiled)
    params, opt = _bytes(state.params), _bytes(state.opt_state) + _bytes(state.ema_params)
    epoch_flops = sum(s["flop_per_step"] * s["steps_per_epoch"] for s in per_shape)
    epoch_s = epoch_flops / (tflops * 1e12)
    bert = setup.model.bert
    return {
        "config": f"{config.dataset}:{config.phase}", "encoder": config.encoder, "dtype": config.model.dtype,
        "layers": bert.num_hidden_layers, "hidden": bert.hidden_size, "devices": devices,
        "compiled_on": jax.devices()[0].platform,
        "batch_size": config.batch_size, "per_device_batch": micro, "grad_accum_steps": accum,
        "train_instances": len(train_inst), "steps_per_epoch": steps_per_epoch, "num_epochs": config.num_epochs,
        "shapes": per_shape,
        "memory_mib_per_device": {
            "parameters": timing.mb(params), "optimiser": timing.mb(opt),
            "batch": timing.mb(largest["argument"] - params - opt - _bytes(state.step) - _bytes(state.rng)),
            "activations": timing.mb(largest["temp"]),
            "peak": timing.mb(largest["argument"] + largest["output"] - largest["alias"] + largest["temp"]),
        },
        "parameter_count": sum(math.prod(x.shape) for x in jax.tree.leaves(state.params)),
        "allreduce_mib_per_step": timing.mb(params) if devices > 1 else 0.0,
        "flop_per_step": max(s["flop_per_step"] for s in per_shape),
        "flop_per_epoch_per_device": epoch_flops, "flop_per_epoch_all_devices": epoch_flops * devices,
        "tflops_assumed": tflops, "epoch_s": epoch_s, "run_s": epoch_s * config.num_epochs,
    }


def format_plan(p: dict[str, Any]) -> str:
    """The plan as a short table for people."""
    m = p["memory_mib_per_device"]
    lines = [
        f"plan: {p['config']}, encoder {p['encoder']} ({p['layers']} layers, {p['hidden']} wide), {p['dtype']}, "
        f"{p['devices']} device(s); step compiled on {p['compiled_on']}",
        f"  global batch {p['batch_size']} = {p['per_device_batch']} per device x {p['devices']} device(s) x "
        f"{p['grad_accum_steps']} accumulation step(s); {p['train_instances']} training instances, "
        f"{p['steps_per_epoch']} steps/epoch, {p['num_epochs']} epochs",
        "  memory per device (MiB):",
        f"    parameters   {m['parameters']:>10.1f}  ({p['parameter_count'] / 1e6:.1f} M, float32)",
        f"    optimiser    {m['optimiser']:>10.1f}  (AdamW moments)",
        f"    batch        {m['batch']:>10.1f}",
        f"    activations  {m['activations']:>10.1f}  (XLA temporaries of the largest shape, {p['compiled_on']})",
        f"    peak         {m['peak']:>10.1f}  (arguments + outputs - donated + temporaries)",
        "  batch shapes (slots, tokens): " + ", ".join(
            f"({s['slots']}, {s['tokens']}) {s['steps_per_epoch']} steps x {s['flop_per_step'] / 1e12:.4g} TFLOP"
            for s in p["shapes"]),
        f"  FLOPs per device: {p['flop_per_step'] / 1e12:.4g} TFLOP per step (largest shape), "
        f"{p['flop_per_epoch_per_device'] / 1e12:.4g} TFLOP per epoch "
        f"({p['flop_per_epoch_all_devices'] / 1e12:.4g} on all devices)",
        f"  at {p['tflops_assumed']:g} TFLOP/s sustained per device: {p['epoch_s']:.3g} s per epoch, "
        f"{p['run_s']:.3g} s for {p['num_epochs']} epochs (compute only; the gradient all-reduce of "
        f"{p['allreduce_mib_per_step']:.0f} MiB per step and the host are not included)",
    ]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = _parse(argv)
    result = plan(load_config(args), args.devices, args.tflops)
    print(json.dumps(result) if args.json else format_plan(result), flush=True)
    return result


if __name__ == "__main__":
    main()
