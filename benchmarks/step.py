"""NER train-step speed of lai-jax vs a PyTorch port of the same model, on real SciERC instances.

    python -m benchmarks.step [--encoder default] [--batch 4] [--steps 5] [--threads N] [--smoke]

One process, both frameworks, same weights, same batch:

* shapes: ``configs/scierc.py:ner`` (T = ``Featurizer.seq_len("ner")`` = 608 with the packaged
  encoder's vocabulary, K = 220); the batch is ``--batch`` real SciERC dev instances (a seeded draw),
  so the fractions of real tokens and filled candidate slots are the data's own;
* JAX: the real ``lai_jax.steps.TrainStep`` (forward in train mode, ``ner_loss``, backward, global-norm
  clipping, AdamW through ``optax.multi_transform``) run by ``lai_jax.parallel.Runner`` on one device.
  The runner's step is compiled ahead of time (``Runner.compile_train``, timed as ``compile_s``: the gradient
  program and the optimiser update, ``lai_jax.steps.TrainStep``) and those executables are what the runner
  then dispatches, so the memory/FLOP analysis (of the gradient program, the shape-specific one) is of what was
  timed. The batch is moved to the device once (training's prefetch has it there before each step), so steps
  exclude that copy;
* torch: ``benchmarks.torch_reference`` (``transformers.BertModel`` with its default ``sdpa`` attention, or
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

Memory: ``jax_compiled_*`` from the gradient program's ``memory_analysis()`` (arguments = parameters + batch,
temporaries = activations and scratch, so argument + output - alias + temp bounds the live device
bytes); ``*_rss_delta_mb``: highest resident set size while that framework holds its model/optimiser
state and runs its warm-up and timed steps, minus the RSS just before it built that state, sampled
every 5 ms from /proc/self/statm. ``malloc_trim`` runs before the baseline and after each XLA compile
(compiles are not sampled), so memory freed by the other framework or by the compiler is not counted
or silently reused; the JAX figure excludes the host copy of the params made for torch. With
``--tune-malloc`` (see `benchmarks.timing.tune_malloc`: glibc keeps freed memory, one heap for everything) they are null.

Prints ONE JSON line. ``--smoke``: batch 1, C=16, K=8, the encoder's first layer only, 1 step (for tests).
``--breakdown`` adds per-piece times (JAX and torch: forward, forward+backward, optimiser; JAX:
G4CN alone) under "breakdown".
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from typing import Any, Callable, Optional, Sequence

from benchmarks import timing
from benchmarks.workload import fractions, load_batch, make_setup, split_fractions

SMOKE = dict(batch=1, max_text_len=16, max_candidates=8, layers=1, steps=1)
USE_GOLD = True  # SciERC's first 40 epochs (cold start); the other branch costs the same
TOTAL_STEPS = 1000  # only shapes the learning-rate schedule

# Dense peak FLOP/s per device kind (substring of jax's device_kind) for MFU: (bf16, fp32 matmul).
# fp32 matmuls on these GPUs run as TF32 under JAX's default precision, so the TF32 peak is used.
PEAK_FLOPS = {
    "H200": (989e12, 494e12),
    "H100": (989e12, 494e12),
    "A100": (312e12, 156e12),
    "L4": (121e12, 60e12),
    "V100": (125e12, 15.7e12),
}


def peak_flops(device_kind: str, dtype: str) -> Optional[float]:
    """Dense peak FLOP/s of `device_kind` for `dtype` matmuls, if the kind is in `PEAK_FLOPS`."""
    for name, (bf16, fp32) in PEAK_FLOPS.items():
        if name.lower() in device_kind.lower():
            return bf16 if dtype == "bfloat16" else fp32
    return None


# --------------------------------------------------------------------------------------------- flags
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


def configure(args: argparse.Namespace, reexec: bool) -> tuple[int, bool]:
    """Threads, malloc and JAX settings, in the order they must happen; returns (threads, malloc_tuned)."""
    threads = timing.pin_threads(args.threads)
    malloc_tuned = timing.tune_malloc(reexec=reexec) if args.tune_malloc else False
    timing.append_xla_flags(args.xla_flags)
    import jax

    if args.prng_impl:
        jax.config.update("jax_default_prng_impl", args.prng_impl)
    for item in args.jax_config:
        key, _, value = item.partition("=")
        jax.config.update(key, {"true": True, "false": False}.get(value.lower(), value))
    return threads, malloc_tuned


# -------------------------------------------------------------------------------------- both sides
@dataclasses.dataclass
class JaxSide:
    step: Callable[[], None]  # one blocking train step on the fixed batch
    run: Callable[[int], None]  # n steps dispatched back to back (as the train loop does), then one block
    compiled: Any  # the gradient executable `step` dispatches
    update: Any  # and its optimiser update (None when the step is compiled whole)
    compile_s: float
    host_params: Any  # a host copy of the initial params (what torch gets)
    host_copy_bytes: int


def build_jax(setup, host_batch: dict, rss: timing.RssSampler) -> JaxSide:
    """The real lai-jax train step run by a `Runner` on one device, compiled ahead of time.

    RSS is sampled while the state exists, not while XLA compiles (init_state compiles `init`).
    """
    import jax
    import numpy as np

    from lai_jax.build import init_state
    from lai_jax.parallel import Runner
    from lai_jax.steps import bind_steps

    rss.start("jax")
    rss.pause()
    runner = Runner("pmap", *bind_steps(setup.model, "ner"))
    state = init_state(setup, host_batch, TOTAL_STEPS)
    host_params = jax.tree.map(np.array, state.params)  # a copy: the state's buffers get donated
    state = runner.put_state(state)
    rss.resume("jax", trim=True)
    rss.pause()
    t0 = time.perf_counter()
    compiled = runner.compile_train(state, host_batch, USE_GOLD)
    compile_s = round(time.perf_counter() - t0, 2)
    holder = {"state": state}
    batch = runner.put_batch(host_batch)  # on the devices once, as prefetching leaves it before each step

    def run(n: int) -> None:
        m = None
        for _ in range(n):
            holder["state"], m = runner.train(holder["state"], batch, USE_GOLD)
        jax.block_until_ready((holder["state"], m))

    return JaxSide(lambda: run(1), run, compiled, runner.update_executable(), compile_s, host_params,
                   sum(x.nbytes for x in jax.tree.leaves(host_params)))


@dataclasses.dataclass
class TorchSide:
    step: Callable[[], None]  # one train step of the reference on the same batch (blocking)
    run: Callable[[int], None]  # n steps, then one wait for the device
    model: Any
    opt: Any
    batch: dict  # the batch as torch tensors


def build_torch(config, setup, host_params, host_batch: dict, threads: int, attn: str = "sdpa",
                device: Optional[str] = None, autocast: Optional[str] = None) -> TorchSide:
    """`benchmarks.torch_reference` with the lai-jax parameters, its optimiser and step closures.

    `device`: where the model and batch live (default: the CPU); `autocast`: "bfloat16" runs forward and loss
    under torch.autocast (mixed precision, float32 weights).
    """
    import torch

    from benchmarks import torch_reference as tr

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tmodel = tr.like_lai_jax(setup, host_params, attn, device=device)
    opt, sched = tr.make_optimizer(tmodel, config.optim, TOTAL_STEPS)
    tb = tr.to_torch(host_batch, device)
    cast = getattr(torch, autocast) if autocast else None
    wait = torch.cuda.synchronize if device is not None and torch.device(device).type == "cuda" else (lambda: None)

    def run(n: int) -> None:
        for _ in range(n):
            tr.train_step(tmodel, opt, sched, tb, USE_GOLD, config.optim.grad_clip, autocast=cast)
        wait()

    return TorchSide(lambda: run(1), run, tmodel, opt, tb)


def warm(step: Callable[[], None], n: int, rss: timing.RssSampler, phase: str, trim: bool = False) -> None:
    """`n` untimed steps with RSS sampled under `phase`."""
    rss.resume(phase, trim=trim)
    for _ in range(n):
        step()
    rss.pause()


def time_alternating(steps: dict[str, Callable[[], None]], rounds: int, n: int, rss: timing.RssSampler
                     ) -> tuple[dict[str, list[float]], dict[str, dict]]:
    """Per-step wall times and usage of each named step, in `rounds` blocks of `n` that alternate between them."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    usage: dict[str, dict] = {name: {} for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            rss.resume(name)
            times[name] += timing.time_steps(fn, n, usage[name])
            rss.pause()
    return times, usage


