"""The GPU check: what a few minutes on one GPU should measure, in one call, printed as ONE JSON line.

    bash benchmarks/gpu_check.sh            # on the GPU machine (installs what the image lacks from .whl/)
    python -m benchmarks.gpu_check --smoke  # on a CPU: tiny encoder, tiny shapes, 2 steps (CI runs this)

Parts, in this order (the most wanted first, so a run cut short by `--budget-s` still has them):

1. ``jax``: the NER train step (`benchmarks.step.build_jax`: the real `lai_jax.steps.TrainStep` under a
   `Runner`, compiled ahead of time) at SciERC shapes (T = 608, K = 220; ``--per-device`` real SciERC dev
   instances per device) with ``--encoder`` (default ``random:bert-base``), in four variants: bfloat16 and
   float32, each with attention dropout 0 (cuDNN's fused kernel where it applies: bf16 on a GPU) and 0.1 (XLA's
   attention with dropout on the probabilities). The fields `model.dtype` and `model.attention_dropout` are
   set explicitly, so the variants do not depend on the config defaults. Each reports steps/s, instances/s,
   compile time, XLA's compiled memory (argument + output - alias + temporaries), the device's peak bytes in use
   so far (`Device.memory_stats`; it never resets, and the smallest variant runs first) and MFU: FLOPs per step
   / step time / the chip's dense bf16 peak (`PEAK_FLOPS`, named in the output). The FLOPs are XLA's cost
   analysis of the compiled step; cuDNN's attention is a custom call that the cost analysis counts as 0, so
   for the fused variants its matmul FLOPs (`benchmarks.plan.attention_matmul_flops`) are added and reported.
2. ``torch``: `benchmarks.torch_reference` (transformers' BertModel with sdpa attention, bf16 autocast) on the
   same device, batch and weights; ``ratio`` = lai-jax bf16 fused steps/s over torch steps/s.
3. ``train_and_evaluate``: one short NER run (`lai_jax.train.train_and_evaluate`) on a slice of SciERC read
   with ``data.use_tfds=False``, with the same encoder in bf16 and attention dropout 0: its steps, wall time,
   compile count and dev/test F1 (of a random encoder: only a sign of life).

A part that raises is recorded under ``errors`` and the rest still run; the exit status is 1 if any did.
JAX gets 60 % of the GPU's memory (``XLA_PYTHON_CLIENT_MEM_FRACTION``, unless set), torch the rest.
A watchdog prints what was measured, with ``"timed_out": true``, if the whole check passes ``--budget-s``.
``--out FILE`` also writes the JSON there after every part.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import tempfile
import threading
import time
import traceback
from typing import Any, Callable, Optional, Sequence

from benchmarks import timing

# SciERC's NER shapes come from configs/scierc.py (max_text_len 150 -> T = 608, K = 220).
GPU = dict(encoder="random:bert-base", per_device=16, steps=10, rounds=3, warmup=2, max_text_len=None,
           max_candidates=None, train_limit=64, eval_limit=32, max_steps=0)
SMOKE = dict(encoder="random:tiny", per_device=2, steps=2, rounds=1, warmup=1, max_text_len=16, max_candidates=8,
             train_limit=8, eval_limit=4, max_steps=2)
# (dtype, attention dropout): the fused-attention candidate of bf16 first (the target; also the smallest).
VARIANTS = (("bfloat16", 0.0), ("bfloat16", 0.1), ("float32", 0.0), ("float32", 0.1))
# The smoke check runs each dtype and each attention path once: the other two pairings add compiles, not code.
SMOKE_VARIANTS = (VARIANTS[0], VARIANTS[3])


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny encoder and shapes, 2 steps (a CPU test)")
    p.add_argument("--encoder", default=None, help="encoder spec (default random:bert-base; smoke random:tiny)")
    p.add_argument("--per-device", type=int, default=None, help="instances per device in the step (default 16)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round")
    p.add_argument("--budget-s", type=float, default=270.0, help="print what was measured and stop after this")
    p.add_argument("--parts", default="jax,torch,train", help="comma-separated subset of jax,torch,train")
    p.add_argument("--out", default=None, help="also write the JSON to this file after every part")
    args = p.parse_args(argv)
    defaults = SMOKE if args.smoke else GPU
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.parts = [x for x in args.parts.split(",") if x]
    unknown = set(args.parts) - {"jax", "torch", "train"}
    if unknown:
        p.error(f"--parts: unknown {sorted(unknown)}")
    return args


# ------------------------------------------------------------------------------------------- report
class Report:
    """The JSON record, printed exactly once: at the end, or by the watchdog when the budget runs out."""

    def __init__(self, out: Optional[str]):
        self.data: dict[str, Any] = {"errors": {}}
        self.out = out
        self.t0 = time.perf_counter()
        self._lock = threading.Lock()
        self._printed = False

    def save(self) -> None:
        self.data["wall_s"] = round(time.perf_counter() - self.t0, 1)
        if self.out:
            with open(self.out, "w") as f:
                json.dump(self.data, f)

    def emit(self, **extra: Any) -> bool:
        """Print the record (once); False if it was already printed."""
        with self._lock:
            if self._printed:
                return False
            self.data.update(extra)
            self.save()
            print(json.dumps(self.data), flush=True)
            self._printed = True
            return True

    def part(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run one part; an exception is recorded under errors[name] (and on stderr) instead of stopping."""
        try:
            return fn()
        except Exception as e:  # a GPU check keeps going: each part is worth having alone
            traceback.print_exc(file=sys.stderr)
            self.data["errors"][name] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}"
            return None
        finally:
            self.save()


