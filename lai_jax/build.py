"""From a config to the parts every command shares: labels, tokenizer, featurizer, model and train state."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from lai_jax import decoding, encoder, metrics as metrics_lib, pretrained
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
    checkpoint_step: Optional[int] = None  # the step of the checkpoint restored for evaluation, if any


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


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


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
    check_choices(config)
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
