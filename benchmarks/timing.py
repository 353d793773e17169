"""Timing and memory helpers shared by the benchmarks: thread pinning, malloc settings, RSS sampling, step timing,
medians, and what XLA reports about a compiled executable.

Everything here is framework-neutral (callers block on their own work) and imports JAX nowhere, so
`pin_threads` and `tune_malloc` can run before JAX or torch start.
"""
from __future__ import annotations

import os
import resource
import statistics
import sys
import threading
import time
from typing import Any, Callable, Optional, Sequence

# glibc malloc settings that stop the per-step page faults (see `tune_malloc`).
MALLOC_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)}


# ------------------------------------------------------------------------------------------ process
def pin_threads(n: Optional[int]) -> int:
    """Pin the process to its first `n` schedulable cores (call before JAX/torch start); returns the count.

    XLA's CPU client sizes its intra-op pool from the schedulable cores (the affinity mask) and has no
    thread-count option, so the affinity is the knob; torch then gets `torch.set_num_threads` of the result.
    """
    if n:
        cores = sorted(os.sched_getaffinity(0))
        if n > len(cores):
            raise ValueError(f"--threads {n}: only {len(cores)} schedulable cores")
        os.sched_setaffinity(0, set(cores[:n]))
    return len(os.sched_getaffinity(0))


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so the next RSS baseline is honest."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def tune_malloc(reexec: bool = True) -> bool:
    """Re-executes this process (same command line) with `MALLOC_ENV` unless it already has it.

    XLA:CPU allocates each execution's temporaries (activations: ~2.7 GB for the SciERC batch-4 step)
    with posix_memalign on its worker threads; glibc serves requests that large from a thread arena by a
    fresh mmap and munmaps them on free, so every step page-faults its whole working set in again
    (~0.9M faults, 2.5-3.5 s of system time per batch-4 step here); torch's large tensors likewise. One
    arena + no mmap + no trimming keeps freed memory in the heap for the next step. glibc reads these at
    start-up (mallopt at run time cannot raise the trim threshold past 2 GB), hence the re-exec. Returns
    True when the settings are in effect; without `reexec` (called as a library, where replacing the
    process would be a surprise) it only reports whether they are.
    """
    if all(os.environ.get(k) == v for k, v in MALLOC_ENV.items()):
        return True
    argv = getattr(sys, "orig_argv", None)
    if not reexec or not argv:
        return False
    os.execve(sys.executable, [sys.executable] + argv[1:], {**os.environ, **MALLOC_ENV})
    return False  # not reached


def append_xla_flags(flags: str) -> None:
    """Add `flags` to XLA_FLAGS (only effective before JAX starts its backend)."""
    if flags:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()


class RssSampler:
    """Background thread recording the highest RSS seen while each named phase is active."""

    def __init__(self, interval_s: float = 0.005, trim: bool = True):
        self.interval_s = interval_s
        self.trim = trim  # off when the heap is meant to keep freed memory (--tune-malloc)
        self.phase: Optional[str] = None
        self.base: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.phase is not None:
                self.peak[self.phase] = max(self.peak.get(self.phase, 0), rss_bytes())

    def start(self, phase: str) -> None:
        """Take `phase`'s baseline (after a trim) and start sampling it."""
        if self.trim:
            malloc_trim()
        self.base[phase] = rss_bytes()
        self.peak.setdefault(phase, self.base[phase])
        self.phase = phase

    def resume(self, phase: str, trim: bool = False) -> None:
        if trim and self.trim:
            malloc_trim()
        self.peak[phase] = max(self.peak[phase], rss_bytes())
        self.phase = phase

    def pause(self) -> None:
        if self.phase is not None:
            self.peak[self.phase] = max(self.peak[self.phase], rss_bytes())
        self.phase = None

    def delta_mb(self, phase: str, minus: int = 0) -> Optional[float]:
        """Peak minus baseline (minus `minus` bytes) of `phase`, in MiB; None if it never started."""
        if phase not in self.base:
            return None
        return round((self.peak[phase] - self.base[phase] - minus) / 2**20, 1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------------------- timing
def time_steps(step: Callable[[], Any], n: int, usage: Optional[dict] = None) -> list[float]:
    """Wall time of each of `n` calls of `step` (which must block until its work is done).

    If `usage` is a dict, per-call process CPU seconds (user + system, all threads: on a shared machine it
    tracks the work done better than wall time), system seconds and minor page faults are appended to its
    lists "cpu", "sys" and "faults".
    """
    out = []
    for _ in range(n):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        step()
        out.append(time.perf_counter() - t0)
        if usage is not None:
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            usage.setdefault("cpu", []).append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
            usage.setdefault("sys", []).append(r1.ru_stime - r0.ru_stime)
            usage.setdefault("faults", []).append(r1.ru_minflt - r0.ru_minflt)
    return out


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(fn(), wall seconds, process CPU seconds) of one call."""
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return out, wall, r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime


def median_ms(step: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median milliseconds of `repeats` calls of the blocking `step`, after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    return round(statistics.median(time_steps(step, repeats)) * 1e3, 3)


def per_s(times: Sequence[float]) -> float:
    """Calls per second at the median time."""
    return round(1.0 / statistics.median(times), 4)


def usage_summary(prefix: str, usage: dict) -> dict[str, Any]:
    """Medians of a `time_steps` usage dict as `<prefix>_cpu_s_per_step`, `_sys_s_per_step`, `_page_faults_per_step`."""
    if not usage:
        return {}
    return {f"{prefix}_cpu_s_per_step": round(statistics.median(usage["cpu"]), 3),
            f"{prefix}_sys_s_per_step": round(statistics.median(usage["sys"]), 3),
            f"{prefix}_page_faults_per_step": int(statistics.median(usage["faults"]))}


# ------------------------------------------------------------------------------ compiled executables
def _first(x: Any) -> Any:
    return x[0] if isinstance(x, (list, tuple)) else x


def memory_stats(compiled: Any) -> dict[str, Optional[int]]:
    """Byte sizes XLA reports for a compiled executable: argument, output, alias, temp (None if unavailable)."""
    try:
        m = _first(compiled.memory_analysis())
    except Exception:  # backend-dependent
        m = None
    if m is None:
        return {"argument": None, "output": None, "alias": None, "temp": None}
    return {"argument": int(m.argument_size_in_bytes), "output": int(m.output_size_in_bytes),
            "alias": int(m.alias_size_in_bytes), "temp": int(m.temp_size_in_bytes)}


def compiled_flops(*compiled: Any) -> Optional[float]:
    """FLOPs of one run of each compiled executable, summed, from XLA's cost analysis (None if unavailable);
    None arguments are skipped (a train step's update when it is compiled with its gradient)."""
    total = 0.0
    for executable in (c for c in compiled if c is not None):
        try:
            cost = _first(executable.cost_analysis())
        except Exception:
            return None
        if not cost or "flops" not in cost:
            return None
        total += float(cost["flops"])
    return total


def mb(n: Optional[int]) -> Optional[float]:
    """Bytes -> MiB (one decimal), None stays None."""
    return None if n is None else round(n / 2**20, 1)
