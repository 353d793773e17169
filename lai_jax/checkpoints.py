"""Orbax checkpoints (latest for resuming, best-by-dev-F1 for evaluation) and metric writing."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

log = logging.getLogger("lai_jax")


class Checkpoints:
    """Two orbax managers under one folder: `latest/` (resume exactly) and `best/` (highest dev F1).

    Saving the full train state in both keeps restore symmetric: evaluation restores `best` against the
    same abstract state that training builds.
    """

    def __init__(self, root: Path):
        root = Path(root).absolute()
        self.latest = ocp.CheckpointManager(root / "latest", options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, enable_async_checkpointing=False))
        self.best = ocp.CheckpointManager(root / "best", options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, best_fn=lambda m: m["dev_f1"], best_mode="max",
            enable_async_checkpointing=False))

    def save(self, step: int, state: Any, dev_f1: float) -> None:
        self.latest.save(step, args=ocp.args.StandardSave(state))
        self.best.save(step, args=ocp.args.StandardSave(state), metrics={"dev_f1": float(dev_f1)})

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def latest_step(self) -> Optional[int]:
        return self.latest.latest_step()

    def best_step(self) -> Optional[int]:
        return self.best.best_step()

    def best_metric(self) -> Optional[float]:
        step = self.best.best_step()
        if step is None:
            return None
        m = self.best.metrics(step) if hasattr(self.best, "metrics") else None
        return float(m["dev_f1"]) if m else None

    def _restore(self, manager: ocp.CheckpointManager, step: Optional[int], like: Any) -> Any:
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {manager.directory}")
        abstract = jax.tree.map(lambda x: x if isinstance(x, jax.ShapeDtypeStruct) else
                                ocp.utils.to_shape_dtype_struct(x), like)
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def restore_latest(self, like: Any) -> Any:
        return self._restore(self.latest, self.latest.latest_step(), like)

    def restore_best(self, like: Any) -> Any:
        return self._restore(self.best, self.best.best_step(), like)


class MetricWriter:
    """TensorBoard scalars (tensorboardX) when available; always a JSON-lines log in the workdir."""

    def __init__(self, workdir: Path):
        self._jsonl = open(Path(workdir) / "metrics.jsonl", "a")
        try:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(str(Path(workdir) / "tensorboard")) if jax.process_index() == 0 else None
        except ImportError:  # optional: the JSON log still records everything
            self._tb = None

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        import json
        self._jsonl.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")
        self._jsonl.flush()  # a crash must not lose the log
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, float(v), step)

    def flush(self) -> None:
        self._jsonl.flush()
        if self._tb is not None:
            self._tb.flush()


def metric_writer(workdir: Path) -> MetricWriter:
    return MetricWriter(workdir)
