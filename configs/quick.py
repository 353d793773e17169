"""A CPU-sized run on CoNLL04 with the packaged encoder: train NER, then RE on its predictions.

    python -m lai_jax.main --config=configs/quick.py:ner --workdir=runs/quick_ner
    python -m lai_jax.main --config=configs/quick.py:re --workdir=runs/quick_re --config.re.entities_from=runs/quick_ner

The shapes are shrunk (fewer candidate slots, shorter spans) so a laptop CPU finishes in minutes; the
model is the full LAI-Net (annotations, partial attention, G4CN, filter, cold start).
"""
from lai_jax.config_base import base_config


def get_config(phase: str = "ner"):
    c = base_config("conll04", phase)
    c.encoder = "default"  # packaged MiniLM-L6 (6 layers, hidden 384)
    c.data.train_limit = 400  # sentences
    c.data.eval_limit = 100
    c.max_text_len = 64
    c.max_span_len = 5  # 99% of CoNLL04 entities are <= 5 words
    c.max_candidates = 96
    c.max_objects = 8
    c.model.gcn_layers = 1
    c.per_device_batch_size = 8 if phase == "ner" else 16
    c.per_device_eval_batch_size = 32
    c.num_epochs = 6 if phase == "ner" else 6
    c.cold_start_epochs = 2 if phase == "ner" else 0
    c.optim.learning_rate = 1e-3
    c.optim.encoder_learning_rate = 1e-4
    c.log_every_steps = 5
    return c
