"""From a config to the parts every command shares: labels, tokenizer, featurizer, model and train state."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from lai_jax import decoding, encoder, metrics as metrics_lib, pretrained
from lai_jax.cli import UserError
from lai_jax.config_base import get_field
from lai_jax.data import features, masks
from lai_jax.g4cn import EDGES, G4CN
from lai_jax.data.labels import LabelSet, load_labels
from lai_jax.input_pipeline import labels_path
from lai_jax.models import GCN_EDGES, SPAN_LOSS_NORMS, SPAN_POOLS, HeadConfig, LAINet
from lai_jax.steps import TrainState, make_optimizer, with_average


@dataclasses.dataclass
class Setup:
    """Everything derived from a config that training, evaluation and prediction share."""
    config: Any
    labels: LabelSet
    tokenizer: Any
    featurizer: features.Featurizer
    model: LAINet
    encoder_params: dict
    head: HeadConfig
    shapes: tuple = ()  # (slots, tokens) per batch bucket (`input_pipeline.plan_buckets`); () = the full (K, T)
    checkpoint_step: Optional[int] = None  # the step of the checkpoint restored for evaluation, if any
    # RE: the (relation, head type, tail type) triples of the training split (`re.type_constraints`).
    signatures: Optional[frozenset] = None


def feature_config(config) -> features.FeatureConfig:
    """The featurizer's shape parameters (config fields of the same names)."""
    return features.FeatureConfig(max_text_len=config.max_text_len, max_span_len=config.max_span_len,
                                  max_candidates=config.max_candidates, max_objects=config.max_objects,
                                  use_annotations=config.use_annotations,
                                  typed_markers=config.phase == "re" and config.re.typed_markers)


MARKER_INITS = ("unused", "brackets")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Fields with a fixed set of values.
CHOICES = {"ner.overlap": decoding.NER_OVERLAP_RULES, "re.re_decode": decoding.RE_DECODE_RULES,
           "model.span_loss_norm": SPAN_LOSS_NORMS, "eval.symmetric_count": metrics_lib.SYMMETRIC_COUNTS,
           "eval.select_average": metrics_lib.AVERAGES, "attention_mask": tuple(masks.PRESETS),
           "model.edge": EDGES, "model.dtype": ("auto", *DTYPES), "parallel": ("pmap", "shard_map"),
           "model.dropout_bits": (8, 16, 32), "model.marker_init": MARKER_INITS,
           "model.span_pool": SPAN_POOLS, "model.gcn_edges": GCN_EDGES}


def _at_least(low: float):
    return lambda v: v >= low, f">= {low}"


_PROBABILITY = (lambda v: 0 <= v <= 1, "in [0, 1]")
_RATE = (lambda v: 0 <= v < 1, "in [0, 1)")
_RATE_OR_KEEP = (lambda v: v == -1 or 0 <= v < 1, "-1 (keep the encoder's) or in [0, 1)")
# Numeric fields and the values they accept: checked before a run writes anything (`check_config`).
RANGES = {
    "num_epochs": _at_least(1), "cold_start_epochs": _at_least(0), "max_steps": _at_least(0),
    "batch_size": _at_least(1), "grad_accum_steps": _at_least(1), "per_device_eval_batch_size": _at_least(1),
    "eval_every_epochs": _at_least(0), "eval_every_steps": _at_least(0), "log_every_steps": _at_least(1),
    "prefetch_batches": _at_least(0), "num_buckets": _at_least(1), "eval_buckets": _at_least(0),
    "max_text_len": _at_least(1),
    "max_span_len": _at_least(1), "max_candidates": _at_least(1), "max_objects": _at_least(1),
    "debug_kill_after_step": _at_least(0), "checkpoint_every_evals": _at_least(1),
    "data.fold": _at_least(0), "data.train_limit": _at_least(0), "data.eval_limit": _at_least(0),
    "data.dev_holdout": (lambda v: 0 < v < 1, "in (0, 1)"),
    "ner.train_negatives": _at_least(0), "ner.hard_negatives": _at_least(0),
    "re.negative_subject_rate": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "ner.filter_threshold": _PROBABILITY, "re.threshold": _PROBABILITY, "model.filter_gate_threshold": _PROBABILITY,
    "model.dropout": _RATE, "model.encoder_dropout": _RATE_OR_KEEP, "model.attention_dropout": _RATE_OR_KEEP,
    "model.gcn_layers": _at_least(0), "model.gcn_sublayers": _at_least(1), "model.gcn_heads": _at_least(1),
    "model.gauss_dim": _at_least(1), "model.filter_pos_weight": (lambda v: v > 0, "> 0"),
    "model.span_loss_weight": (lambda v: v > 0, "> 0"), "model.width_dim": _at_least(0),
    "optim.learning_rate": (lambda v: v > 0, "> 0"), "optim.encoder_learning_rate": _at_least(0),
    "optim.warmup_ratio": _PROBABILITY, "optim.weight_decay": _at_least(0),
    "optim.adam_eps": (lambda v: v > 0, "> 0"), "optim.grad_clip": _at_least(0), "optim.ema_decay": _RATE,
}


