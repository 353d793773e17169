"""Thin runners that map the per-device steps over all local devices.

The steps themselves (`lai_jax.steps`) are pure functions of one device's shard that reduce over the
mesh axis "data". `pmap` (default) and `jax.jit(jax.shard_map(...))` run the same functions; pmap is in
maintenance mode in current JAX, so both are kept working and tested against each other.

Several processes (one per host, `jax.distributed.initialize`): every process builds the same global batches
and feeds only its block of rows (`host_block`); pmap then reduces over every process's devices, and the
shard_map mesh holds all devices ordered by process, so process p's block lands on process p's devices.
Outputs that every process needs (evaluation probabilities, the host copy of the state) are gathered or read
from a local replica, never fetched from another host's devices.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "data"


def host_block(global_rows: int) -> slice:
    """This process's rows of a global batch of `global_rows`: the p-th of `process_count` equal blocks."""
    per_host, rest = divmod(global_rows, jax.process_count())
    if rest:
        raise ValueError(f"a global batch of {global_rows} rows does not split over {jax.process_count()} processes")
    return slice(jax.process_index() * per_host, (jax.process_index() + 1) * per_host)


def _local(x: jax.Array) -> np.ndarray:
    """A replicated array as host numpy, read from this process's own replica."""
    return np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x)


