"""Train and evaluate one phase.

    python -m lai_jax.main --config=configs/scierc.py:ner --workdir=runs/scierc_ner
    python -m lai_jax.main --config=configs/scierc.py:re --workdir=runs/scierc_re --config.re.entities_from=runs/scierc_ner

Any config field can be overridden: --config.model.gcn_layers=3 --config.attention_mask=full

Rerunning the command resumes the workdir from its latest checkpoint; a workdir saved with a different config is
refused (--resume=force continues it anyway). A mistake in flags, values, files or data prints one `error:` line
and exits with status 2 before anything is written (LAI_JAX_DEBUG=1 shows the traceback).
"""
from __future__ import annotations

import logging

import jax
from absl import flags
from ml_collections import config_flags

from lai_jax import cli, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file and phase, e.g. configs/scierc.py:ner.", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics, predictions and results go (resumes if present).")
flags.DEFINE_enum("resume", "auto", list(train.RESUME_MODES), "auto: resume a workdir whose config.json matches the "
                  "config (refuse one that differs); force: resume it with the new config anyway.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    cli.setup_logging()
    if FLAGS.config.distributed:
        jax.distributed.initialize()
    logging.getLogger("lai_jax").info("JAX process %d/%d, local devices: %s", jax.process_index(), jax.process_count(), jax.local_devices())
    try:
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir, FLAGS.resume)
    except train.NonFiniteLoss as e:  # the message names the step; checkpoints up to the last good one stay
        cli.fail(e)


if __name__ == "__main__":
    cli.run(main)
