"""CoNLL04 (SpERT split; not in the paper): the packaged encoder and the base defaults (the paper's epochs,
learning rates and SciERC's cold start; SciERC's per-GPU batch on one device).

    python -m lai_jax.main --config=configs/conll04.py:ner --workdir=runs/conll04_ner
"""
from lai_jax.config_base import base_config


def get_config(phase: str = "ner"):
    c = base_config("conll04", phase)
    c.max_text_len = 100  # sentences come without document context
    c.batch_size = 16 if phase == "ner" else 40  # what one device ran before the global batch_size field
    c.cold_start_epochs = 40 if phase == "ner" else 0
    return c