def check_config(config, fields=None) -> None:
    """Refuse, before anything is written or loaded, a field with a value outside `CHOICES` / `RANGES`.

    `fields` limits the check to those dotted names (`evaluate --set` checks only what it changes).
    """
    for key in fields if fields is not None else (*CHOICES, *RANGES):
        value = get_field(config, key)
        if key in CHOICES and value not in CHOICES[key]:
            raise UserError(f"config {key}={value!r}: expected one of {', '.join(map(str, CHOICES[key]))}")
        if key in RANGES and not RANGES[key][0](value):
            raise UserError(f"config {key}={value!r}: must be {RANGES[key][1]}")
    if fields is None and len(config.visibility):
        try:
            masks.visibility_table(config.attention_mask, config.visibility)  # a 3x3 table
        except ValueError as e:
            raise UserError(str(e)) from None


def check_choices(config) -> None:
    """Fail early (not after training) on a field with an unknown value (`CHOICES`)."""
    check_config(config, tuple(CHOICES))


def check_graph(config, hidden: int) -> None:
    """Refuse G4CN settings the encoder's hidden size does not allow (heads must divide it), before any init."""
    if not (config.use_annotations and config.model.gcn_layers > 0):
        return
    m = config.model
    try:
        G4CN(hidden=hidden, gcn_layers=m.gcn_layers, gcn_sublayers=m.gcn_sublayers, gcn_heads=m.gcn_heads,
             gauss_dim=m.gauss_dim, edge=m.edge)
    except ValueError as e:
        raise UserError(f"config model.*: {e} (the encoder {config.encoder!r} has hidden size {hidden})") from None


def compute_dtype(name: str) -> Any:
    """`model.dtype` as a jnp dtype; "auto" is bfloat16 on GPUs and TPUs (their matmul units run bf16 at twice
    TF32's rate and half the activation traffic), float32 on CPUs (no bf16 matmul units: slower, not faster)."""
    if name == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    if name not in DTYPES:
        raise ValueError(f"config model.dtype={name!r}: expected auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def fused_attention_available(dtype: Any, head_dim: int) -> bool:
    """Whether training could take cuDNN's fused attention here if attention dropout were 0 (what
    `model.attention_dropout=-1` then picks; see `lai_jax.encoder.attention_implementation`)."""
    return encoder.attention_implementation(encoder.backend_platform(), dtype, 0.0, head_dim, seq_len=2)[0] == "cudnn"


def build(config) -> Setup:
    """Labels, tokenizer, featurizer and model for `config` (the encoder's pretrained weights loaded, not placed)."""
    check_config(config)
    labels = load_labels(labels_path(config))
    dtype = compute_dtype(config.model.dtype)
    enc, enc_params, tokenizer = pretrained.load(config.encoder, dtype=dtype, remat=config.model.remat)
    changes: dict[str, Any] = {"dropout_bits": config.model.dropout_bits}
    if config.model.encoder_dropout >= 0:
        changes.update(hidden_dropout_prob=config.model.encoder_dropout,
                       attention_probs_dropout_prob=config.model.encoder_dropout)
    if config.model.attention_dropout >= 0:
        changes["attention_probs_dropout_prob"] = config.model.attention_dropout
    elif fused_attention_available(dtype, enc.config.head_dim):
        changes["attention_probs_dropout_prob"] = 0.0  # "auto" on a GPU: training takes the fused kernel
    bert = dataclasses.replace(enc.config, **changes)
    check_graph(config, bert.hidden_size)
    featurizer = features.Featurizer(tokenizer, labels, feature_config(config))
    head = HeadConfig.from_config(config, labels)
    return Setup(config, labels, tokenizer, featurizer, LAINet(bert, head), enc_params, head)


def init_marker_embeddings(encoder_params: dict, sources: dict[int, list[int]]) -> dict:
    """Encoder parameters whose word-embedding rows `sources` names start as the mean of their source rows
    (`model.marker_init`); every other leaf is shared with the input, which is left unchanged."""
    table = np.array(encoder_params["embeddings"]["word_embeddings"]["embedding"])
    for marker, src in sources.items():
        table[marker] = table[src].mean(axis=0, dtype=np.float32)
    emb = {**encoder_params["embeddings"], "word_embeddings": {"embedding": table}}
    return {**encoder_params, "embeddings": emb}


def init_state(setup: Setup, sample: dict[str, np.ndarray], total_steps: int,
               encoder_params: Optional[dict] = None) -> TrainState:
    """Fresh parameters (heads random, encoder from the pretrained weights unless given) and optimiser state."""
    rng = jax.random.PRNGKey(setup.config.seed)
    init_rng, dropout_rng = jax.random.split(rng)
    if encoder_params is None:
        encoder_params = setup.encoder_params
    if setup.config.model.marker_init == "brackets":
        encoder_params = init_marker_embeddings(encoder_params, setup.featurizer.marker_sources(setup.config.phase))
    params = setup.model.init_params(init_rng, sample, jax.tree.map(jnp.asarray, encoder_params))
    tx = make_optimizer(setup.config.optim, total_steps)
    state = TrainState.create(apply_fn=setup.model.apply, params=params, tx=tx, rng=dropout_rng)
    return with_average(state, setup.config.optim.ema_decay > 0)