class Runner:
    """Holds the compiled train/eval functions for one mode and moves state and batches for them.

    State lives on the devices between steps: replicated with a leading device axis under pmap,
    replicated (spec P()) under shard_map. Batches arrive from the host as this process's slice of
    the global batch, [local_devices * per_device, ...].
    """

    def __init__(self, mode: str, train_step: Callable, eval_step: Callable, devices: Sequence[Any] | None = None):
        if mode not in ("pmap", "shard_map"):
            raise ValueError(f"config field 'parallel' must be 'pmap' or 'shard_map', got {mode!r}")
        self.mode = mode
        # Default: every local device. A subset (tests comparing 1 vs N devices) must be single-host.
        self.devices = list(devices) if devices is not None else jax.local_devices()
        self.n = len(self.devices)
        self.global_n = self.n * jax.process_count() if devices is None else self.n  # devices over all processes
        # Executables compiled per step kind: one per batch signature (field names, shapes, dtypes). The
        # tests prove static shapes with it; a trace without a compile (or a jit cache hit) does not count.
        # "apply": the optimiser update of a split train step (`lai_jax.steps.TrainStep`), one per runner.
        self.compiles = {"train": 0, "eval": 0, "apply": 0}
        self._executables: dict[tuple, Any] = {}  # (kind, batch signature) -> jax.stages.Compiled
        # A TrainStep's gradient part is compiled per batch shape and its update once (`lai_jax.steps`);
        # any other train step function is compiled whole per batch shape.
        split = hasattr(train_step, "grad") and hasattr(train_step, "apply")
        grad_or_whole = train_step.grad if split else train_step
        donate = () if split else (0,)  # the gradient part keeps the state (the update reads it); a whole step not
        self._apply = None
        if mode == "pmap":
            devs = None if devices is None else self.devices
            self._train = jax.pmap(grad_or_whole, axis_name=AXIS, donate_argnums=donate, devices=devs)
            if split:
                self._apply = jax.pmap(train_step.apply, axis_name=AXIS, donate_argnums=(0,), devices=devs)
            self._eval = jax.pmap(eval_step, axis_name=AXIS, devices=devs)
        else:
            # Ordered by process: process p's block of a global batch goes to process p's devices.
            every = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
            self.mesh = Mesh(np.asarray(self.devices if devices is not None else every), (AXIS,))
            self._train = jax.jit(jax.shard_map(grad_or_whole, mesh=self.mesh, in_specs=(P(), P(AXIS), P()),
                                                out_specs=(P(), P())), donate_argnums=donate)
            if split:
                self._apply = jax.jit(jax.shard_map(train_step.apply, mesh=self.mesh, in_specs=(P(), P()),
                                                    out_specs=P()), donate_argnums=(0,))
            self._eval = jax.jit(jax.shard_map(eval_step, mesh=self.mesh, in_specs=(P(), P(AXIS)),
                                               out_specs=P(AXIS)))

    def _executable(self, kind: str, batch: dict, *args) -> Any:
        """The compiled step of `kind` for `batch`'s signature, lowered and compiled on first use.

        The rest of the arguments (state or parameters, the filter flag) have one structure per runner.
        """
        key = (kind, _signature(batch))
        executable = self._executables.get(key)
        if executable is None:
            fn = {"train": self._train, "eval": self._eval, "apply": self._apply}[kind]
            if self.mode == "pmap" and jax.process_count() > 1:
                # pmap's ahead-of-time lowering takes a process's local arguments for the global ones (it
                # compiles for 8 rows where each of 2 processes feeds 4), so several processes dispatch the
                # pmapped function itself, which compiles once per signature on its first call.
                executable = fn
            else:
                executable = fn.lower(*args).compile()
            self._executables[key] = executable
            self.compiles[kind] += 1
        return executable

    # ---------------------------------------------------------------------------------- placement
    def put_state(self, state: Any) -> Any:
        """Host state -> device state for this runner."""
        if self.mode == "pmap":
            return jax.tree.map(lambda x: jax.device_put(np.broadcast_to(np.asarray(x), (self.n, *np.shape(x))),
                                                         self._pmap_sharding(np.ndim(x) + 1)), state)
        return jax.device_put(state, NamedSharding(self.mesh, P()))

    def get_state(self, state: Any) -> Any:
        """Device state -> one host copy (this process's replica: every process gets the same values)."""
        if self.mode == "pmap":
            return jax.tree.map(lambda x: np.asarray(x[0]), state)
        return jax.tree.map(_local, state)

    def _pmap_sharding(self, ndim: int):
        mesh = Mesh(np.asarray(self.devices), (AXIS,))
        return NamedSharding(mesh, P(AXIS, *([None] * (ndim - 1))))

    def shard_batch(self, batch: dict[str, np.ndarray]) -> dict:
        """[local_devices * B, ...] host arrays -> the layout the runner's functions take."""
        if self.mode == "pmap":
            return jax.tree.map(lambda x: x.reshape(self.n, x.shape[0] // self.n, *x.shape[1:]), batch)
        if jax.process_count() > 1:
            return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
                NamedSharding(self.mesh, P(AXIS)), x), batch)
        return batch

    def put_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's slice of a global batch, moved to the devices in the layout the steps take.

        Run ahead of the step (`input_pipeline.prefetch`), so the transfer overlaps the running step.
        """
        if self.mode == "pmap":
            sharding = self._pmap_sharding
            return {k: jax.device_put(v, sharding(v.ndim)) for k, v in self.shard_batch(batch).items()}
        if jax.process_count() > 1:
            return self.shard_batch(batch)
        return jax.device_put(batch, NamedSharding(self.mesh, P(AXIS)))

    # --------------------------------------------------------------------------------------- steps
    def _train_args(self, batch: dict, use_gold_filter: bool) -> tuple[dict, np.ndarray]:
        flag = np.asarray(use_gold_filter)
        if self.mode == "pmap":
            flag = np.broadcast_to(flag, (self.n,))
        placed = all(isinstance(v, jax.Array) for v in batch.values())
        return (batch if placed else self.shard_batch(batch)), flag

    def train(self, state: Any, batch: dict, use_gold_filter: bool):
        """One optimiser step on a global batch (host arrays, or arrays placed by `put_batch`)."""
        sharded, flag = self._train_args(batch, use_gold_filter)
        out = self._executable("train", sharded, state, sharded, flag)(state, sharded, flag)
        if self._apply is None:
            return out
        grads, metrics = out
        return self._executable("apply", {}, state, grads)(state, grads), metrics

    def compile_train(self, state: Any, batch: dict[str, np.ndarray], use_gold_filter: bool) -> Any:
        """Compile the train step for `batch`'s shapes ahead of time; `train` dispatches that executable.

        `state` is this runner's device state (`put_state`); nothing runs and nothing is donated. Returns the
        `jax.stages.Compiled` executable (for `memory_analysis()`, `cost_analysis()`, `as_text()`), so a caller
        can time the compile apart from the steps and analyse exactly what `train` will run. A split step's
        update is compiled too (its first time), but what is returned is the shape-specific gradient program.
        """
        sharded, flag = self._train_args(batch, use_gold_filter)
        executable = self._executable("train", sharded, state, sharded, flag)
        if self._apply is not None:
            self._executable("apply", {}, state, state.params)  # the gradients have the parameters' layout
        return executable

    def update_executable(self) -> Any:
        """The compiled optimiser update of a split train step (what FLOP counts add to the gradient program's);
        None for a train step compiled whole, or before the first `compile_train` / `train`."""
        return self._executables.get(("apply", ()))

    def eval_async(self, params: Any, batch: dict) -> Any:
        """Dispatch the eval step on a global batch whose `host_block` is `batch` (host arrays, or placed by
        `put_batch`); returns the device outputs at once, for `fetch`."""
        placed = all(isinstance(v, jax.Array) for v in batch.values())
        sharded = batch if placed else self.shard_batch(batch)
        return self._executable("eval", sharded, params, sharded)(params, sharded)

    def fetch(self, out: Any) -> dict[str, np.ndarray]:
        """Device outputs of `eval_async` -> all rows on every process, as host numpy.

        A collective when there are several processes: each must call it equally often, in the same order.
        """
        several = self.global_n > self.n
        if self.mode == "pmap":  # each process holds its own rows: concatenate the blocks in process order
            out = jax.tree.map(lambda x: np.asarray(x).reshape(-1, *x.shape[2:]), out)
        # shard_map: one global array over every host's devices, gathered in mesh (= process) order.
        return jax.tree.map(np.asarray, multihost_utils.process_allgather(out, tiled=True) if several else out)

    def eval(self, params: Any, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs of a global batch whose `host_block` is `batch`, all rows on every process (host numpy)."""
        return self.fetch(self.eval_async(params, batch))

    def scalar(self, metrics: dict) -> dict[str, Any]:
        """Per-step metrics (identical on every device) as one local device's arrays, already on their way to
        the host; `host_scalars` reads them. Under pmap the first shard is that device's buffer itself (shape
        (1,)): indexing `x[0]` would compile and run a gather over the devices for every metric and step."""
        if self.mode == "pmap":
            local = jax.tree.map(lambda x: x.addressable_shards[0].data, metrics)
        else:
            local = jax.tree.map(lambda x: x.addressable_data(0), metrics)
        for x in jax.tree.leaves(local):
            x.copy_to_host_async()
        return local


def host_scalars(metrics: dict) -> dict[str, float]:
    """`Runner.scalar` metrics as Python floats (blocks until they are computed)."""
    return {k: float(np.asarray(v).reshape(())) for k, v in jax.device_get(metrics).items()}


def _signature(batch: dict) -> tuple:
    """What an ahead-of-time executable is specialised to: each field's name, shape and dtype."""
    return tuple((k, tuple(v.shape), str(v.dtype)) for k, v in sorted(batch.items()))
