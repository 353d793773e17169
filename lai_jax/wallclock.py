"""Where a run's wall clock goes: compiles, train steps, evaluation, checkpoint waits, host input.

The host dispatches train steps asynchronously, so their device time shows up where the host next waits for
the devices; the run makes those waits explicit (before an evaluation and a checkpoint it blocks on the
state), so that step time is counted as steps and evaluation time as evaluation. Compile time comes from
JAX's own compile events (tracing, lowering and XLA compilation, wherever they happen) and is taken out of the
phase that triggered it.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

from jax import monitoring

# JAX's duration events of one compile: tracing to a jaxpr, lowering to StableHLO, XLA's compile (or the
# persistent cache's load).
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")

_lock = threading.Lock()
_compile_s = 0.0  # seconds spent compiling in this process (all threads), since the listener was registered
_registered = False


def _on_event(event: str, duration: float, **_) -> None:
    global _compile_s
    if event in COMPILE_EVENTS:
        with _lock:
            _compile_s += duration


def compile_seconds() -> float:
    """Seconds this process has spent compiling since the first `Breakdown` was made."""
    with _lock:
        return _compile_s


def _register() -> None:
    global _registered
    with _lock:
        if not _registered:  # JAX has no way to remove a listener: one for the process
            monitoring.register_event_duration_secs_listener(_on_event)
            _registered = True


class Breakdown:
    """Seconds per part of a run; `time(part)` counts a block's wall clock less the compiles inside it."""

    PARTS = ("compile", "train_steps", "evaluation", "checkpoint_waits", "host_input", "setup")

    def __init__(self):
        _register()
        self.start = time.perf_counter()
        self._compile0 = compile_seconds()
        self.seconds = {part: 0.0 for part in self.PARTS}

    @contextlib.contextmanager
    def time(self, part: str) -> Iterator[None]:
        t0, c0 = time.perf_counter(), compile_seconds()
        try:
            yield
        finally:
            self.seconds[part] += (time.perf_counter() - t0) - (compile_seconds() - c0)

    def rest_is(self, part: str) -> None:
        """Count the time since the start that no part holds yet (compiles aside) as `part` (e.g. "setup")."""
        counted = sum(self.seconds.values()) + compile_seconds() - self._compile0
        self.seconds[part] += time.perf_counter() - self.start - counted

    def report(self) -> dict[str, float]:
        """{part: seconds} with "compile" filled in, "total" and "other" (what no part covers: logging, ...)."""
        total = time.perf_counter() - self.start
        out = dict(self.seconds, compile=compile_seconds() - self._compile0)
        out["other"] = total - sum(out.values())
        out["total"] = total
        return {k: round(v, 2) for k, v in out.items()}
