"""ACE05 (LDC licensed, never shipped): point data.dir at your PURE/DyGIE JSONL folder (train/dev/test.json).

    python -m lai_jax.main --config=configs/ace05.py:ner --config.data.dir=/data/ace05 --workdir=runs/ace05_ner
"""
from lai_jax.config_base import base_config


def get_config(phase: str = "ner"):
    c = base_config("ace05", phase)
    c.max_text_len = 150  # paper, ACE05
    c.max_objects = 32  # PL-Marker, ACE05
    c.per_device_batch_size = 20 if phase == "ner" else 50  # paper
    c.cold_start_epochs = 15 if phase == "ner" else 0  # paper
    return c
