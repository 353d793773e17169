"""ADE, 10-fold cross-validation (SpERT split); macro F1 is the headline metric.

    python -m lai_jax.main --config=configs/ade.py:ner --config.data.fold=3 --workdir=runs/ade3_ner
    python -m lai_jax.experiments --config=configs/ade.py --folds=0-9 --seeds=0 --workdir=runs/ade_cv  # mean ± std

ADE has no dev split: model selection uses `data.dev_holdout` of the training fold.
"""
from lai_jax.config_base import base_config


def get_config(phase: str = "ner"):
    c = base_config("ade", phase)
    c.max_text_len = 100  # paper, ADE
    c.data.dev_split = ""  # no dev split: hold out data.dev_holdout of train
    c.per_device_batch_size = 14 if phase == "ner" else 64  # paper
    c.cold_start_epochs = 40 if phase == "ner" else 0  # paper
    return c
