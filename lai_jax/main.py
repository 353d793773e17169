"""Train and evaluate one phase.

    python -m lai_jax.main --config=configs/scierc.py:ner --workdir=runs/scierc_ner
    python -m lai_jax.main --config=configs/scierc.py:re --workdir=runs/scierc_re --config.re.entities_from=runs/scierc_ner

Any config field can be overridden: --config.model.gcn_layers=3 --config.attention_mask=full
"""
from __future__ import annotations

import logging

import jax
from absl import app, flags
from ml_collections import config_flags

from lai_jax import train
from lai_jax.cli import setup_logging
from lai_jax.pretrained import EncoderNotFoundError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file and phase, e.g. configs/scierc.py:ner.", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics, predictions and results go (resumes if present).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    setup_logging()
    if FLAGS.config.distributed:
        jax.distributed.initialize()
    logging.getLogger("lai_jax").info("JAX process %d/%d, local devices: %s", jax.process_index(), jax.process_count(), jax.local_devices())
    try:
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except train.NonFiniteLoss as e:  # the message names the step; checkpoints up to the last good one stay
        raise SystemExit(f"error: {e}")
    except EncoderNotFoundError as e:  # the message says how to pass a local folder or the packaged encoder
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    app.run(main)