def step_rates(times: dict[str, list[float]], usage: dict[str, dict]) -> dict[str, Any]:
    """Steps/s of each framework, their ratio (jax/torch in steps/s; >1: JAX faster) and CPU usage medians."""
    out: dict[str, Any] = {}
    for name, ts in times.items():
        out[f"{name}_steps_per_s"] = timing.per_s(ts)
        out.update(timing.usage_summary(name, usage[name]))
    if times.get("torch"):
        out["ratio"] = round(statistics.median(times["torch"]) / statistics.median(times["jax"]), 3)
    return out


# ------------------------------------------------------------------------------------- encoder only
def encoder_comparison(setup, host_batch: dict, host_params, torch_side: Optional[TorchSide], rounds: int, n: int,
                       jax_step_s: float) -> dict[str, Any]:
    """Forward + backward of the encoder alone (loss = sum of the last hidden states, train mode), both sides."""
    import jax
    import numpy as np

    from lai_jax import encoder as encoder_lib
    from lai_jax.data import masks

    enc_model = encoder_lib.BertEncoder(setup.model.bert)
    bool_mask = masks.attention_mask(host_batch["token_groups"].astype(np.int32), host_batch["marker_partner"],
                                     np.asarray(setup.head.visibility, bool), setup.head.partner_only)
    enc_in = jax.device_put((host_batch["input_ids"], host_batch["position_ids"], host_batch["token_type_ids"],
                             bool_mask))
    params = jax.device_put(host_params["encoder"])

    def loss(p, rng, b):
        out = enc_model.apply({"params": p}, *b, deterministic=False, rngs={"dropout": rng})
        return out.astype(np.float32).sum()

    fn = jax.jit(jax.value_and_grad(loss)).lower(params, jax.random.PRNGKey(0), enc_in).compile()
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 1 + n * rounds))
    steps = {"jax": lambda: jax.block_until_ready(fn(params, next(keys), enc_in))}
    if torch_side is not None:
        steps["torch"] = _torch_encoder_step(setup, torch_side)
    for step in steps.values():
        step()  # warm-up
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            times[name] += timing.time_steps(step, n)
    out: dict[str, Any] = {f"encoder_{name}_steps_per_s": timing.per_s(ts) for name, ts in times.items()}
    if "torch" in times:
        out["encoder_ratio"] = round(statistics.median(times["torch"]) / statistics.median(times["jax"]), 3)
    out["encoder_share_of_jax_step"] = round(statistics.median(times["jax"]) / jax_step_s, 3)
    return out


