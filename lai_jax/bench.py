"""NER train-step speed of lai-jax vs a PyTorch port of the same model, on real SciERC instances.

    python -m lai_jax.bench [--encoder default] [--batch 4] [--steps 5] [--threads N] [--smoke]

One process, both frameworks, same weights, same batch:

* shapes: ``configs/scierc.py:ner`` (T = ``Featurizer.seq_len("ner")`` = 608 with the packaged
  encoder's vocabulary, K = 220); the batch is ``--batch`` real SciERC dev instances (a seeded draw),
  so the fractions of real tokens and filled candidate slots are the data's own;
* JAX: the real ``lai_jax.steps.train_step`` (forward in train mode, ``ner_loss``, backward, global-norm
  clipping, AdamW through ``optax.multi_transform``) run by ``lai_jax.parallel.Runner`` on one device.
  The runner's step is compiled ahead of time (``lower().compile()``, timed as ``compile_s``) and that
  executable is what the runner then dispatches, so the memory/FLOP analysis is of what was timed;
* torch: ``lai_jax.torch_reference`` (``transformers.BertModel`` with its default ``sdpa`` attention, or
  ``--torch-attn eager``, + the head port) with the lai-jax parameters copied in and the JAX side's dropout
  probabilities, ``torch.optim.AdamW`` with the same groups, clipping and schedule; train mode (dropout)
  on both sides. lai-jax draws its dropout masks from 8-bit uniforms (``model.dropout_bits``, see
  ``lai_jax.dropout``), torch from its own generator: same rates, different random streams;
* encoder only: forward + backward (loss = sum of the last hidden states, gradients for all encoder
  parameters, train mode) of ``BertEncoder`` and of the ``BertModel`` on the same batch and mask.

Threads: ``--threads N`` pins the process to N cores *before* JAX starts; XLA's CPU client sizes its
intra-op pool from the schedulable cores (the affinity mask) and has no thread-count option, so the
affinity is the knob. torch gets ``torch.set_num_threads(N)`` on the same cores. Default: all
schedulable cores. Times are medians over ``--steps`` steps after ``--warmup`` untimed steps, in blocks that
alternate between the frameworks ``--rounds`` times (so slow drift of a shared machine hits both).
``*_cpu_s_per_step`` is the process CPU time (user + system, all threads) per step: on a shared
machine it tracks the work done better than wall time (with several threads it includes spin-waiting).

Memory: ``jax_compiled_*`` from the executable's ``memory_analysis()`` (arguments = state + batch,
temporaries = activations and scratch, so argument + output - alias + temp bounds the live device
bytes); ``*_rss_delta_mb``: highest resident set size while that framework holds its model/optimiser
state and runs its warm-up and timed steps, minus the RSS just before it built that state, sampled
every 5 ms from /proc/self/statm. ``malloc_trim`` runs before the baseline and after each XLA compile
(compiles are not sampled), so memory freed by the other framework or by the compiler is not counted
or silently reused; the JAX figure excludes the host copy of the params made for torch. With
``--tune-malloc`` (see `tune_malloc`: glibc keeps freed memory, one heap for everything) they are null.

Prints ONE JSON line. ``--smoke``: batch 1, C=16, K=8, the encoder's first layer only, 1 step (for tests).
``--breakdown`` adds per-piece times (JAX and torch: forward, forward+backward, optimiser; JAX:
G4CN alone) under "breakdown".
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import re
import resource
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
SMOKE = dict(batch=1, max_text_len=16, max_candidates=8, layers=1, steps=1)

# Dense peak FLOP/s per device kind (substring of jax's device_kind) for MFU: (bf16, fp32 matmul).
# fp32 matmuls on these GPUs run as TF32 under JAX's default precision, so the TF32 peak is used.
PEAK_FLOPS = {
    "H200": (989e12, 494e12),
    "H100": (989e12, 494e12),
    "A100": (312e12, 156e12),
    "L4": (121e12, 60e12),
    "V100": (125e12, 15.7e12),
}


# ------------------------------------------------------------------------------------------ process
def pin_threads(n: Optional[int]) -> int:
    """Pin the process to its first `n` schedulable cores (call before JAX/torch start); returns the count."""
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


# glibc malloc settings that stop the per-step page faults (see `tune_malloc`).
MALLOC_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)}


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
    import sys

    argv = getattr(sys, "orig_argv", None)
    if not reexec or not argv:
        return False
    os.execve(sys.executable, [sys.executable] + argv[1:], {**os.environ, **MALLOC_ENV})
    return False  # not reached


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
        if phase not in self.base:
            return None
        return round((self.peak[phase] - self.base[phase] - minus) / 2**20, 1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


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


# --------------------------------------------------------------------------------------------- data
def load_config(dataset: str = "scierc", phase: str = "ner"):
    """`configs/<dataset>.py:<phase>` of this repository."""
    path = REPO / "configs" / f"{dataset}.py"
    spec = importlib.util.spec_from_file_location(f"lai_jax_bench_config_{dataset}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(phase)


def make_setup(encoder: str = "default", max_text_len: Optional[int] = None, max_candidates: Optional[int] = None,
               layers: Optional[int] = None, dtype: str = "float32", dataset: str = "scierc", remat: bool = False,
               overrides: Sequence[str] = ()):
    """(config, `lai_jax.train.Setup`) for the NER phase, optionally with only the first `layers` encoder layers.

    `overrides`: "field=value" strings (dotted config fields; the value is parsed as the default's type).
    """
    from lai_jax.config_base import parse_assignment, set_fields
    from lai_jax import train
    from lai_jax.models import LAINet

    config = load_config(dataset, "ner")
    config.encoder = encoder
    config.data.use_tfds = False  # the plain readers read the same bundled files, without tfds preparation
    config.model.dtype = dtype
    config.model.remat = remat
    if max_text_len:
        config.max_text_len = max_text_len
    if max_candidates:
        config.max_candidates = max_candidates
    for item in overrides:
        try:
            key, value = parse_assignment(config, item)
        except ValueError as e:
            raise SystemExit(f"--set {e}") from None
        set_fields(config, **{key: value})
    setup = train.build(config)
    if layers and layers < setup.model.bert.num_hidden_layers:
        bert = dataclasses.replace(setup.model.bert, num_hidden_layers=layers)
        keep = {"embeddings"} | {f"layer_{i}" for i in range(layers)}
        setup = dataclasses.replace(setup, model=LAINet(bert, setup.head),
                                    encoder_params={k: v for k, v in setup.encoder_params.items() if k in keep})
    return config, setup


def load_batch(config, setup, batch: int, split: str = "dev", seed: int = 0):
    """A batch of `batch` real instances of `split` (a seeded draw without replacement) and all instances."""
    import numpy as np

    from lai_jax import train
    from lai_jax.data import features

    docs = train.load_docs(config, split, setup.labels)
    instances = train.instances_for(setup, docs)
    order = np.random.default_rng(seed).permutation(len(instances))
    chosen = [instances[i] for i in sorted(order[:batch])]
    return features.stack(chosen, batch), instances


def fractions(batch: dict) -> tuple[float, float]:
    """(non-PAD tokens / all tokens, filled candidate slots / all slots) of a stacked batch."""
    import numpy as np

    from lai_jax.data import masks

    return (float(np.mean(batch["token_groups"] != masks.PAD)), float(np.mean(batch["cand_mask"])))


# ---------------------------------------------------------------------------------------- analysis
def _first(x: Any) -> Any:
    return x[0] if isinstance(x, (list, tuple)) else x


def memory_stats(compiled: Any) -> dict[str, Optional[int]]:
    try:
        m = _first(compiled.memory_analysis())
    except Exception:  # backend-dependent
        m = None
    if m is None:
        return {"argument": None, "output": None, "alias": None, "temp": None}
    return {"argument": int(m.argument_size_in_bytes), "output": int(m.output_size_in_bytes),
            "alias": int(m.alias_size_in_bytes), "temp": int(m.temp_size_in_bytes)}


def compiled_flops(compiled: Any) -> Optional[float]:
    try:
        cost = _first(compiled.cost_analysis())
        return float(cost["flops"]) if cost and "flops" in cost else None
    except Exception:
        return None


def peak_flops(device_kind: str, dtype: str) -> Optional[float]:
    for name, (bf16, fp32) in PEAK_FLOPS.items():
        if name.lower() in device_kind.lower():
            return bf16 if dtype == "bfloat16" else fp32
    return None


def _mb(n: Optional[int]) -> Optional[float]:
    return None if n is None else round(n / 2**20, 1)


def _per_s(times: list[float]) -> float:
    return round(1.0 / statistics.median(times), 4)


# ---------------------------------------------------------------------------------------------- main
def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="default", help="HF directory or Hub name (default: packaged MiniLM-L6)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=5, help="timed steps per framework and round")
    p.add_argument("--rounds", type=int, default=1, help="alternating JAX/torch timing blocks")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps per framework first (default 1; 2 with --tune-malloc, whose heap grows for two)")
    p.add_argument("--threads", type=int, default=None, help="cores for both frameworks (default: all schedulable)")
    p.add_argument("--layers", type=int, default=None, help="use only the first N encoder layers")
    p.add_argument("--max-text-len", type=int, default=None, help="override C (default: the SciERC config's)")
    p.add_argument("--max-candidates", type=int, default=None, help="override K (default: the SciERC config's)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="JAX compute dtype")
    p.add_argument("--remat", action="store_true", help="JAX per-layer rematerialisation (config.model.remat)")
    p.add_argument("--tune-malloc", action="store_true",
                   help="glibc mallopt: one arena, no mmap, no trim (stops per-step page faults; both frameworks)")
    p.add_argument("--xla-flags", default="", help="appended to XLA_FLAGS before JAX starts")
    p.add_argument("--prng-impl", default=None, choices=("threefry2x32", "rbg", "unsafe_rbg"),
                   help="jax_default_prng_impl (the dropout-mask generator); default: JAX's (threefry2x32)")
    p.add_argument("--jax-config", action="append", default=[], metavar="KEY=VALUE",
                   help="jax.config.update(KEY, VALUE) before anything runs (repeatable; true/false are booleans)")
    p.add_argument("--torch-attn", default="sdpa", choices=("sdpa", "eager"),
                   help="BertModel attention implementation (sdpa: transformers' default)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="config field for the model (repeatable), e.g. model.dropout_bits=32, model.attention_dropout=0")
    p.add_argument("--no-torch", action="store_true", help="JAX only (e.g. on an accelerator)")
    p.add_argument("--no-encoder", action="store_true", help="skip the encoder-only comparison")
    p.add_argument("--breakdown", action="store_true", help="also time the pieces of each step")
    p.add_argument("--profile", action="store_true",
                   help="trace --steps JAX train steps with jax.profiler and attribute XLA op time to model parts")
    p.add_argument("--seed", type=int, default=0, help="which dev instances form the batch")
    p.add_argument("--smoke", action="store_true", help="tiny shapes and one step (for tests)")
    args = p.parse_args(argv)
    if args.warmup is None:
        args.warmup = 2 if args.tune_malloc else 1
    if args.smoke:
        args.batch, args.steps = SMOKE["batch"], SMOKE["steps"]
        args.max_text_len = args.max_text_len or SMOKE["max_text_len"]
        args.max_candidates = args.max_candidates or SMOKE["max_candidates"]
        args.layers = args.layers or SMOKE["layers"]
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = _parse(argv)
    threads = pin_threads(args.threads)
    malloc_tuned = tune_malloc(reexec=argv is None) if args.tune_malloc else False
    if args.xla_flags:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()

    import jax
    import numpy as np

    if args.prng_impl:
        jax.config.update("jax_default_prng_impl", args.prng_impl)
    for item in args.jax_config:
        key, _, value = item.partition("=")
        jax.config.update(key, {"true": True, "false": False}.get(value.lower(), value))
    from lai_jax import pretrained as encoder_lib  # also re-exports encoder.BertEncoder
    from lai_jax import torch_reference as tr
    from lai_jax import train
    from lai_jax.data import masks
    from lai_jax.parallel import Runner
    from lai_jax.steps import bind_steps

    rss = RssSampler(trim=not malloc_tuned)
    config, setup = make_setup(args.encoder, args.max_text_len, args.max_candidates, args.layers, args.dtype,
                               remat=args.remat, overrides=args.set)
    host_batch, dev_instances = load_batch(config, setup, args.batch, seed=args.seed)
    T, K = host_batch["input_ids"].shape[1], host_batch["cand_mask"].shape[1]
    tok_frac, cand_frac = fractions(host_batch)
    device = jax.devices()[0]
    use_gold = True  # SciERC's first 40 epochs (cold start); the other branch costs the same
    total_steps = 1000  # only shapes the learning-rate schedule
    result: dict[str, Any] = {
        "jax_steps_per_s": None, "torch_steps_per_s": None, "ratio": None,
        "encoder_jax_steps_per_s": None, "encoder_torch_steps_per_s": None, "encoder_ratio": None,
        "compile_s": None, "jax_cpu_s_per_step": None, "torch_cpu_s_per_step": None,
        "jax_sys_s_per_step": None, "torch_sys_s_per_step": None,
        "jax_page_faults_per_step": None, "torch_page_faults_per_step": None,
        "batch": args.batch, "T": T, "K": K, "steps": args.steps, "rounds": args.rounds, "threads": threads,
        "device": f"{device.platform}:{device.device_kind}", "jax_dtype": args.dtype, "remat": args.remat,
        "malloc_tuned": malloc_tuned,
        "prng_impl": jax.config.jax_default_prng_impl, "jax_config": args.jax_config, "torch_dtype": "float32",
        "layers": setup.model.bert.num_hidden_layers, "hidden": setup.model.bert.hidden_size,
        "real_token_fraction": round(tok_frac, 4), "real_candidate_fraction": round(cand_frac, 4),
    }

    # ------------------------------------------------------------------ JAX: the real train step
    # RSS is sampled while the state exists and steps run, not while XLA compiles (init_state compiles
    # `init`); the host copy of the params (for torch) is subtracted.
    rss.start("jax")
    rss.pause()
    runner = Runner("pmap", *bind_steps(setup.model, "ner"))
    state = train.init_state(setup, host_batch, total_steps)
    host_params = jax.tree.map(np.array, state.params)  # a copy (state buffers get donated): what torch gets
    host_copy_bytes = sum(x.nbytes for x in jax.tree.leaves(host_params))
    state = runner.put_state(state)
    rss.resume("jax", trim=True)
    rss.pause()
    flag = np.broadcast_to(np.asarray(use_gold), (runner.n,))
    t0 = time.perf_counter()
    compiled = runner._train.lower(state, runner.shard_batch(host_batch), flag).compile()
    result["compile_s"] = round(time.perf_counter() - t0, 2)
    runner._train = compiled  # Runner.train now dispatches exactly this executable (no second compile)
    holder = {"state": state}
    rss.resume("jax", trim=True)

    def jax_step() -> None:
        holder["state"], m = runner.train(holder["state"], host_batch, use_gold)
        jax.block_until_ready((holder["state"], m))

    for _ in range(args.warmup):
        jax_step()
    rss.pause()
    mem = memory_stats(compiled)
    flops = compiled_flops(compiled)

    # ---------------------------------------------------------------------- torch: the reference
    tmodel = opt = sched = tb = None
    if not args.no_torch:
        import torch

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        rss.start("torch")
        path = encoder_lib.resolve_encoder_path(config.encoder)
        bert = setup.model.bert
        tmodel = tr.TorchLAINet.from_pretrained(path, setup.head, num_hidden_layers=args.layers,
                                                attn_implementation=args.torch_attn,
                                                hidden_dropout_prob=bert.hidden_dropout_prob,
                                                attention_probs_dropout_prob=bert.attention_probs_dropout_prob)
        tr.copy_flax_params(tmodel, host_params)
        tmodel.train()
        opt, sched = tr.make_optimizer(tmodel, config.optim, total_steps)
        tb = tr.to_torch(host_batch)

        def torch_step() -> None:
            tr.train_step(tmodel, opt, sched, tb, use_gold, config.optim.grad_clip)

        for _ in range(args.warmup):
            torch_step()
        rss.pause()

    jax_times: list[float] = []
    torch_times: list[float] = []
    usage: dict[str, dict] = {"jax": {}, "torch": {}}
    for _ in range(args.rounds):
        rss.resume("jax")
        jax_times += time_steps(jax_step, args.steps, usage["jax"])
        rss.pause()
        if tmodel is not None:
            rss.resume("torch")
            torch_times += time_steps(torch_step, args.steps, usage["torch"])
            rss.pause()
    for name, u in usage.items():
        if u:
            result[f"{name}_cpu_s_per_step"] = round(statistics.median(u["cpu"]), 3)
            result[f"{name}_sys_s_per_step"] = round(statistics.median(u["sys"]), 3)
            result[f"{name}_page_faults_per_step"] = int(statistics.median(u["faults"]))
    jax_s = statistics.median(jax_times)
    result["jax_steps_per_s"] = _per_s(jax_times)
    if torch_times:
        result["torch_steps_per_s"] = _per_s(torch_times)
        result["ratio"] = round(statistics.median(torch_times) / jax_s, 3)  # jax/torch in steps/s; >1: JAX faster

    # ---------------------------------------------------------------------- encoder fwd + bwd
    enc_params = host_params["encoder"]
    if not args.no_encoder:
        enc_model = encoder_lib.BertEncoder(setup.model.bert)
        bool_mask = masks.attention_mask(host_batch["token_groups"].astype(np.int32), host_batch["marker_partner"],
                                         np.asarray(setup.head.visibility, bool), setup.head.partner_only)
        enc_in = jax.device_put((host_batch["input_ids"], host_batch["position_ids"], host_batch["token_type_ids"],
                                 bool_mask))
        p_dev = jax.device_put(enc_params)

        def enc_loss(p, rng, b):
            out = enc_model.apply({"params": p}, *b, deterministic=False, rngs={"dropout": rng})
            return out.astype(np.float32).sum()

        enc_fn = jax.jit(jax.value_and_grad(enc_loss)).lower(p_dev, jax.random.PRNGKey(0), enc_in).compile()
        keys = iter(jax.random.split(jax.random.PRNGKey(1), 1 + args.steps * args.rounds))

        def jax_enc() -> None:
            jax.block_until_ready(enc_fn(p_dev, next(keys), enc_in))

        jax_enc()
        enc_j: list[float] = []
        enc_t: list[float] = []
        if tmodel is not None:
            import torch

            amask = tr.additive_mask(tb["token_groups"], tb["marker_partner"], setup.head.visibility,
                                     setup.head.partner_only)

            def torch_enc() -> None:
                tmodel.zero_grad(set_to_none=True)
                tmodel.bert(input_ids=tb["input_ids"], attention_mask=amask, token_type_ids=tb["token_type_ids"],
                            position_ids=tb["position_ids"]).last_hidden_state.sum().backward()

            torch_enc()
        for _ in range(args.rounds):
            enc_j += time_steps(jax_enc, args.steps)
            if tmodel is not None:
                enc_t += time_steps(torch_enc, args.steps)
        result["encoder_jax_steps_per_s"] = _per_s(enc_j)
        if enc_t:
            result["encoder_torch_steps_per_s"] = _per_s(enc_t)
            result["encoder_ratio"] = round(statistics.median(enc_t) / statistics.median(enc_j), 3)
        result["encoder_share_of_jax_step"] = round(statistics.median(enc_j) / jax_s, 3)

    # --------------------------------------------------------------------------------- memory, FLOPs
    result.update({
        "jax_compiled_argument_mb": _mb(mem["argument"]), "jax_compiled_temp_mb": _mb(mem["temp"]),
        "jax_compiled_peak_mb": None if mem["temp"] is None else
        _mb(mem["argument"] + mem["output"] - mem["alias"] + mem["temp"]),
        # With --tune-malloc the heap never shrinks and both frameworks share it: per-framework RSS deltas are moot.
        "jax_rss_delta_mb": None if malloc_tuned else rss.delta_mb("jax", minus=host_copy_bytes),
        "torch_rss_delta_mb": None if malloc_tuned else rss.delta_mb("torch"),
        "jax_step_gflop": None if flops is None else round(flops / 1e9, 2),
        "jax_achieved_gflop_per_s": None if flops is None else round(flops / jax_s / 1e9, 2),
        "mfu": None,
    })
    peak = peak_flops(device.device_kind, args.dtype) if device.platform == "gpu" else None
    if flops is not None and peak:
        result["mfu"] = round(flops / jax_s / peak, 4)
    rss.close()

    if args.breakdown:
        result["breakdown"] = breakdown(setup, host_batch, host_params, tmodel, opt, tb, use_gold, config, args.steps,
                                        total_steps)
    if args.profile:
        result["profile"] = profile_step(jax_step, compiled, args.steps)
    result["dev_real_token_fraction"] = round(fractions(_stack_all(dev_instances))[0], 4)
    result["dev_real_candidate_fraction"] = round(fractions(_stack_all(dev_instances))[1], 4)
    print(json.dumps(result), flush=True)
    return result


def _stack_all(instances) -> dict:
    import numpy as np

    return {k: np.stack([i.arrays[k] for i in instances]) for k in ("token_groups", "cand_mask")}


# -------------------------------------------------------------------------------------------- profile
_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.*)$")
_HEADS = ("span_proj", "anno_proj", "classifier", "filter")
_ATTN = re.compile(r"encoder/layer_\d+/(btnh,bsnh->bnts|bnts,bsnh->btnh|reduce_max|reduce_sum|exp|sub|neg|div)")


def hlo_op_names(hlo_text: str) -> dict[str, str]:
    """Optimised-HLO instruction name -> its JAX op_name (name stack), or a tag "<dot>", "<broadcast>",
    "<copy>" or "<other>" for instructions XLA created without metadata (judged from the fused body)."""
    bodies: dict[str, list[str]] = {}
    current: Optional[list[str]] = None
    instrs: list[tuple[str, str]] = []
    for line in hlo_text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):
            current = bodies.setdefault(line.split()[0].lstrip("%"), [])
            continue
        m = _INSTR.match(line)
        if m:
            instrs.append((m.group(1), m.group(2)))
            if current is not None:
                current.append(m.group(2))
    names: dict[str, str] = {}
    for name, rest in instrs:
        op = re.search(r'op_name="([^"]*)"', rest)
        if op:
            names.setdefault(name, op.group(1))
            continue
        called = re.search(r"calls=%?([\w.\-]+)", rest)
        body = " ".join(bodies.get(called.group(1), [])) if called else rest
        tag = ("<dot>" if " dot(" in body or rest.split("(")[0].endswith(" dot") else
               "<broadcast>" if "broadcast(" in body and " dot(" not in body and len(body) < 400 else
               "<copy>" if re.search(r" (copy|transpose)\(", body) else "<other>")
        names.setdefault(name, tag)
    return names


def op_category(op_name: Optional[str]) -> str:
    """Model part of an XLA op from its JAX name stack (flax module path), e.g. `encoder.ffn_matmul`.

    A fused op counts under its root op's name: e.g. the softmax max/sum fused with the QK^T matmul counts
    as attention, and the softmax normalisation fused into the dropout select counts as dropout.
    """
    if op_name is None or op_name == "<other>":
        return "unattributed other"
    if op_name == "<dot>":
        return "unattributed matmul (attention QK^T/PV layouts)"
    if op_name == "<broadcast>":
        return "materialised constant broadcasts"
    if op_name == "<copy>":
        return "copies/transposes"
    if "LAINet" not in op_name:
        return "loss" if "jvp(" in op_name else "optimizer, grad psum, clipping"
    parts = re.split(r"LAINet\)+/", op_name, maxsplit=1)  # "jvp(LAINet)/..." or "transpose(jvp(LAINet))/..."
    path = parts[1] if len(parts) == 2 else ""
    path = path[len("heads/"):] if path.startswith("heads/") else path  # models that nest the heads
    if re.search(r"_bernoulli|_uniform|threefry|random_bits|rng_bit", path):
        return "dropout mask RNG"
    if re.search(r"Dropout|attention_dropout", path):
        return "dropout apply (select; softmax normalisation fused in)"
    if path.startswith("encoder/embeddings"):
        return "encoder.embeddings"
    if re.match(r"encoder/layer_\d+/(query|key|value|attention_output)/", path):
        return "encoder.qkvo_matmul"
    if re.match(r"encoder/layer_\d+/(intermediate|output)/", path):
        return "encoder.ffn_matmul"
    if "LayerNorm" in path:
        return "encoder.layernorm"
    if _ATTN.match(path):
        return "encoder.attention (QK^T, PV, mask bias, softmax)"
    if re.match(r"encoder/layer_\d+/erfc?$", path):
        return "encoder.gelu"
    if path.startswith("encoder/"):
        return "encoder.other (residual adds, reshapes)"
    if path.startswith("g4cn"):
        return "g4cn"
    if path.split("/")[0] in _HEADS:
        return "heads (span/anno proj, classifier, filter)"
    return "lainet.other (mask, gathers, concat)"


def profile_step(step: Callable[[], Any], compiled: Any, steps: int) -> dict[str, Any]:
    """Trace `steps` calls of `step` (jax.profiler) and sum XLA op durations per `op_category`, per step.

    XLA's CPU runtime records one event per executed thunk (`hlo_op`); the optimised HLO of `compiled`
    maps each op to its JAX name stack. Durations are per thread, so independent ops that ran
    concurrently both count (the total can exceed the wall time of a step).
    """
    import collections
    import glob
    import shutil
    import tempfile

    import jax
    from jax.profiler import ProfileData

    names = hlo_op_names(compiled.as_text())
    logdir = tempfile.mkdtemp(prefix="lai_jax_profile_")
    try:
        t0 = time.perf_counter()
        jax.profiler.start_trace(logdir)
        for _ in range(steps):
            step()
        jax.profiler.stop_trace()
        wall = (time.perf_counter() - t0) / steps
        per_cat: collections.Counter = collections.Counter()
        per_dir: collections.Counter = collections.Counter()
        for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
            for plane in ProfileData.from_file(path).planes:
                for line in plane.lines:
                    for ev in line.events:
                        op = dict(ev.stats).get("hlo_op")
                        if op is None:
                            continue
                        name = names.get(op)
                        per_cat[op_category(name)] += ev.duration_ns
                        per_dir["backward" if name and "transpose(" in name else "forward" if name and "jvp(" in name
                                else "unattributed" if name is None or name.startswith("<") else "optimizer/other"
                                ] += ev.duration_ns
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    total = sum(per_cat.values())
    return {"wall_ms_per_step": round(wall * 1e3, 1), "op_ms_per_step": round(total / steps / 1e6, 1),
            "ms_per_step": {k: round(v / steps / 1e6, 1) for k, v in per_cat.most_common()},
            "share": {k: round(v / max(total, 1), 3) for k, v in per_cat.most_common()},
            "direction_share": {k: round(v / max(total, 1), 3) for k, v in per_dir.most_common()}}


# ------------------------------------------------------------------------------------------ breakdown
def breakdown(setup, host_batch, host_params, tmodel, opt, tb, use_gold, config, steps: int,
              total_steps: int) -> dict[str, Any]:
    """Median ms of the pieces of a step (same batch, train mode). Pieces overlap (fwd ⊂ fwd+bwd)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lai_jax import torch_reference as tr
    from lai_jax.g4cn import G4CN
    from lai_jax.models import ner_loss
    from lai_jax.steps import TrainState, make_optimizer

    model, head, d = setup.model, setup.head, setup.model.bert.hidden_size
    params = jax.device_put(host_params)
    batch = jax.device_put(host_batch)
    rng = jax.random.PRNGKey(0)
    gold = jnp.asarray(use_gold)

    def objective(p, b):
        out = model.apply({"params": p}, b, deterministic=False, rngs={"dropout": rng})
        sums, counts = ner_loss(out, b, gold)
        return sum(sums[k] / jnp.maximum(counts[k], 1) for k in sums)

    def ms(fn, *a) -> float:
        c = jax.jit(fn).lower(*a).compile()
        jax.block_until_ready(c(*a))
        return round(statistics.median(time_steps(lambda: jax.block_until_ready(c(*a)), steps)) * 1e3, 2)

    out: dict[str, Any] = {}
    out["jax_forward_ms"] = ms(objective, params, batch)
    out["jax_fwd_bwd_ms"] = ms(jax.grad(objective), params, batch)
    state = TrainState.create(apply_fn=model.apply, params=params, tx=make_optimizer(config.optim, total_steps),
                              rng=rng)
    grads = jax.tree.map(jnp.ones_like, state.params)
    out["jax_optimizer_ms"] = ms(lambda s, g: s.apply_gradients(grads=g), state, grads)
    if head.use_annotations and head.gcn_layers > 0:
        g4cn = G4CN(hidden=d, gcn_layers=head.gcn_layers, gcn_sublayers=head.gcn_sublayers, gcn_heads=head.gcn_heads,
                    gauss_dim=head.gauss_dim, edge=head.edge, dropout=head.dropout, dtype=model.bert.dtype)
        n_anno = host_batch["anno_start"].shape[1]
        B, K = host_batch["cand_mask"].shape
        nodes = jax.random.normal(jax.random.PRNGKey(2), (B, K + n_anno, d))
        node_mask = jnp.concatenate([batch["cand_mask"], jnp.ones((B, n_anno), bool)], axis=1)

        def g_loss(p, x):
            return g4cn.apply({"params": p}, x, node_mask, deterministic=False, rngs={"dropout": rng}).sum()

        out["jax_g4cn_fwd_bwd_ms"] = ms(jax.grad(g_loss, argnums=(0, 1)), tr.head_params(params)["g4cn"], nodes)
    if tmodel is not None:
        import torch

        def t_fwd() -> None:
            with torch.no_grad():
                tr.ner_objective(tmodel(tb), tb, use_gold)

        def t_fb() -> None:
            tmodel.zero_grad(set_to_none=True)
            tr.ner_objective(tmodel(tb), tb, use_gold)[0].backward()

        def t_opt() -> None:
            torch.nn.utils.clip_grad_norm_(tmodel.parameters(), config.optim.grad_clip)
            opt.step()

        for name, fn in (("torch_forward_ms", t_fwd), ("torch_fwd_bwd_ms", t_fb), ("torch_optimizer_ms", t_opt)):
            fn()
            out[name] = round(statistics.median(time_steps(fn, steps)) * 1e3, 2)
        if tmodel.use_graph:
            n_anno = tb["anno_start"].shape[1]
            tnodes = torch.from_numpy(np.asarray(nodes)).requires_grad_(True)
            tmask = torch.from_numpy(np.asarray(node_mask))

            def t_g() -> None:
                tmodel.zero_grad(set_to_none=True)
                tmodel.g4cn(tnodes, tmask).sum().backward()

            t_g()
            out["torch_g4cn_fwd_bwd_ms"] = round(statistics.median(time_steps(t_g, steps)) * 1e3, 2)
    return out


if __name__ == "__main__":
    main()
