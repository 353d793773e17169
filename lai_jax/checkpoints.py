"""Orbax checkpoints of a run: the best parameters by dev F1 (to evaluate) and recent full states (to resume).

Layout under `<root>` (a run's `checkpoints/`):

    params/<step>/  the parameters alone of the best evaluation so far by dev F1 (ties: the later step), all that
                    evaluation and prediction read: a third of a full state (no Adam moments). One is kept.
    state/<step>/   the full train state (parameters, optimiser state, step, dropout key), written every
                    `checkpoint_every_evals` evaluations and at the last step, to resume exactly. The newest
                    `KEEP_STATES` are kept, so that a damaged one leaves an older one to fall back to.
    damaged/        state checkpoints that training found unreadable, moved out of the way.

Saving never blocks the train loop (one process): `save_params` / `save_state` take a device copy of the
arrays (dispatched, microseconds of host time; the run's state may then be donated to the next step) and hand
it to one background thread, which copies it to the host and writes it through orbax. `wait` blocks until
every started save is on disk. With several processes orbax synchronises the processes inside `save`, so saves
are then made on the main thread, every process in the same order.

A checkpoint that cannot be read is named in one warning line: training resumes from the newest readable
state (or starts fresh), evaluation falls back to the best readable checkpoint by dev F1, params or state,
and `NoReadableCheckpoint` names the folder to delete when none is left.

Older layouts (`<root>/<step>/` full states, or `<root>/latest/` + `<root>/best/`) are still evaluated (their
best step's parameters); they cannot be resumed (`LegacyLayoutError`).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from lai_jax.cli import debugging

log = logging.getLogger("lai_jax")

METRIC = "dev_f1"  # dev F1 of the evaluation at a checkpoint's step
BEST = "best_dev_f1"  # in state checkpoints: the best dev F1 up to that step (the "best so far" after a resume)
KEEP_STATES = 2
PARAMS, STATE, DAMAGED = "params", "state", "damaged"


class LegacyLayoutError(RuntimeError):
    """An operation an older checkpoint layout does not support (resuming, saving)."""


class NoReadableCheckpoint(RuntimeError):
    """No checkpoint of a run can be restored; the message names them and the folder to delete."""


@contextlib.contextmanager
def _absl_errors_only():
    """Silence absl (orbax's logger) warnings for a block."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl.setLevel(level)


def _in_orbax(filename: str) -> bool:
    return f"{os.sep}orbax{os.sep}" in filename


def _orbax_traceback(error: Optional[BaseException]) -> bool:
    """Whether `error`, or an exception it was raised from, passed through orbax's code."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        tb = error.__traceback__
        while tb is not None:
            if _in_orbax(tb.tb_frame.f_code.co_filename):
                return True
            tb = tb.tb_next
        error = error.__cause__ or error.__context__
    return False


def _abandoned_read(unraisable: Any) -> bool:
    """An unraisable exception left by orbax's reads of a checkpoint that failed: a tensorstore callback into
    orbax's closed event loop, or one of orbax's read coroutines collected with its error."""
    error, code = unraisable.exc_value, getattr(unraisable.object, "cr_code", None)
    return ((isinstance(error, RuntimeError) and str(error) == "Event loop is closed" and unraisable.object is None)
            or (code is not None and _in_orbax(code.co_filename)) or _orbax_traceback(error))


class _NeverRetrievedOrbaxRead(logging.Filter):
    """Drops asyncio's "... exception was never retrieved" reports of orbax's failed reads."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        error = record.exc_info[1] if record.exc_info else None
        if "exception was never retrieved" in message.partition("\n")[0] and (
                "orbax" in message or _orbax_traceback(error)):
            log.debug("dropped: %s", message.partition("\n")[0])
            return False
        return True


_QUIET: list = []


def _quiet_abandoned_reads() -> None:
    """From the first checkpoint read of the process on, drop what orbax's concurrent reads print when one fails.

    Orbax reads a checkpoint's arrays concurrently; when one read fails, restore raises and its event loop closes,
    and the other reads report, from tensorstore's threads and until the process ends, each as an unraisable
    `RuntimeError`, a never-retrieved task or a collected coroutine: thousands of stderr lines that repeat the one
    failure lai-jax names in a warning, and that can land in the middle of an `error:` line. Only those are dropped
    (logged at debug level); LAI_JAX_DEBUG=1 keeps them.
    """
    if _QUIET or debugging():
        return
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if _abandoned_read(unraisable):
            log.debug("dropped: %s: %s", type(unraisable.exc_value).__name__, unraisable.exc_value)
        else:
            previous(unraisable)

    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_NeverRetrievedOrbaxRead())
    _QUIET.append(hook)


def _best_fn(metrics: dict) -> float:
    return float(metrics[METRIC])