def _torch_encoder_step(setup, side: TorchSide) -> Callable[[], None]:
    from benchmarks import torch_reference as tr

    tb = side.batch
    amask = tr.additive_mask(tb["token_groups"], tb["marker_partner"], setup.head.visibility, setup.head.partner_only)

    def step() -> None:
        side.model.zero_grad(set_to_none=True)
        side.model.bert(input_ids=tb["input_ids"], attention_mask=amask, token_type_ids=tb["token_type_ids"],
                        position_ids=tb["position_ids"]).last_hidden_state.sum().backward()

    return step


# --------------------------------------------------------------------------------------------- report
def memory_report(side: JaxSide, rss: timing.RssSampler, malloc_tuned: bool, jax_step_s: float, device,
                  dtype: str) -> dict[str, Any]:
    """XLA's memory analysis and FLOPs of the timed executable, RSS deltas, achieved FLOP/s and MFU."""
    mem = timing.memory_stats(side.compiled)
    flops = timing.compiled_flops(side.compiled, side.update)
    peak = peak_flops(device.device_kind, dtype) if device.platform == "gpu" else None
    return {
        "jax_compiled_argument_mb": timing.mb(mem["argument"]), "jax_compiled_temp_mb": timing.mb(mem["temp"]),
        "jax_compiled_peak_mb": None if mem["temp"] is None else
        timing.mb(mem["argument"] + mem["output"] - mem["alias"] + mem["temp"]),
        # With --tune-malloc the heap never shrinks and both frameworks share it: per-framework RSS deltas are moot.
        "jax_rss_delta_mb": None if malloc_tuned else rss.delta_mb("jax", minus=side.host_copy_bytes),
        "torch_rss_delta_mb": None if malloc_tuned else rss.delta_mb("torch"),
        "jax_step_gflop": None if flops is None else round(flops / 1e9, 2),
        "jax_achieved_gflop_per_s": None if flops is None else round(flops / jax_step_s / 1e9, 2),
        "mfu": round(flops / jax_step_s / peak, 4) if flops is not None and peak else None,
    }


