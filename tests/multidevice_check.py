"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8 (test_train.py does): 3 train steps on
8 devices (pmap), on 1 device (pmap), on 8 devices (shard_map) and on 2 devices with 4 accumulated
micro-batches (pmap) from the same state and global batches; prints the max abs parameter differences as JSON,
and the losses of one step with dropout on 8 devices and on 1 (`dropout_losses`)."""
import json
import sys

import jax
import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from tests.conftest import tiny_config  # noqa: E402


from lai_jax.parallel import Runner, host_scalars  # noqa: E402
from lai_jax.steps import bind_steps  # noqa: E402
from lai_jax import build as build_lib
from lai_jax import input_pipeline


def main(encoder: str, phase: str) -> None:
    assert jax.local_device_count() == 8, jax.devices()
    config = tiny_config(phase, encoder, **{"model.dropout": 0.0, "model.encoder_dropout": 0.0, "batch_size": 16,
                                              "optim.adam_eps": 1e-6})
    setup = build_lib.build(config)
    docs = input_pipeline.load_splits(config, setup.labels)
    inst = input_pipeline.make_instances(setup.featurizer, setup.config.phase, docs["train"])
    # The cold-start switch stays on: the filter's own argmax decision is discontinuous, so summation-order
    # noise between device counts could flip a near-tie and change which spans the classifier sees.
    # Third batch is short: 11 real instances + 5 zero-weight pads, unevenly spread over devices.
    batches = [input_pipeline.stack(inst[0:16], 16), input_pipeline.stack(inst[16:32], 16), input_pipeline.stack(inst[32:43], 16)]
    init = build_lib.init_state(setup, input_pipeline.stack(inst[:1]), total_steps=3)
    host0 = jax.tree.map(np.asarray, init)
    finals = {}
    for name, mode, devices, accum in (("pmap8", "pmap", None, 1), ("pmap1", "pmap", jax.devices()[:1], 1),
                                       ("shard8", "shard_map", None, 1), ("pmap2_accum4", "pmap", jax.devices()[:2], 4)):
        runner = Runner(mode, *bind_steps(setup.model, phase, accum), devices=devices)
        state = runner.put_state(host0)
        for i, b in enumerate(batches):
            state, _ = runner.train(state, b, True)
        finals[name] = runner.get_state(state).params
        assert runner.compiles["train"] == 1, runner.compiles
    diff = lambda a, b: max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    moved = diff(finals["pmap8"], host0.params)
    print(json.dumps({"pmap8_vs_pmap1": diff(finals["pmap8"], finals["pmap1"]),
                      "pmap8_vs_shard8": diff(finals["pmap8"], finals["shard8"]),
                      "pmap8_vs_pmap2_accum4": diff(finals["pmap8"], finals["pmap2_accum4"]), "moved": moved,
                      **dropout_losses(encoder, phase, inst[0])}))


def dropout_losses(encoder: str, phase: str, instance) -> dict:
    """Losses of one step on copies of one instance, with dropout: 8 devices x 2 rows, and 1 device x 2 rows.

    Device 0 of both runs draws the same masks (same key, axis index 0). If all 8 devices drew device 0's
    masks, the 8-device loss (global sums over global counts) would equal the 1-device loss exactly."""
    config = tiny_config(phase, encoder, **{"model.dropout": 0.5, "model.encoder_dropout": 0.5, "batch_size": 16})
    setup = build_lib.build(config)
    host0 = jax.tree.map(np.asarray, build_lib.init_state(setup, input_pipeline.stack([instance]), total_steps=3))
    out = {}
    for name, devices, rows in (("dropout_loss_pmap8", None, 16), ("dropout_loss_pmap1", jax.devices()[:1], 2)):
        runner = Runner("pmap", *bind_steps(setup.model, phase), devices=devices)
        _, metrics = runner.train(runner.put_state(host0), input_pipeline.stack([instance] * rows), True)
        out[name] = host_scalars(runner.scalar(metrics))["loss"]
    return out


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