def _manager(directory: Path, read_only: bool, keep: Optional[int] = None) -> ocp.CheckpointManager:
    """A manager of one folder of steps; `keep`: the newest steps kept. best_fn makes orbax record each save's
    metrics (read back by `Checkpoints.metrics`); the preservation policy alone decides what is deleted."""
    policy = None if read_only or keep is None else policies.LatestN(n=keep)
    # Orbax names its multi-process barriers without the manager, and one manager's background finalize thread
    # enters a barrier that the other's next save also enters from the main thread: with one key the two meet
    # ("Barrier ... is already ongoing") and abort the run. A prefix per folder keeps each manager's own.
    sync = ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=f"lai_jax_{directory.name}")
    with _absl_errors_only():  # read-only managers warn that they will not save
        return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
            best_fn=_best_fn, best_mode="max", create=not read_only, read_only=read_only,
            preservation_policy=policy, multiprocessing_options=sync))


def legacy_layout(root: Path) -> Optional[str]:
    """"latest+best" or "steps" for a checkpoint folder of an older layout, None for the current one."""
    root = Path(root)
    if (root / "latest").is_dir() or (root / "best").is_dir():
        return "latest+best"
    if root.is_dir() and any(p.is_dir() and p.name.isdigit() for p in root.iterdir()):
        return "steps"
    return None


def has_checkpoint(root: Path) -> bool:
    """Whether `root` holds at least one finished checkpoint, in any layout."""
    root = Path(root)
    return root.is_dir() and bool(Checkpoints(root, read_only=True).candidates())


def damage_reason(error: BaseException) -> str:
    """One line from a failed restore: the innermost message's first line, without TensorStore's spec dump."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    text = text.split(" See full TensorStore details")[0]
    return text if len(text) <= 240 else text[:237] + "..."


def _shapes(tree: Any) -> list[tuple]:
    """Sorted (shape, dtype) of a tree's arrays: what a checkpoint must hold to restore against it."""
    leaves = jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, ocp.metadata.ArrayMetadata))
    return sorted((tuple(x.shape), str(np.dtype(x.dtype))) for x in leaves)


@jax.jit
def _device_copy(tree: Any) -> Any:
    # Fresh buffers: the originals may be donated to the next train step while the copy is written.
    return jax.tree.map(jnp.copy, tree)