def initial_result(args: argparse.Namespace, setup, host_batch: dict, threads: int, malloc_tuned: bool, device
                   ) -> dict[str, Any]:
    """The JSON record with every timing field present (None until measured) and the run's settings."""
    import jax

    tok_frac, cand_frac = fractions(host_batch)
    return {
        "jax_steps_per_s": None, "torch_steps_per_s": None, "ratio": None,
        "encoder_jax_steps_per_s": None, "encoder_torch_steps_per_s": None, "encoder_ratio": None,
        "compile_s": None, "jax_cpu_s_per_step": None, "torch_cpu_s_per_step": None,
        "jax_sys_s_per_step": None, "torch_sys_s_per_step": None,
        "jax_page_faults_per_step": None, "torch_page_faults_per_step": None,
        "batch": args.batch, "T": host_batch["input_ids"].shape[1], "K": host_batch["cand_mask"].shape[1],
        "steps": args.steps, "rounds": args.rounds, "threads": threads,
        "device": f"{device.platform}:{device.device_kind}", "jax_dtype": args.dtype, "remat": args.remat,
        "malloc_tuned": malloc_tuned,
        "prng_impl": jax.config.jax_default_prng_impl, "jax_config": args.jax_config, "torch_dtype": "float32",
        "layers": setup.model.bert.num_hidden_layers, "hidden": setup.model.bert.hidden_size,
        "real_token_fraction": round(tok_frac, 4), "real_candidate_fraction": round(cand_frac, 4),
    }


# ----------------------------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = _parse(argv)
    threads, malloc_tuned = configure(args, reexec=argv is None)
    import jax

    rss = timing.RssSampler(trim=not malloc_tuned)
    config, setup = make_setup(args.encoder, args.max_text_len, args.max_candidates, args.layers, args.dtype,
                               remat=args.remat, overrides=args.set)
    host_batch, dev_instances = load_batch(config, setup, args.batch, seed=args.seed)
    device = jax.devices()[0]
    result = initial_result(args, setup, host_batch, threads, malloc_tuned, device)

    jax_side = build_jax(setup, host_batch, rss)
    result["compile_s"] = jax_side.compile_s
    warm(jax_side.step, args.warmup, rss, "jax", trim=True)
    steps = {"jax": jax_side.step}
    torch_side = None
    if not args.no_torch:
        rss.start("torch")
        torch_side = build_torch(config, setup, jax_side.host_params, host_batch, threads, args.torch_attn)
        warm(torch_side.step, args.warmup, rss, "torch")
        steps["torch"] = torch_side.step
    times, usage = time_alternating(steps, args.rounds, args.steps, rss)
    result.update(step_rates(times, usage))
    jax_s = statistics.median(times["jax"])

    if not args.no_encoder:
        result.update(encoder_comparison(setup, host_batch, jax_side.host_params, torch_side, args.rounds, args.steps,
                                         jax_s))
    result.update(memory_report(jax_side, rss, malloc_tuned, jax_s, device, args.dtype))
    rss.close()
    if args.breakdown:
        from benchmarks.profile import breakdown

        result["breakdown"] = breakdown(setup, config, host_batch, jax_side.host_params, torch_side, args.steps,
                                        USE_GOLD, TOTAL_STEPS)
    if args.profile:
        from benchmarks.profile import profile_step

        result["profile"] = profile_step(jax_side.step, jax_side.compiled, args.steps)
    tok, cand = split_fractions(dev_instances)
    result["dev_real_token_fraction"], result["dev_real_candidate_fraction"] = round(tok, 4), round(cand, 4)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
