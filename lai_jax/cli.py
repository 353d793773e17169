"""Shared bits of the command-line entry points."""
from __future__ import annotations

import logging
import re

from absl import logging as absl_logging

# (logger, message pattern) of library lines that are noise for lai-jax's commands:
# - transformers says at import that without torch only tokenizers work: lai-jax needs nothing more;
# - tfds (through absl) notes a dataset folder without dataset_info.json just before it builds one there.
_NOISE = (
    ("transformers", re.compile(r"PyTorch was not found\b")),
    ("absl", re.compile(r"Variant folder .* has no ")),
)


class _DropMatching(logging.Filter):
    """Drops the records whose message matches `pattern`."""

    def __init__(self, pattern: re.Pattern[str]):
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


def silence_library_noise() -> None:
    """Filters the `_NOISE` lines out of their libraries' loggers (idempotent).

    Takes effect for lines logged afterwards: call it before transformers is first imported, which lai-jax
    does lazily (`lai_jax.pretrained.load_tokenizer`). tfds' build banners are prints, handled by the
    builders (`lai_jax.data.tfds_builders`).
    """
    for name, pattern in _NOISE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMatching) and f.pattern is pattern for f in logger.filters):
            logger.addFilter(_DropMatching(pattern))


def setup_logging() -> None:
    """Our progress at INFO on stderr; library chatter (orbax, absl) only from WARNING up, known noise not at all."""
    absl_logging.set_verbosity(absl_logging.WARNING)
    silence_library_noise()
    log = logging.getLogger("lai_jax")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
