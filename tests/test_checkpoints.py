"""Checkpoints: best parameters + recent full states, background writes, damaged checkpoints, older layouts."""
import logging
import os
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lai_jax import checkpoints


def state_at(step: int) -> dict:
    """A small train-state-like tree whose values identify the step that produced it."""
    return {"params": {"w": jnp.full((3, 4), float(step)), "b": jnp.arange(4.0) + step},
            "opt_state": {"mu": jnp.full((3, 4), -float(step))}, "step": jnp.asarray(step, jnp.int32)}


def step_dirs(folder: Path) -> list[int]:
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()) if folder.is_dir() else []


def assert_tree(restored, want) -> None:
    assert jax.tree.structure(jax.tree.map(np.asarray, restored)) == jax.tree.structure(want)
    for got, ref in zip(jax.tree.leaves(restored), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))


def train_like(ckpt: checkpoints.Checkpoints, evaluations, every: int) -> None:
    """What train.py does at each evaluation: best parameters when not worse, a full state every `every`."""
    best = -1.0
    for i, (step, f1) in enumerate(evaluations, 1):
        if f1 >= best:
            best = f1
            ckpt.save_params(step, state_at(step)["params"], f1)
        if i % every == 0:
            ckpt.save_state(step, state_at(step), f1, best)