class Checkpoints:
    """Best parameters and recent full states of a run under `root` (see the module docstring).

    `read_only=True` (evaluation, prediction) creates nothing and refuses to save.
    """

    def __init__(self, root: Path, read_only: bool = False):
        self.root = Path(root).absolute()
        self.read_only = read_only
        self.legacy = legacy_layout(self.root)
        self._legacy: list[ocp.CheckpointManager] = []
        self._params = self._state = None
        if self.legacy:
            log.info("%s has an older checkpoint layout: it can be evaluated, not resumed", self.root)
            dirs = [self.root / "latest", self.root / "best"] if self.legacy == "latest+best" else [self.root]
            self._legacy = [_manager(d, True) for d in dirs if d.is_dir()]
        else:
            def manager(name: str, keep: int) -> Optional[ocp.CheckpointManager]:
                exists = (self.root / name).is_dir()
                return _manager(self.root / name, read_only, keep) if exists or not read_only else None
            self._params, self._state = manager(PARAMS, 1), manager(STATE, KEEP_STATES)
        self._metrics: dict[tuple[str, int], dict] = {}  # metrics of this object's own saves
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None  # the background writer
        self._pending: list[concurrent.futures.Future] = []

    # ------------------------------------------------------------------------------------------ saving
    def save_params(self, step: int, params: Any, dev_f1: float) -> None:
        """Save `params` as the best step `step` (scored `dev_f1`) without waiting for the write (see `wait`)."""
        self._save(PARAMS, step, params, {METRIC: float(dev_f1)})

    def save_state(self, step: int, state: Any, dev_f1: float, best_f1: float) -> None:
        """Save the full train state at `step` (scored `dev_f1`, best so far `best_f1`); returns at once."""
        self._save(STATE, step, state, {METRIC: float(dev_f1), BEST: float(best_f1)})

    def _save(self, kind: str, step: int, tree: Any, metrics: dict) -> None:
        if self.legacy:
            raise LegacyLayoutError(f"{self.root} has an older checkpoint layout; train into a new workdir")
        if self.read_only:
            raise RuntimeError(f"{self.root} was opened read-only")
        manager = self._params if kind == PARAMS else self._state
        self._metrics[(kind, step)] = metrics
        if jax.process_count() > 1:  # orbax's save is a collective: made in program order, on every process
            manager.save(step, args=ocp.args.StandardSave(tree), metrics=metrics)
            return
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, "lai_jax-checkpoint")
        copy = jax.tree.map(lambda x: np.array(x, copy=True) if isinstance(x, np.ndarray) else x, tree)
        copy = _device_copy(copy) if any(isinstance(x, jax.Array) for x in jax.tree.leaves(copy)) else copy
        self._pending.append(self._pool.submit(
            manager.save, step, args=ocp.args.StandardSave(copy), metrics=metrics))

    def wait(self) -> None:
        """Block until every started save is on disk (and superseded steps are deleted); re-raise a failed one."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()
        for manager in self._managers():
            manager.wait_until_finished()

    def close(self) -> None:
        """Wait for pending saves and release orbax's and the writer's background resources."""
        self.wait()
        for manager in self._managers():
            manager.close()
        if self._pool is not None:
            self._pool.shutdown()

    def _managers(self) -> list[ocp.CheckpointManager]:
        return [m for m in (self._params, self._state, *self._legacy) if m is not None]

    # ------------------------------------------------------------------------------------------ steps
    def latest_step(self) -> Optional[int]:
        """The newest full-state step (what a resume starts from), None when there is none."""
        self.wait()
        return self._state.latest_step() if self._state is not None else None

    def state_steps(self) -> list[int]:
        """Full-state steps, newest first."""
        self.wait()
        return sorted(self._state.all_steps(), reverse=True) if self._state is not None else []

    def metrics(self, kind: str, step: int) -> dict:
        """The metrics saved with a checkpoint ({} when unreadable)."""
        if (kind, step) in self._metrics:
            return self._metrics[(kind, step)]
        manager = self._params if kind == PARAMS else self._state
        try:
            return dict(manager.metrics(step) or {})
        except Exception:  # unreadable metadata: the restore will name it
            return {}

    def candidates(self) -> list[tuple[str, int, float]]:
        """(kind, step, dev F1) of every checkpoint, best first (ties: the later step, params before state).

        Older layouts: ("legacy<i>", best step, F1) of each manager that has one. Waits for pending saves.
        """
        self.wait()
        found = []
        if self.legacy:
            for i, manager in enumerate(self._legacy):
                step = manager.best_step()
                if step is not None:
                    m = manager.metrics(step) or {}
                    found.append((f"legacy{i}", step, float(m.get(METRIC, -1.0))))
        else:
            for kind, manager in ((PARAMS, self._params), (STATE, self._state)):
                for step in (manager.all_steps() if manager is not None else []):
                    found.append((kind, step, float(self.metrics(kind, step).get(METRIC, -1.0))))
        return sorted(found, key=lambda c: (-c[2], -c[1], c[0] != PARAMS))

    def best_step(self) -> Optional[int]:
        """The step of the best checkpoint by dev F1 (None before the first save)."""
        found = self.candidates()
        return found[0][1] if found else None

    def best_metric(self) -> Optional[float]:
        """Dev F1 of the best checkpoint, or None before the first save."""
        found = self.candidates()
        return found[0][2] if found else None

    def path(self, kind: str, step: int) -> Path:
        if kind.startswith("legacy"):
            return Path(self._legacy[int(kind[len("legacy"):])].directory) / str(step)
        return self.root / kind / str(step)

    # ---------------------------------------------------------------------------------------- restoring
    def restore_latest(self, like: Any) -> Any:
        """The newest full state, restored against `like` (a state or its shapes; None: as saved). Strict: an
        unreadable checkpoint raises (see `restore_state` for the fallback training uses)."""
        if self.legacy:
            raise LegacyLayoutError(f"{self.root} has an older checkpoint layout: it can be evaluated but not "
                                    "resumed; train into a new workdir")
        step = self.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.root / STATE}")
        self.wait()
        return self._read(STATE, step, like)

    def restore_state(self, like: Any) -> Optional[tuple[int, Any, float]]:
        """(step, state, best dev F1 so far) of the newest readable full state, None when there is none.

        Unreadable ones are named in a warning and moved to `damaged/` (by process 0), so that training can
        write those steps again; parameter checkpoints newer than the restored step are deleted, since the
        resumed run recomputes them.
        """
        if self.legacy:
            return self.restore_latest(like)  # raises LegacyLayoutError
        self.wait()
        for step in self.state_steps():
            try:
                state = self._read(STATE, step, like)
            except _Unreadable as e:
                self._set_aside(step)
                older = [s for s in self.state_steps() if s < step]
                then = f"resuming from step {older[0]}" if older else "no older state: training starts fresh"
                log.warning("checkpoint %s cannot be restored (%s); %s", self.path(STATE, step), e, then)
                continue
            self._discard_params_after(step)
            best = self.metrics(STATE, step).get(BEST, -1.0)
            return step, state, float(best)
        self._discard_params_after(0)
        return None

    def restore_params(self, like: Any) -> tuple[int, Any]:
        """(step, parameters) of the best readable checkpoint by dev F1: the best parameters, or else the best
        full state's parameters, with a warning naming each unreadable checkpoint passed over.

        `like`: the parameters or their shapes (None: as saved). Raises `NoReadableCheckpoint` naming the
        folder to delete when no checkpoint can be read, FileNotFoundError when there is none.
        """
        found = self.candidates()
        if not found:
            raise FileNotFoundError(f"no checkpoint in {self.root}")
        self.wait()
        failed = []
        for kind, step, _ in found:
            try:
                params = self._read(kind, step, like, params_only=True)
            except _Unreadable as e:
                failed.append(f"{self.path(kind, step)} ({e})")
                log.warning("checkpoint %s cannot be restored (%s)%s", self.path(kind, step), e,
                            "; trying the next best" if len(failed) < len(found) else "")
                continue
            if failed:
                log.warning("using checkpoint %s (step %d) instead", self.path(kind, step), step)
            return step, params
        raise NoReadableCheckpoint(f"no checkpoint in {self.root} can be restored: {'; '.join(failed)}. Delete "
                                   f"{self.root} and train again (the run then starts from step 0)")

    def _read(self, kind: str, step: int, like: Any, params_only: bool = False) -> Any:
        """Restore one checkpoint (for `params_only`, just its parameters); `_Unreadable` when its files cannot be
        read or hold other arrays than `like`."""
        path = self.path(kind, step)
        _quiet_abandoned_reads()  # before the restore: asyncio reports a failed read as its loop closes
        try:
            with _absl_errors_only():  # orbax warns that the item folder has no checkpoint-level metadata file
                saved = ocp.StandardCheckpointer().metadata(path / "default").item_metadata
        except Exception as e:
            raise _Unreadable(damage_reason(e)) from e
        if saved is None:
            raise _Unreadable("its array metadata cannot be read")
        nested = kind != PARAMS and params_only  # a full state, read for its parameters
        if nested:
            saved = saved["params"] if "params" in saved.keys() else {}
        if like is None:  # as saved, on this process's first device whatever the saving topology
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            like = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), saved,
                                is_leaf=lambda m: isinstance(m, ocp.metadata.ArrayMetadata))
        abstract = jax.tree.map(lambda x: x if isinstance(x, jax.ShapeDtypeStruct) else
                                ocp.utils.to_shape_dtype_struct(x), like)
        if _shapes(saved) != _shapes(abstract):
            # Damaged metadata, or another model than the run's config describes (a changed encoder or code).
            if not _shapes(saved):
                raise _Unreadable("its array metadata cannot be read")
            raise _Unreadable(f"its {len(_shapes(saved))} arrays are not the {len(_shapes(abstract))} arrays of "
                              f"this run's model, or not of their shapes")
        manager = self._params if kind == PARAMS else self._state
        if kind.startswith("legacy"):
            manager = self._legacy[int(kind[len("legacy"):])]
        if nested:  # the parameters alone out of a full state: the optimiser state is not read
            target = {"params": abstract}
            args = ocp.args.PyTreeRestore(target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                                          partial_restore=True)
        else:
            args = ocp.args.StandardRestore(abstract)
        try:
            out = manager.restore(step, args=args)
        except Exception as e:
            raise _Unreadable(damage_reason(e)) from e
        return out["params"] if nested else out

    def _set_aside(self, step: int) -> None:
        if jax.process_index() == 0:
            target = self.root / DAMAGED / f"{STATE}-{step}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(str(self.path(STATE, step)), str(target))
        self._sync(f"set_aside:{step}")
        self._state.reload()

    def _discard_params_after(self, step: int) -> None:
        for newer in [s for s in self._params.all_steps() if s > step]:
            log.info("deleting parameter checkpoint %s: newer than the resumed step %d", self.path(PARAMS, newer),
                     step)
            self._params.delete(newer)

    def _sync(self, name: str) -> None:
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"lai_jax.checkpoints:{self.root}:{name}")


class _Unreadable(Exception):
    """A checkpoint whose files cannot be read (the message is one line)."""


def one_replica(state: Any, leading_device_axis: bool) -> Any:
    """One copy of a runner's device state, to pass to `Checkpoints.save_*` without a blocking host copy.

    Replicated state (shard_map) is returned as it is (orbax writes one replica). Under pmap each leaf has a
    leading device axis of identical copies; the first local device's shard is taken (indexing `x[0]` instead
    would place a copy on every device). With several processes these single-device arrays are not global
    arrays that orbax could coordinate, so pmap then falls back to a host copy, which orbax writes from the
    primary process.
    """
    if not leading_device_axis:
        return state
    to_host = np.asarray if jax.process_count() > 1 else (lambda x: x)
    return jax.tree.map(lambda x: to_host(x.addressable_shards[0].data[0]), state)

