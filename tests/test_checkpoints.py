"""Checkpoints: latest + best in one asynchronous manager, one folder when they are the same step, old layout."""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lai_jax import checkpoints


def state_at(step: int) -> dict:
    """A small train-state-like tree whose values identify the step that produced it."""
    return {"params": {"w": jnp.full((3, 4), float(step)), "b": jnp.arange(4.0) + step},
            "step": jnp.asarray(step, jnp.int32)}


def step_dirs(root: Path) -> list[int]:
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def assert_state(restored, step: int) -> None:
    want = state_at(step)
    for got, ref in zip(jax.tree.leaves(restored), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))


def test_latest_and_best_share_one_write_and_best_survives_worse_evaluations(tmp_path):
    root = tmp_path / "checkpoints"
    ckpt = checkpoints.Checkpoints(root)
    # (step, dev F1) -> folders on disk afterwards: the latest step, plus the best one when it is older
    for step, f1, on_disk, best in [(2, 0.5, [2], 2), (4, 0.7, [4], 4), (6, 0.6, [4, 6], 4), (8, 0.65, [4, 8], 4),
                                    (10, 0.9, [10], 10), (12, 0.9, [12], 12)]:
        ckpt.save(step, state_at(step), f1)
        assert ckpt.best_step() == best and ckpt.latest_step() == step  # known before the write finishes
        ckpt.wait()
        assert step_dirs(root) == on_disk, step
    assert ckpt.best_metric() == pytest.approx(0.9)
    assert_state(ckpt.restore_latest(state_at(0)), 12)
    assert_state(ckpt.restore_best(state_at(0)), 12)
    ckpt.close()


def test_restore_best_after_a_later_worse_evaluation(tmp_path):
    root = tmp_path / "checkpoints"
    ckpt = checkpoints.Checkpoints(root)
    ckpt.save(2, state_at(2), 0.8)
    ckpt.save(4, state_at(4), 0.3)
    ckpt.wait()
    assert step_dirs(root) == [2, 4]
    # A fresh object reads everything back from disk, as evaluation and resuming do.
    again = checkpoints.Checkpoints(root)
    assert (again.best_step(), again.latest_step(), again.best_metric()) == (2, 4, pytest.approx(0.8))
    like = jax.eval_shape(lambda: state_at(0))  # shapes only, as restore_run passes
    assert_state(again.restore_best(like), 2)
    assert_state(again.restore_latest(like), 4)
    assert_state(again.restore_latest(None), 4)


def test_device_arrays_may_be_donated_as_soon_as_save_returns(tmp_path):
    ckpt = checkpoints.Checkpoints(tmp_path / "checkpoints")
    state = state_at(3)
    ckpt.save(3, state, 0.5)
    for x in jax.tree.leaves(state):
        x.delete()  # what the next donating train step does to the buffers
    assert_state(ckpt.restore_latest(jax.eval_shape(lambda: state_at(0))), 3)


ONE_REPLICA_CHECK = """
import jax, numpy as np
from lai_jax import checkpoints
state = {"w": np.arange(12.0).reshape(3, 4), "step": np.asarray(7)}
stacked = jax.pmap(lambda s: s)(jax.tree.map(lambda x: np.stack([x] * jax.local_device_count()), state))
one = checkpoints.one_replica(stacked, leading_device_axis=True)
for got, want in zip(jax.tree.leaves(one), jax.tree.leaves(state)):
    assert isinstance(got, jax.Array) and len(got.sharding.device_set) == 1, got.sharding
    np.testing.assert_array_equal(np.asarray(got), want)
assert checkpoints.one_replica(state, leading_device_axis=False) is state
print("ok", jax.local_device_count())
"""


def test_one_replica_of_a_pmap_state_is_one_device_copy():
    import os
    import subprocess
    import sys
    from tests.conftest import REPO
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    out = subprocess.run([sys.executable, "-c", ONE_REPLICA_CHECK], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.split()[-2:] == ["ok", "4"], out.stderr[-3000:]


def test_old_latest_and_best_layout_restores_best_but_does_not_resume(tmp_path):
    import orbax.checkpoint as ocp
    root = tmp_path / "checkpoints"
    # The layout of earlier runs, written as the earlier code did: two synchronous managers.
    latest = ocp.CheckpointManager(root / "latest", options=ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True, enable_async_checkpointing=False))
    best = ocp.CheckpointManager(root / "best", options=ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True, best_fn=lambda m: m["dev_f1"], best_mode="max", enable_async_checkpointing=False))
    host = lambda s: jax.tree.map(np.asarray, state_at(s))  # noqa: E731 - the old code saved host copies
    for step, f1 in [(2, 0.4), (4, 0.6), (6, 0.5)]:
        latest.save(step, args=ocp.args.StandardSave(host(step)))
        best.save(step, args=ocp.args.StandardSave(host(step)), metrics={"dev_f1": f1})
    ckpt = checkpoints.Checkpoints(root)
    assert ckpt.legacy and checkpoints.has_checkpoint(root)
    assert (ckpt.best_step(), ckpt.latest_step(), ckpt.best_metric()) == (4, 6, pytest.approx(0.6))
    assert_state(ckpt.restore_best(host(0)), 4)
    with pytest.raises(checkpoints.LegacyLayoutError, match="not resumed"):
        ckpt.restore_latest(host(0))
    with pytest.raises(checkpoints.LegacyLayoutError):
        ckpt.save(8, host(8), 0.9)


def test_has_checkpoint(tmp_path):
    assert not checkpoints.has_checkpoint(tmp_path / "missing")
    assert not checkpoints.has_checkpoint(tmp_path)
    ckpt = checkpoints.Checkpoints(tmp_path / "checkpoints")
    ckpt.save(1, state_at(1), 0.1)
    ckpt.wait()
    assert checkpoints.has_checkpoint(tmp_path / "checkpoints")