def largest_file(folder: Path) -> Path:
    return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def truncate(folder: Path) -> None:
    """Damage a checkpoint as a full disk or an interrupted copy does: its largest file cut in half."""
    big = largest_file(folder)
    os.truncate(big, big.stat().st_size // 2)


def test_best_parameters_and_the_newest_full_states_are_kept(tmp_path):
    root = tmp_path / "checkpoints"
    ckpt = checkpoints.Checkpoints(root)
    # (step, dev F1); a full state every 2nd evaluation: states at 4, 8, 12 of which the newest two stay
    train_like(ckpt, [(2, 0.5), (4, 0.7), (6, 0.6), (8, 0.65), (10, 0.9), (12, 0.8)], every=2)
    ckpt.wait()
    assert ckpt.best_step() == 10 and ckpt.latest_step() == 12
    assert step_dirs(root / "params") == [10] and step_dirs(root / "state") == [8, 12]
    # A fresh object reads everything back from disk, as evaluation and resuming do.
    again = checkpoints.Checkpoints(root, read_only=True)
    assert (again.best_step(), again.latest_step(), again.best_metric()) == (10, 12, pytest.approx(0.9))
    like = jax.eval_shape(lambda: state_at(0))  # shapes only, as restore_run passes
    step, params = again.restore_params(like["params"])
    assert step == 10
    assert_tree(params, state_at(10)["params"])
    assert_tree(again.restore_latest(like), state_at(12))
    assert_tree(again.restore_latest(None), state_at(12))
    resumed = checkpoints.Checkpoints(root).restore_state(like)
    assert resumed[0] == 12 and resumed[2] == pytest.approx(0.9)  # the best so far, for the resumed run
    assert_tree(resumed[1], state_at(12))


def test_a_save_returns_before_orbax_writes(tmp_path, monkeypatch):
    """The train loop never waits for a write: orbax runs on the background thread, here held back on purpose."""
    import orbax.checkpoint as ocp
    release, real_save = threading.Event(), ocp.CheckpointManager.save

    def held_save(self, *args, **kwargs):
        assert release.wait(30), "the test never released the save"
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", held_save)
    ckpt = checkpoints.Checkpoints(tmp_path / "checkpoints")
    t0 = time.perf_counter()
    ckpt.save_state(3, state_at(3), 0.5, 0.5)
    ckpt.save_params(3, state_at(3)["params"], 0.5)
    assert time.perf_counter() - t0 < 5  # a blocking save would wait for the 30 s timeout (or forever)
    assert step_dirs(tmp_path / "checkpoints" / "state") == []
    release.set()
    ckpt.wait()
    assert step_dirs(tmp_path / "checkpoints" / "state") == [3] == step_dirs(tmp_path / "checkpoints" / "params")


def test_device_arrays_may_be_donated_as_soon_as_save_returns(tmp_path):
    ckpt = checkpoints.Checkpoints(tmp_path / "checkpoints")
    state = state_at(3)
    ckpt.save_state(3, state, 0.5, 0.5)
    for x in jax.tree.leaves(state):
        x.delete()  # what the next donating train step does to the buffers
    assert_tree(ckpt.restore_latest(jax.eval_shape(lambda: state_at(0))), state_at(3))


def test_resume_falls_back_past_a_damaged_state_and_forgets_newer_parameters(tmp_path, caplog):
    root = tmp_path / "checkpoints"
    ckpt = checkpoints.Checkpoints(root)
    train_like(ckpt, [(2, 0.5), (4, 0.6), (6, 0.7), (8, 0.8)], every=2)  # states 4, 8; best parameters 8
    ckpt.close()
    truncate(root / "state" / "8")
    like = jax.eval_shape(lambda: state_at(0))
    with caplog.at_level(logging.WARNING, logger="lai_jax"):
        step, state, best = checkpoints.Checkpoints(root).restore_state(like)
    assert step == 4 and best == pytest.approx(0.6)
    assert_tree(state, state_at(4))
    warning = [r.getMessage() for r in caplog.records if r.name == "lai_jax" and r.levelno == logging.WARNING]
    assert len(warning) == 1 and "\n" not in warning[0]
    assert str(root / "state" / "8") in warning[0] and "resuming from step 4" in warning[0]
    # The damaged step is moved aside (training writes step 8 again), the parameters of step 8 are dropped
    # (the resumed run recomputes them).
    assert step_dirs(root / "state") == [4] and (root / "damaged" / "state-8").is_dir()
    assert step_dirs(root / "params") == []
    truncate(root / "state" / "4")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lai_jax"):
        assert checkpoints.Checkpoints(root).restore_state(like) is None  # nothing readable: start fresh
    assert "training starts fresh" in caplog.text and step_dirs(root / "state") == []


def test_evaluation_falls_back_to_the_best_readable_checkpoint_or_names_the_folder(tmp_path, caplog):
    root = tmp_path / "checkpoints"
    ckpt = checkpoints.Checkpoints(root)
    train_like(ckpt, [(2, 0.5), (4, 0.9), (6, 0.7), (8, 0.6)], every=2)  # params 4 (0.9); states 4 (0.9), 8 (0.6)
    ckpt.close()
    truncate(root / "params" / "4")
    like = jax.eval_shape(lambda: state_at(0))["params"]
    reader = checkpoints.Checkpoints(root, read_only=True)
    with caplog.at_level(logging.WARNING, logger="lai_jax"):
        step, params = reader.restore_params(like)
    assert step == 4  # the full state of the same step: parameters only, read from it
    assert_tree(params, state_at(4)["params"])
    assert str(root / "params" / "4") in caplog.text and str(root / "state" / "4") in caplog.text
    truncate(root / "state" / "4")
    assert checkpoints.Checkpoints(root, read_only=True).restore_params(like)[0] == 8  # the next best
    truncate(root / "state" / "8")
    with pytest.raises(checkpoints.NoReadableCheckpoint) as e:
        checkpoints.Checkpoints(root, read_only=True).restore_params(like)
    assert f"Delete {root} and train again" in str(e.value) and "\n" not in str(e.value)
    assert step_dirs(root / "state") == [4, 8]  # evaluation moves and deletes nothing


def test_only_orbax_leftovers_of_a_failed_read_are_dropped(monkeypatch):
    """The unraisable hook and asyncio filter installed before a restore drop orbax's leftovers of a failed read
    and pass everything else on."""
    import sys
    import types
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u))
    monkeypatch.setattr(checkpoints, "_QUIET", [])
    monkeypatch.delenv("LAI_JAX_DEBUG", raising=False)
    monkeypatch.setattr(logging.getLogger("asyncio"), "filters", list(logging.getLogger("asyncio").filters))
    checkpoints._quiet_abandoned_reads()

    def unraisable(error, obj=None):
        sys.unraisablehook(types.SimpleNamespace(exc_type=type(error), exc_value=error, exc_traceback=None,
                                                 err_msg=None, object=obj))

    unraisable(RuntimeError("Event loop is closed"))  # a tensorstore callback into orbax's closed loop
    orbax_coro = compile("async def _read(): pass", "/x/orbax/checkpoint/serialization.py", "exec")
    namespace = {}
    exec(orbax_coro, namespace)
    coroutine = namespace["_read"]()
    unraisable(ValueError("OUT_OF_RANGE"), coroutine)
    coroutine.close()
    assert seen == []
    unraisable(RuntimeError("Event loop is closed"), object())  # someone else's
    unraisable(ValueError("boom"))
    assert [str(u.exc_value) for u in seen] == ["Event loop is closed", "boom"]
    asyncio_filter = logging.getLogger("asyncio").filters[-1]
    record = logging.LogRecord("asyncio", logging.ERROR, "", 0, "Task exception was never retrieved\nfuture: <Task "
                               "coro=<_read_array_index_and_device_put() at /x/orbax/checkpoint/s.py:1>>", (), None)
    assert not asyncio_filter.filter(record)
    other = logging.LogRecord("asyncio", logging.ERROR, "", 0, "Task exception was never retrieved\nfuture: <Task "
                              "coro=<mine() at /x/app.py:1>>", (), None)
    assert asyncio_filter.filter(other)