def start_watchdog(report: Report, budget_s: float) -> None:
    """After `budget_s`, print what was measured (timed_out) and end the process: the check never overruns."""
    def fire() -> None:
        if report.emit(timed_out=True):
            os._exit(3)

    timer = threading.Timer(budget_s, fire)
    timer.daemon = True
    timer.start()


# ---------------------------------------------------------------------------------------- measuring
def throughput(run: Callable[[int], None], steps: int, rounds: int, warmup: int) -> float:
    """Steps/s: the median over `rounds` of `steps` steps dispatched back to back, after `warmup` steps."""
    run(warmup)
    times = timing.time_steps(lambda: run(steps), rounds)
    return round(steps / sorted(times)[len(times) // 2], 4)


def device_peak_mb(device) -> Optional[float]:
    """Highest bytes in use on `device` so far (None where the backend does not say, e.g. the CPU)."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return timing.mb(stats.get("peak_bytes_in_use")) if stats else None


def peak_flops(device) -> tuple[Optional[float], str]:
    """(dense bf16 FLOP/s, its name) of the chip from `device_kind`; (None, why) when unknown."""
    from benchmarks.step import peak_flops as table_peak

    peak = table_peak(device.device_kind, "bfloat16") if device.platform == "gpu" else None
    if peak is None:
        return None, f"no bf16 peak known for {device.platform}:{device.device_kind} (MFU not computed)"
    return peak, f"{device.device_kind} dense bf16, {peak / 1e12:g} TFLOP/s"


def variant_name(dtype: str, attention_dropout: float) -> str:
    return f"{dtype}/attention_dropout={attention_dropout:g}"


def jax_variant(args, dtype: str, attention_dropout: float, host_batch: dict, device, peak: Optional[float],
                keep: dict) -> dict[str, Any]:
    """One variant of the train step: build, compile, time; `keep["host_params"]` gets the initial params."""
    from benchmarks.plan import attention_matmul_flops
    from benchmarks.step import build_jax
    from benchmarks.workload import make_setup
    from lai_jax.encoder import attention_implementation, backend_platform

    _, setup = make_setup(args.encoder, args.max_text_len, args.max_candidates, dtype=dtype,
                          overrides=(f"model.attention_dropout={attention_dropout}",))
    bert = setup.model.bert
    b, t = host_batch["input_ids"].shape
    impl, why = attention_implementation(backend_platform(), bert.dtype, bert.attention_probs_dropout_prob,
                                         bert.head_dim, t)
    rss = timing.RssSampler()
    try:
        side = build_jax(setup, host_batch, rss)
    finally:
        rss.close()
    keep.setdefault("host_params", side.host_params)
    steps_per_s = throughput(side.run, args.steps, args.rounds, args.warmup)
    mem = timing.memory_stats(side.compiled)
    xla_flops = timing.compiled_flops(side.compiled, side.update)
    added = attention_matmul_flops(bert, b, t, train=True) if impl == "cudnn" else 0.0
    flops = None if xla_flops is None else xla_flops + added
    out = {
        "dtype": dtype, "attention_dropout": attention_dropout, "attention": impl, "why_not_fused": why or None,
        "compile_s": side.compile_s, "steps_per_s": steps_per_s, "instances_per_s": round(steps_per_s * b, 2),
        "step_ms": round(1000 / steps_per_s, 2),
        "compiled_peak_mb": None if mem["temp"] is None else
        timing.mb(mem["argument"] + mem["output"] - mem["alias"] + mem["temp"]),
        "device_peak_mb_so_far": device_peak_mb(device),
        "xla_gflop_per_step": None if xla_flops is None else round(xla_flops / 1e9, 1),
        "attention_gflop_added": round(added / 1e9, 1),
        "tflop_per_s": None if flops is None else round(flops * steps_per_s / 1e12, 2),
        "mfu": None if flops is None or peak is None else round(flops * steps_per_s / peak, 4),
    }
    del side
    gc.collect()
    return out


def torch_part(args, host_batch: dict, host_params, device) -> dict[str, Any]:
    """The torch reference (sdpa, bf16 autocast) on the same device, batch and initial weights."""
    import torch

    from benchmarks.step import build_torch
    from benchmarks.workload import make_setup

    _, setup = make_setup(args.encoder, args.max_text_len, args.max_candidates, dtype="float32",
                          overrides=("model.attention_dropout=0",))
    cuda = device.platform == "gpu" and torch.cuda.is_available()
    if device.platform == "gpu" and not cuda:
        raise RuntimeError(f"torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False)")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    side = build_torch(setup.config, setup, host_params, host_batch, timing.pin_threads(None), "sdpa",
                       device="cuda" if cuda else None, autocast="bfloat16")
    steps_per_s = throughput(side.run, args.steps, args.rounds, args.warmup)
    b = host_batch["input_ids"].shape[0]
    out = {"attention": "sdpa", "autocast": "bfloat16", "device": "cuda" if cuda else "cpu",
           "steps_per_s": steps_per_s, "instances_per_s": round(steps_per_s * b, 2),
           "step_ms": round(1000 / steps_per_s, 2),
           "device_peak_mb": timing.mb(torch.cuda.max_memory_allocated()) if cuda else None}
    del side
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return out


def train_part(args, devices: int) -> dict[str, Any]:
    """One short NER train_and_evaluate on a SciERC slice (plain readers), bf16 with attention dropout 0."""
    from benchmarks.workload import load_config
    from lai_jax import evaluation
    from lai_jax.config_base import set_fields
    from lai_jax.train import train_and_evaluate

    config = load_config("scierc", "ner")
    fields = {"encoder": args.encoder, "data.use_tfds": False, "data.train_limit": args.train_limit,
              "data.eval_limit": args.eval_limit, "model.dtype": "bfloat16", "model.attention_dropout": 0.0,
              "batch_size": args.per_device * devices, "num_epochs": 1, "num_buckets": 1,
              "max_steps": args.max_steps, "log_every_steps": 1}
    if args.max_text_len:
        fields["max_text_len"] = args.max_text_len
    if args.max_candidates:
        fields["max_candidates"] = args.max_candidates
    set_fields(config, **fields)
    with tempfile.TemporaryDirectory(prefix="lai_jax_gpu_check_") as workdir:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # its score tables: stdout carries only the JSON line
            results = train_and_evaluate(config, workdir)
        wall = time.perf_counter() - t0
    out = {"wall_s": round(wall, 1), "fields": fields,
           **{k: v for k, v in results.items() if k not in ("dev", "test")}}
    for split in ("dev", "test"):
        out[f"{split}_f1"] = round(evaluation.selection_f1(config, results[split]), 4)
    return out


# ----------------------------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = _parse(argv)
    report = Report(args.out)
    start_watchdog(report, args.budget_s)
    # JAX takes 75 % of a GPU's memory up front by default; torch shares the device here.
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.6")
    import jax

    from benchmarks.workload import load_batch, make_setup

    device = jax.devices()[0]
    devices = jax.local_device_count()
    peak, peak_name = peak_flops(device)
    report.data.update({
        "check": "smoke" if args.smoke else "gpu", "device": f"{device.platform}:{device.device_kind}",
        "devices": devices, "jax": jax.__version__, "encoder": args.encoder, "per_device_batch": args.per_device,
        "steps": args.steps, "rounds": args.rounds, "peak_flops": peak, "peak": peak_name,
        "jax_steps": {}, "torch": None, "ratio": None, "train_and_evaluate": None, "timed_out": False,
    })
    config, setup = make_setup(args.encoder, args.max_text_len, args.max_candidates)
    host_batch, _ = load_batch(config, setup, args.per_device * devices)
    report.data.update(T=int(host_batch["input_ids"].shape[1]), K=int(host_batch["cand_mask"].shape[1]),
                       batch=int(host_batch["input_ids"].shape[0]))
    del setup
    keep: dict[str, Any] = {}
    variants = SMOKE_VARIANTS if args.smoke else VARIANTS
    variants = variants if "jax" in args.parts else variants[:1]  # torch needs the first one's weights
    for i, (dtype, rate) in enumerate(variants):
        name = variant_name(dtype, rate)
        result = report.part(f"jax {name}", lambda: jax_variant(args, dtype, rate, host_batch, device, peak, keep))
        if result is not None:
            report.data["jax_steps"][name] = result
        if i == 0:  # torch and the short run come right after the target variant: a cut-short run still has them
            if "torch" in args.parts and "host_params" in keep:
                report.data["torch"] = report.part("torch", lambda: torch_part(args, host_batch, keep["host_params"],
                                                                               device))
                fused = report.data["jax_steps"].get(name)
                if report.data["torch"] and fused:
                    report.data["ratio"] = round(fused["steps_per_s"] / report.data["torch"]["steps_per_s"], 3)
            keep.pop("host_params", None)
            if "train" in args.parts:
                report.data["train_and_evaluate"] = report.part("train_and_evaluate",
                                                                lambda: train_part(args, devices))
    report.emit()
    if report.data["errors"]:
        sys.exit(1)
    return report.data


if __name__ == "__main__":
    main()
