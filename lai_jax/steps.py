"""Train state, optimiser and the pure per-device train / eval steps.

A train step is two pure functions, `grad_step` (forward, loss, backward, reduction over devices) and
`apply_step` (clipping and AdamW), that the runner compiles apart: the gradient program is specialised to each
batch shape, the update program to the parameters alone, so a run with several batch shapes compiles the
optimiser once instead of once per shape (about a third of a train program's compile on a CPU).
Calling a `TrainStep` (what `bind_steps` returns) runs both, for callers that want one function.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

from lai_jax.models import LOSSES, predict_probs
from lai_jax.parallel import AXIS

FINITE = "finite"  # the train step's metric that flags a step whose loss, gradients and parameters are finite


class TrainState(train_state.TrainState):
    """Params, optimiser state and step, plus the base dropout key and the parameters' moving average (None
    unless `optim.ema_decay` > 0); all of it is checkpointed."""
    rng: jax.Array = struct.field(default=None)
    ema_params: Any = struct.field(default=None)


def eval_params(state: TrainState) -> Any:
    """The parameters a run evaluates and saves: the moving average when the run keeps one."""
    return state.params if state.ema_params is None else state.ema_params


def with_average(state: TrainState, keep: bool) -> TrainState:
    """`state` with a parameter average (`optim.ema_decay`) starting from its parameters when `keep`, without one
    otherwise (a fresh state, or one resumed with --resume=force after the setting changed); `state` may hold
    shapes (`jax.eval_shape`) instead of arrays."""
    if keep == (state.ema_params is not None):
        return state
    # A copy, not the same arrays: the runner donates the state's buffers, and one buffer cannot be donated twice.
    copy = lambda x: x if isinstance(x, jax.ShapeDtypeStruct) else jnp.copy(x)  # noqa: E731
    return state.replace(ema_params=jax.tree.map(copy, state.params) if keep else None)


def learning_rate_schedule(peak: float, total_steps: int, warmup_ratio: float) -> optax.Schedule:
    """Linear warm-up to `peak`, then linear decay to 0 at `total_steps`."""
    warmup = max(1, int(total_steps * warmup_ratio))
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup),
                                 optax.linear_schedule(peak, 0.0, max(1, total_steps - warmup))], [warmup])


def _decay_mask(params) -> Any:
    """Weight decay on kernels and embeddings only: not on biases (`bias`, and G4CN's per-head `bias_<l>` of shape
    (heads, width)) and not on layer-norm scales."""
    def keep(path, x):
        name = str(getattr(path[-1], "key", path[-1]))
        return x.ndim > 1 and re.fullmatch(r"(bias|scale)(_\d+)?", name) is None
    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(optim_cfg, total_steps: int) -> optax.GradientTransformation:
    """AdamW with separate encoder / head learning rates (optax.multi_transform) and global-norm clipping."""
    def adamw(peak: float) -> optax.GradientTransformation:
        return optax.adamw(learning_rate_schedule(peak, total_steps, optim_cfg.warmup_ratio),
                           eps=optim_cfg.adam_eps, weight_decay=optim_cfg.weight_decay, mask=_decay_mask)

    def labels(params):
        return {k: jax.tree.map(lambda _: "encoder" if k == "encoder" else "head", v) for k, v in params.items()}

    tx = optax.multi_transform({"encoder": adamw(optim_cfg.encoder_learning_rate),
                                "head": adamw(optim_cfg.learning_rate)}, labels)
    if optim_cfg.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(optim_cfg.grad_clip), tx)
    return tx


def grad_step(state: TrainState, batch: dict, use_gold_filter: jax.Array, *, model: nn.Module,
              phase: str, accum_steps: int = 1) -> tuple[Any, dict]:
    """(gradients summed over devices, step metrics) for this device's shard of the global batch.

    Each loss term is a sum over real candidates divided by the *global* count (psum over devices),
    and gradients are summed over devices: the result equals one device on the whole global batch,
    even when padding leaves devices with different numbers of real candidates.

    With `accum_steps` k > 1 the shard is k micro-batches, run one after the other (lax.scan) with their
    gradients summed. The global counts then cover all micro-batches, so a forward-only pass over them
    first computes the counts (the NER classifier's count depends on the filter's outputs); XLA drops
    that pass's model work where the counts depend on the batch alone (RE).
    """
    loss_fn = LOSSES[phase]
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), jax.lax.axis_index(AXIS))

    def forward(params, micro, micro_rng):
        out = model.apply({"params": params}, micro, deterministic=False, rngs={"dropout": micro_rng})
        return loss_fn(out, micro, use_gold_filter, model.head)

    def objective(params, micro, micro_rng, global_counts=None):
        sums, counts = forward(params, micro, micro_rng)
        if global_counts is None:
            global_counts = jax.lax.psum(counts, AXIS)
        terms = {k: sums[k] / jnp.maximum(global_counts[k], 1) for k in sums}
        return sum(terms.values()), terms

    if accum_steps == 1:
        grads, terms = jax.grad(objective, has_aux=True)(state.params, batch, rng)
    else:
        micros = jax.tree.map(lambda x: x.reshape(accum_steps, x.shape[0] // accum_steps, *x.shape[1:]), batch)
        rngs = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(accum_steps))
        counts = jax.lax.map(lambda xs: forward(state.params, *xs)[1], (micros, rngs))
        global_counts = jax.lax.psum(jax.tree.map(lambda c: jnp.sum(c, axis=0), counts), AXIS)

        def accumulate(total, xs):
            g, t = jax.grad(objective, has_aux=True)(state.params, *xs, global_counts)
            return jax.tree.map(jnp.add, total, g), t

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        grads, terms = jax.lax.scan(accumulate, zeros, (micros, rngs))
        terms = jax.tree.map(lambda t: jnp.sum(t, axis=0), terms)
    grads = jax.lax.psum(grads, AXIS)
    terms = jax.lax.psum(terms, AXIS)
    loss = sum(terms.values())
    grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
    # A NaN or inf gradient can come with a finite loss: the loss is computed before the update. 1.0 when the
    # loss and every gradient are finite (a finite global norm); the host stops on 0.0. The updated parameters
    # need no check of their own: from finite parameters and gradients AdamW's step is finite (it divides by
    # sqrt(v) + eps), and a check per parameter leaf cost ~2 s of compilation per train shape.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    metrics = {"loss": loss, **{f"loss_{k}": v for k, v in terms.items()}, "grad_norm": grad_norm,
               FINITE: finite.astype(jnp.float32)}
    return grads, metrics


def apply_step(state: TrainState, grads: Any, *, ema_decay: float = 0.0) -> TrainState:
    """The optimiser update (global-norm clipping, AdamW) with `grad_step`'s gradients, then the moving average
    of the parameters when the state keeps one; the same on every device."""
    new = state.apply_gradients(grads=grads)
    if new.ema_params is None:
        return new
    # The warm-up of the decay (as TensorFlow's ExponentialMovingAverage with num_updates) keeps the average
    # from clinging to the initial parameters in short runs: 0.1 at step 0, 0.5 at step 8, 0.9 at step 80.
    step = new.step.astype(jnp.float32)
    d = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
    ema = jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), new.ema_params, new.params)
    return new.replace(ema_params=ema)


@dataclasses.dataclass(frozen=True)
class TrainStep:
    """A train step as its two parts, for `Runner` to compile apart; calling it runs one whole step."""

    grad: Callable[..., tuple[Any, dict]]  # (state, batch, use_gold_filter) -> (grads, metrics)
    apply: Callable[[Any, Any], Any]  # (state, grads) -> state

    def __call__(self, state: Any, batch: dict, use_gold_filter: Any) -> tuple[Any, dict]:
        grads, metrics = self.grad(state, batch, use_gold_filter)
        return self.apply(state, grads), metrics


def eval_step(params: Any, batch: dict, *, model: nn.Module) -> dict:
    """Deterministic forward pass with `params` -> probabilities for host-side decoding."""
    out = model.apply({"params": params}, batch, deterministic=True)
    return predict_probs(out)


def bind_steps(model: nn.Module, phase: str, accum_steps: int = 1,
               ema_decay: float = 0.0) -> tuple[TrainStep, Callable]:
    """The train step (its two parts) and the eval step with the model, phase, micro-batch count and moving-average
    decay closed over (what the Runner maps)."""
    grad = functools.partial(grad_step, model=model, phase=phase, accum_steps=accum_steps)
    apply = functools.partial(apply_step, ema_decay=ema_decay)
    return TrainStep(grad, apply), functools.partial(eval_step, model=model)
