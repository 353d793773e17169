"""Orbax checkpoints: the latest step (to resume exactly) and the best step by dev F1 (to evaluate).

One asynchronous CheckpointManager writes `<root>/<step>/` folders and keeps two of them at most: the latest
step and the best-by-dev-F1 step (orbax preservation policies LatestN(1) + BestN(1)). When the latest step
is also the best one it is a single folder, written once. `save` returns once the state is on the host and
training continues while the files are written; `wait` blocks until they are.

Runs written before this layout (`<root>/latest/` and `<root>/best/`, two managers) still restore their best
step for evaluation; they cannot be resumed (`LegacyLayoutError`).

Multi-host: every process must call `save` (and `wait`) with the same step and metric; orbax synchronises
the processes and writes each array once, from the processes that hold it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

log = logging.getLogger("lai_jax")

METRIC = "dev_f1"  # the selection metric's key in each step's saved metrics


class LegacyLayoutError(RuntimeError):
    """An operation the old `latest/` + `best/` checkpoint layout does not support."""


def _best_fn(metrics: dict) -> float:
    return float(metrics[METRIC])


def _options(**overrides) -> ocp.CheckpointManagerOptions:
    return ocp.CheckpointManagerOptions(best_fn=_best_fn, best_mode="max", create=True, **overrides)


def _latest_and_best() -> policies.PreservationPolicy:
    # best_fn (in the options) makes best_step() rank by the metric; the policy decides what stays on disk.
    return policies.AnyPreservationPolicy([
        policies.LatestN(n=1),
        policies.BestN(get_metric_fn=_best_fn, reverse=False, n=1, keep_checkpoints_without_metrics=False),
    ])


def is_legacy_layout(root: Path) -> bool:
    """True for a checkpoint folder written with separate `latest/` and `best/` managers."""
    return (Path(root) / "latest").is_dir() or (Path(root) / "best").is_dir()


def has_checkpoint(root: Path) -> bool:
    """Whether `root` holds at least one finished checkpoint, in either layout."""
    root = Path(root)
    if not root.is_dir():
        return False
    return Checkpoints(root).best_step() is not None


class Checkpoints:
    """The latest and the best-by-dev-F1 train state of a run, under `root`.

    The whole train state is saved (params, optimiser state, step, rng), so that evaluation restores the best
    step against the same abstract state that training builds.
    """

    def __init__(self, root: Path):
        self.root = Path(root).absolute()
        self.legacy = is_legacy_layout(self.root)
        if self.legacy:
            log.info("%s has the old latest/ + best/ checkpoint layout: it can be evaluated, not resumed", self.root)
            self._latest = ocp.CheckpointManager(self.root / "latest", options=_options(read_only=True))
            self._best = ocp.CheckpointManager(self.root / "best", options=_options(read_only=True))
        else:
            self._latest = self._best = ocp.CheckpointManager(self.root, options=_options(
                preservation_policy=_latest_and_best(), enable_async_checkpointing=True))
        # Metrics of this object's own saves: readable while their files are still being written.
        self._metrics: dict[int, float] = {}

    def save(self, step: int, state: Any, dev_f1: float) -> None:
        """Save `state` as `step`, scored `dev_f1`; returns before the files are written (see `wait`).

        `state` may hold jax.Arrays (orbax copies them to the host before returning, so they may be donated
        right after) or NumPy arrays (these must not be modified until `wait`). See `one_replica` for a
        runner's device state.
        """
        if self.legacy:
            raise LegacyLayoutError(f"{self.root} has the old latest/ + best/ layout; train into a new workdir")
        self._metrics[step] = float(dev_f1)
        self._latest.save(step, args=ocp.args.StandardSave(state), metrics={METRIC: float(dev_f1)})

    def _managers(self) -> tuple[ocp.CheckpointManager, ...]:
        return (self._latest,) if self._latest is self._best else (self._latest, self._best)

    def wait(self) -> None:
        """Block until every started save is on disk (and superseded steps are deleted)."""
        for manager in self._managers():
            manager.wait_until_finished()

    def close(self) -> None:
        """Wait for pending saves and release orbax's background resources."""
        for manager in self._managers():
            manager.close()  # waits for its pending saves first

    def latest_step(self) -> Optional[int]:
        return self._latest.latest_step()

    def best_step(self) -> Optional[int]:
        return self._best.best_step()

    def best_metric(self) -> Optional[float]:
        """Dev F1 of the best step, or None before the first save."""
        step = self.best_step()
        if step is None:
            return None
        if step in self._metrics:
            return self._metrics[step]
        metrics = self._best.metrics(step)
        return float(metrics[METRIC]) if metrics else None

    def restore_latest(self, like: Any) -> Any:
        """The latest state, restored against `like` (a state or its shapes); `like=None`: as saved."""
        if self.legacy:
            raise LegacyLayoutError(f"{self.root} has the old latest/ + best/ layout: it can be evaluated "
                                    "(restore_best) but not resumed; train into a new workdir")
        return self._restore(self._latest, self.latest_step(), like)

    def restore_best(self, like: Any) -> Any:
        """The best-by-dev-F1 state, restored against `like` (a state or its shapes); `like=None`: as saved."""
        return self._restore(self._best, self.best_step(), like)

    def _restore(self, manager: ocp.CheckpointManager, step: Optional[int], like: Any) -> Any:
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {manager.directory}")
        self.wait()  # a step still being written is not readable yet
        if like is None:  # as saved (nested dicts), on this process's first device whatever the saving topology
            meta = ocp.StandardCheckpointer().metadata(Path(manager.directory) / str(step) / "default").item_metadata
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            like = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta,
                                is_leaf=lambda m: isinstance(m, ocp.metadata.ArrayMetadata))
        abstract = jax.tree.map(lambda x: x if isinstance(x, jax.ShapeDtypeStruct) else
                                ocp.utils.to_shape_dtype_struct(x), like)
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def one_replica(state: Any, leading_device_axis: bool) -> Any:
    """One copy of a runner's device state, to pass to `Checkpoints.save` without a blocking host copy.

    Replicated state (shard_map) is saved as it is: orbax writes one replica. Under pmap each leaf has a
    leading device axis of identical copies; the first local device's copy stays on that device (indexing
    `x[0]` instead would place a copy on every device), and orbax copies it to the host together with all
    other leaves. With several processes these single-device arrays are not global arrays that orbax could
    coordinate, so pmap then falls back to a host copy, which orbax writes from the primary process.
    """
    if not leading_device_axis:
        return state
    to_host = np.asarray if jax.process_count() > 1 else (lambda x: x)
    return jax.tree.map(lambda x: to_host(x.addressable_shards[0].data[0]), state)
