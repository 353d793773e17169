"""SciERC (paper: scibert-scivocab-uncased encoder).

    python -m lai_jax.main --config=configs/scierc.py:ner --workdir=runs/scierc_ner
    python -m lai_jax.main --config=configs/scierc.py:re --workdir=runs/scierc_re \
        --config.re.entities_from=runs/scierc_ner

Pass --config.encoder=/path/to/scibert_scivocab_uncased (or the hub name, with network) for the paper's encoder.
"""
from lai_jax.config_base import base_config


def get_config(phase: str = "ner"):
    c = base_config("scierc", phase)
    c.max_text_len = 150  # paper, SciERC
    c.max_objects = 16  # PL-Marker, SciERC
    c.per_device_batch_size = 16 if phase == "ner" else 40  # paper
    c.cold_start_epochs = 40 if phase == "ner" else 0  # paper
    return c
