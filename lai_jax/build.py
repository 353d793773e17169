"""From a config to the parts every command shares: labels, tokenizer, featurizer, model and train state."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from lai_jax import decoding, metrics as metrics_lib, pretrained
from lai_jax.data import features
from lai_jax.data.labels import LabelSet, load_labels
from lai_jax.input_pipeline import labels_path
from lai_jax.models import SPAN_LOSS_NORMS, HeadConfig, LAINet
from lai_jax.steps import TrainState, make_optimizer


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


def feature_config(config) -> features.FeatureConfig:
    """The featurizer's shape parameters (config fields of the same names)."""
    return features.FeatureConfig(max_text_len=config.max_text_len, max_span_len=config.max_span_len,
                                  max_candidates=config.max_candidates, max_objects=config.max_objects,
                                  use_annotations=config.use_annotations)


def check_choices(config) -> None:
    """Fail early (not after training) on a decoding or scoring field with an unknown value."""
    for key, value, choices in (("ner.overlap", config.ner.overlap, decoding.NER_OVERLAP_RULES),
                                ("re.re_decode", config.re.re_decode, decoding.RE_DECODE_RULES),
                                ("model.span_loss_norm", config.model.span_loss_norm, SPAN_LOSS_NORMS),
                                ("eval.symmetric_count", config.eval.symmetric_count, metrics_lib.SYMMETRIC_COUNTS),
                                ("eval.select_average", config.eval.select_average, metrics_lib.AVERAGES)):
        if value not in choices:
            raise ValueError(f"config {key}={value!r}: expected one of {', '.join(choices)}")


def build(config) -> Setup:
    """Labels, tokenizer, featurizer and model for `config` (the encoder's pretrained weights loaded, not placed)."""
    check_choices(config)
    labels = load_labels(labels_path(config))
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.model.dtype]
    enc, enc_params, tokenizer = pretrained.load(config.encoder, dtype=dtype, remat=config.model.remat)
    changes: dict[str, Any] = {"dropout_bits": config.model.dropout_bits}
    if config.model.encoder_dropout >= 0:
        changes.update(hidden_dropout_prob=config.model.encoder_dropout,
                       attention_probs_dropout_prob=config.model.encoder_dropout)
    if config.model.attention_dropout >= 0:
        changes["attention_probs_dropout_prob"] = config.model.attention_dropout
    bert = dataclasses.replace(enc.config, **changes)
    featurizer = features.Featurizer(tokenizer, labels, feature_config(config))
    head = HeadConfig.from_config(config, labels)
    return Setup(config, labels, tokenizer, featurizer, LAINet(bert, head), enc_params, head)


def init_state(setup: Setup, sample: dict[str, np.ndarray], total_steps: int,
               encoder_params: Optional[dict] = None) -> TrainState:
    """Fresh parameters (heads random, encoder from the pretrained weights unless given) and optimiser state."""
    rng = jax.random.PRNGKey(setup.config.seed)
    init_rng, dropout_rng = jax.random.split(rng)
    if encoder_params is None:
        encoder_params = setup.encoder_params
    params = setup.model.init_params(init_rng, sample, jax.tree.map(jnp.asarray, encoder_params))
    tx = make_optimizer(setup.config.optim, total_steps)
    return TrainState.create(apply_fn=setup.model.apply, params=params, tx=tx, rng=dropout_rng)
