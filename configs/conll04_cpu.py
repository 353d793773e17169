"""All of CoNLL04 on a 2-core CPU with the packaged MiniLM encoder: NER then end-to-end RE in about 45 minutes.

    bash launch/conll04_cpu.sh            # both phases; prints NER / RE / RE+ on dev and test

The model is the full LAI-Net (annotations, partial attention, G4CN, entity filter with cold start); what
makes it fit a CPU is the shapes: spans of at most 4 words (98.3 % of CoNLL04's training entities), up to
128 candidates per instance (one instance for most sentences), batch shapes so a batch computes on its
own slots and length rather than the fullest sentence's, and a short schedule with a higher encoder learning rate.
"""
from lai_jax.config_base import base_config


def get_config(phase: str = "ner"):
    c = base_config("conll04", phase)
    c.encoder = "default"  # packaged MiniLM-L6 (6 layers, hidden 384)
    c.max_text_len = 100  # sentences come without document context
    c.max_span_len = 4
    c.max_candidates = 128
    c.max_objects = 8
    c.num_buckets = 3
    c.model.gcn_layers = 1
    c.batch_size = 8 if phase == "ner" else 16
    c.per_device_eval_batch_size = 32
    c.num_epochs = 4
    c.cold_start_epochs = 1 if phase == "ner" else 0
    c.optim.learning_rate = 2e-3
    c.optim.encoder_learning_rate = 1e-4
    c.optim.warmup_ratio = 0.05
    c.ner.filter_threshold = 0.3  # as configs/quick.py (chosen there on dev)
    c.re.threshold = 0.3
    c.eval_every_epochs = 2
    c.log_every_steps = 20
    return c
