"""Train state, optimiser and the pure per-device train / eval steps."""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

from lai_jax.models import LOSSES, predict_probs
from lai_jax.parallel import AXIS


class TrainState(train_state.TrainState):
    """Params, optimiser state and step, plus the base dropout key (all of it is checkpointed)."""
    rng: jax.Array = struct.field(default=None)


def learning_rate_schedule(peak: float, total_steps: int, warmup_ratio: float) -> optax.Schedule:
    """Linear warm-up to `peak`, then linear decay to 0 at `total_steps`."""
    warmup = max(1, int(total_steps * warmup_ratio))
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup),
                                 optax.linear_schedule(peak, 0.0, max(1, total_steps - warmup))], [warmup])


def _decay_mask(params) -> Any:
    """Weight decay on kernels and embeddings only (not biases, not layer-norm scales)."""
    def keep(path, x):
        name = str(getattr(path[-1], "key", path[-1]))
        return x.ndim > 1 and name not in ("bias", "scale")
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


def train_step(state: TrainState, batch: dict, use_gold_filter: jax.Array, *, model: nn.Module,
               phase: str) -> tuple[TrainState, dict]:
    """One optimisation step on this device's shard of the global batch.

    Each loss term is a sum over real candidates divided by the *global* count (psum over devices),
    and gradients are summed over devices: the result equals one device on the whole global batch,
    even when padding leaves devices with different numbers of real candidates.
    """
    loss_fn = LOSSES[phase]
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), jax.lax.axis_index(AXIS))

    def objective(params):
        out = model.apply({"params": params}, batch, deterministic=False, rngs={"dropout": rng})
        sums, counts = loss_fn(out, batch, use_gold_filter, model.head)
        global_counts = jax.lax.psum(counts, AXIS)
        terms = {k: sums[k] / jnp.maximum(global_counts[k], 1) for k in sums}
        return sum(terms.values()), terms

    grads, terms = jax.grad(objective, has_aux=True)(state.params)
    grads = jax.lax.psum(grads, AXIS)
    terms = jax.lax.psum(terms, AXIS)
    metrics = {"loss": sum(terms.values()), **{f"loss_{k}": v for k, v in terms.items()},
               "grad_norm": jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))}
    return state.apply_gradients(grads=grads), metrics


def eval_step(state: TrainState, batch: dict, *, model: nn.Module) -> dict:
    """Deterministic forward pass -> probabilities for host-side decoding."""
    out = model.apply({"params": state.params}, batch, deterministic=True)
    return predict_probs(out)


def bind_steps(model: nn.Module, phase: str) -> tuple[Callable, Callable]:
    """The two step functions with the model and phase closed over (what the Runner maps)."""
    return (functools.partial(train_step, model=model, phase=phase), functools.partial(eval_step, model=model))
