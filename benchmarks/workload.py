"""What the benchmarks run on: the SciERC NER config and model (`make_setup`) and real SciERC instances."""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]


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
    """(config, `lai_jax.build.Setup`) for the NER phase, optionally with only the first `layers` encoder layers.

    `overrides`: "field=value" strings (dotted config fields; the value is parsed as the default's type).
    """
    from lai_jax.build import build
    from lai_jax.config_base import parse_assignment, set_fields
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
    setup = build(config)
    if layers and layers < setup.model.bert.num_hidden_layers:
        bert = dataclasses.replace(setup.model.bert, num_hidden_layers=layers)
        keep = {"embeddings"} | {f"layer_{i}" for i in range(layers)}
        setup = dataclasses.replace(setup, model=LAINet(bert, setup.head),
                                    encoder_params={k: v for k, v in setup.encoder_params.items() if k in keep})
    return config, setup


def split_instances(config, setup, split: str) -> list:
    """All NER instances of `split`, in the split's order."""
    from lai_jax import input_pipeline as ip

    return ip.make_instances(setup.featurizer, "ner", ip.load_docs(config, split, setup.labels))


def load_batch(config, setup, batch: int, split: str = "dev", seed: int = 0):
    """A batch of `batch` real instances of `split` (a seeded draw without replacement) and all instances."""
    from lai_jax.input_pipeline import stack

    instances = split_instances(config, setup, split)
    order = np.random.default_rng(seed).permutation(len(instances))
    chosen = [instances[i] for i in sorted(order[:batch])]
    return stack(chosen, batch), instances


def fractions(batch: dict) -> tuple[float, float]:
    """(non-PAD tokens / all tokens, filled candidate slots / all slots) of a stacked batch."""
    from lai_jax.data import masks

    return float(np.mean(batch["token_groups"] != masks.PAD)), float(np.mean(batch["cand_mask"]))


def split_fractions(instances: Sequence) -> tuple[float, float]:
    """`fractions` over every instance of a split."""
    return fractions({k: np.stack([i.arrays[k] for i in instances]) for k in ("token_groups", "cand_mask")})
