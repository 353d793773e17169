"""Shared bits of the command-line entry points."""
from __future__ import annotations

import logging

from absl import logging as absl_logging


def setup_logging() -> None:
    """Our progress at INFO on stderr; library chatter (orbax, absl) only from WARNING up."""
    absl_logging.set_verbosity(absl_logging.WARNING)
    log = logging.getLogger("lai_jax")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