def test_a_checkpoint_of_another_model_is_named_too(tmp_path):
    ckpt = checkpoints.Checkpoints(tmp_path / "checkpoints")
    ckpt.save_params(2, state_at(2)["params"], 0.5)
    ckpt.close()
    other = {"w": jax.ShapeDtypeStruct((5, 4), jnp.float32), "b": jax.ShapeDtypeStruct((4,), jnp.float32)}
    with pytest.raises(checkpoints.NoReadableCheckpoint, match="are not the 2 arrays of this run's model"):
        checkpoints.Checkpoints(tmp_path / "checkpoints", read_only=True).restore_params(other)


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
    import subprocess
    import sys
    from tests.conftest import REPO, subprocess_xla_flags
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": subprocess_xla_flags("--xla_force_host_platform_device_count=4")}
    out = subprocess.run([sys.executable, "-c", ONE_REPLICA_CHECK], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.split()[-2:] == ["ok", "4"], out.stderr[-3000:]


def host(step: int) -> dict:
    return jax.tree.map(np.asarray, state_at(step))  # the oldest code saved host copies


def test_old_latest_and_best_layout_restores_best_parameters_but_does_not_resume(tmp_path):
    import orbax.checkpoint as ocp
    root = tmp_path / "checkpoints"
    # The layout of the earliest runs, written as that code did: two synchronous managers.
    latest = ocp.CheckpointManager(root / "latest", options=ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True, enable_async_checkpointing=False))
    best = ocp.CheckpointManager(root / "best", options=ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True, best_fn=lambda m: m["dev_f1"], best_mode="max", enable_async_checkpointing=False))
    for step, f1 in [(2, 0.4), (4, 0.6), (6, 0.5)]:
        latest.save(step, args=ocp.args.StandardSave(host(step)))
        best.save(step, args=ocp.args.StandardSave(host(step)), metrics={"dev_f1": f1})
    ckpt = checkpoints.Checkpoints(root)
    assert ckpt.legacy and checkpoints.has_checkpoint(root)
    assert (ckpt.best_step(), ckpt.best_metric()) == (4, pytest.approx(0.6))
    step, params = ckpt.restore_params(host(0)["params"])
    assert step == 4
    assert_tree(params, host(4)["params"])
    with pytest.raises(checkpoints.LegacyLayoutError, match="not resumed"):
        ckpt.restore_state(host(0))
    with pytest.raises(checkpoints.LegacyLayoutError):
        ckpt.save_params(8, host(8)["params"], 0.9)


def test_old_step_folder_layout_restores_best_parameters(tmp_path):
    """Runs written before params/ + state/: full states in <root>/<step>/, latest and best kept."""
    import orbax.checkpoint as ocp
    root = tmp_path / "checkpoints"
    old = ocp.CheckpointManager(root, options=ocp.CheckpointManagerOptions(
        create=True, best_fn=lambda m: m["dev_f1"], best_mode="max", enable_async_checkpointing=False))
    for step, f1 in [(2, 0.8), (4, 0.3)]:
        old.save(step, args=ocp.args.StandardSave(state_at(step)), metrics={"dev_f1": f1})
    ckpt = checkpoints.Checkpoints(root, read_only=True)
    assert ckpt.legacy == "steps" and checkpoints.has_checkpoint(root)
    step, params = ckpt.restore_params(jax.eval_shape(lambda: state_at(0))["params"])
    assert step == 2
    assert_tree(params, state_at(2)["params"])


def test_has_checkpoint(tmp_path):
    assert not checkpoints.has_checkpoint(tmp_path / "missing")
    assert not checkpoints.has_checkpoint(tmp_path)
    ckpt = checkpoints.Checkpoints(tmp_path / "checkpoints")
    assert not checkpoints.has_checkpoint(tmp_path / "checkpoints")
    ckpt.save_params(1, state_at(1)["params"], 0.1)
    ckpt.wait()
    assert checkpoints.has_checkpoint(tmp_path / "checkpoints")
