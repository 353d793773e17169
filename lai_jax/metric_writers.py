"""Metric writers with clu's method names (`clu.metric_writers.MetricWriter`), without depending on clu.

`create_default_writer(workdir)` gives process 0 a JSON-lines log (`<workdir>/metrics.jsonl`, always) plus
TensorBoard event files (`<workdir>/tensorboard/`, when tensorboardX is installed); every other process gets
a writer that does nothing, so callers never branch on the process index.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import jax

log = logging.getLogger("lai_jax")

Scalar = Any  # a Python number, or a NumPy / JAX scalar array
_OPENED = itertools.count()  # TensorBoard writers opened by this process


class MetricWriter:
    """The interface: scalars per step, hyper-parameters once, flush and close (close is idempotent)."""

    def write_scalars(self, step: int, scalars: Mapping[str, Scalar]) -> None:
        raise NotImplementedError

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class NoOpWriter(MetricWriter):
    """What processes other than 0 write: nothing."""

    def write_scalars(self, step: int, scalars: Mapping[str, Scalar]) -> None:
        pass

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def truncate_after(path: Path, step: int) -> None:
    """Drop the records of steps after `step` from a JSON-lines log (atomically; hparams records stay).

    A run killed after its last checkpoint logged steps it will train again when resumed from that checkpoint.
    """
    if not path.exists():
        return

    def keep(line: str) -> bool:
        try:
            return json.loads(line).get("step", step) <= step
        except json.JSONDecodeError:  # a line cut short by the kill
            return False
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.endswith("\n") and keep(line)]
    if len(kept) < len(lines):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)


class JsonlWriter(MetricWriter):
    """One JSON object a line: `{"step": s, name: value, ...}` per write_scalars, `{"hparams": {...}}` per
    write_hparams. Appends, so a resumed run continues the same file (after dropping the records past
    `resume_step`, which it is about to write again); flushed on every write so a killed run keeps its log up
    to the kill."""

    def __init__(self, path: Path, resume_step: int = 0):
        truncate_after(path, resume_step)
        self._file = open(path, "a")

    def _write(self, record: dict) -> None:
        if self._file.closed:
            raise ValueError(f"write to a closed metric writer ({self._file.name})")
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def write_scalars(self, step: int, scalars: Mapping[str, Scalar]) -> None:
        self._write({"step": int(step), **{k: float(v) for k, v in scalars.items()}})

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        self._write({"hparams": flatten(hparams)})

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        self._file.close()  # closing a closed file is a no-op


class TensorBoardWriter(MetricWriter):
    """Scalars and an hparams summary in TensorBoard event files, through tensorboardX."""

    def __init__(self, logdir: Path, resume_step: int = 0):
        from tensorboardX import SummaryWriter
        # Event file names carry only the second and host: without a suffix, a writer reopened within the
        # same second (a quick restart) would overwrite the file of the one before.
        suffix = f".{os.getpid()}.{next(_OPENED)}"
        # purge_step: TensorBoard discards the earlier files' events from that step on (logged before a kill).
        purge = resume_step + 1 if resume_step else None
        self._tb: Optional[Any] = SummaryWriter(str(logdir), filename_suffix=suffix, purge_step=purge)

    def write_scalars(self, step: int, scalars: Mapping[str, Scalar]) -> None:
        for k, v in scalars.items():
            self._tb.add_scalar(k, float(v), int(step))

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        from tensorboardX.summary import hparams as hparams_summary
        # SummaryWriter.add_hparams would open a separate run folder; writing the three summaries into this
        # writer's own file keeps the hyper-parameters next to the scalars they produced.
        values = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flatten(hparams).items()}
        for summary in hparams_summary(values, {}):
            self._tb._get_file_writer().add_summary(summary)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class MultiWriter(MetricWriter):
    """Sends every call to each of `writers`."""

    def __init__(self, writers: Sequence[MetricWriter]):
        self._writers = tuple(writers)

    def write_scalars(self, step: int, scalars: Mapping[str, Scalar]) -> None:
        for w in self._writers:
            w.write_scalars(step, scalars)

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        for w in self._writers:
            w.write_hparams(hparams)

    def flush(self) -> None:
        for w in self._writers:
            w.flush()

    def close(self) -> None:
        for w in self._writers:
            w.close()


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> one level with dotted keys ({"a": {"b": 1}} -> {"a.b": 1}); lists and tuples
    become lists, other non-JSON values their str()."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = [v if isinstance(v, (bool, int, float, str, type(None))) else str(v) for v in value]
        else:
            out[name] = value if isinstance(value, (bool, int, float, str, type(None))) else str(value)
    return out


def create_default_writer(workdir: str | Path, resume_step: int = 0) -> MetricWriter:
    """JSON lines (+ TensorBoard when tensorboardX is installed) on process 0; a no-op writer elsewhere.

    `resume_step`: the step a run resumes from; what was logged after it is dropped (JSON lines) or hidden
    (TensorBoard), so that no step is logged twice.
    """
    if jax.process_index() != 0:
        return NoOpWriter()
    workdir = Path(workdir)
    writers: list[MetricWriter] = [JsonlWriter(workdir / "metrics.jsonl", resume_step)]
    try:
        writers.append(TensorBoardWriter(workdir / "tensorboard", resume_step))
    except ImportError:  # optional: the JSON log still records everything
        log.info("tensorboardX is not installed: metrics go to %s only", workdir / "metrics.jsonl")
    return MultiWriter(writers)
