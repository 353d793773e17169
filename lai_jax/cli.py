"""Shared bits of the command-line entry points."""
from __future__ import annotations

import difflib
import functools
import logging
import os
import re
import sys
from typing import Any, Callable, NoReturn, Optional, Sequence

from absl import app, flags
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


# ---------------------------------------------------------------------------------------------- errors
DEBUG_ENV = "LAI_JAX_DEBUG"  # set to 1 to see the traceback behind an `error:` line


class UserError(ValueError):
    """A mistake in what the user gave (a flag, a value, a file, a folder): one `error:` line, exit status 2.

    The message says what is wrong, where, and how to fix it. A ValueError, so library callers may catch it as one.
    """


# What the commands report as one line: the user's mistakes, and files or folders that are not there.
USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError)


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def fail(message: object) -> NoReturn:
    """Print `error: message` on stderr, as one line, and exit with status 2."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr, flush=True)
    raise SystemExit(2)


def reporting_user_errors(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
    """`main` with `USER_ERRORS` turned into one `error:` line and exit status 2 (the traceback with LAI_JAX_DEBUG=1)."""

    @functools.wraps(main)
    def wrapped(argv: list[str]) -> Any:
        try:
            return main(argv)
        except USER_ERRORS as e:
            if debugging():
                raise
            fail(e)

    return wrapped


def _config_value(argv: Sequence[str], name: str) -> Optional[str]:
    """The value of `--<name>=VALUE` or `--<name> VALUE` in argv (the last one given), else None."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            value = arg.partition("=")[2]
        elif arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def _unknown_field(argv: Sequence[str], config: Any) -> Optional[str]:
    """A message naming the first `--config.FIELD=...` whose FIELD is not in `config`, with close matches."""
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        path = arg[len("--config."):].partition("=")[0]
        node, seen = config, []
        for part in path.split("."):
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if part not in keys:
                near = difflib.get_close_matches(part, keys, n=3)
                hint = f"; did you mean {' or '.join('.'.join([*seen, k]) for k in near)}?" if near else ""
                where = f" in {'.'.join(seen)}" if seen else ""
                return (f"{arg}: unknown config field {'.'.join([*seen, part])!r}{where}{hint} "
                        "(every field and its default: lai_jax/config_base.py)")
            node, seen = node[part], [*seen, part]
    return None


_EXCEPTION_NAME = re.compile(r"^[\w.]*(Error|Exception): ")  # "lai_jax.cli.UserError: " before a message


def _flag_message(argv: Sequence[str], error: BaseException) -> str:
    """One line for a flag-parsing failure: absl's own message, or the failing config field or file."""
    config_arg = _config_value(argv, "config")
    if config_arg is not None:
        path = config_arg.split(":", 1)[0]
        if not os.path.isfile(path):
            return f"--config={config_arg}: config file {path!r} not found (e.g. --config=configs/quick.py:ner)"
    if isinstance(error, (AttributeError, KeyError)) and config_arg is not None:  # an unknown --config.FIELD
        from lai_jax.config_base import load_config_file  # (config_base imports this module)
        path, _, phase = config_arg.partition(":")
        message = _unknown_field(argv, load_config_file(path, phase or None))
        if message:
            return message
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1:  # config_flags wraps a config file's exception with its whole traceback: keep its last line
        return f"--config={config_arg}: " + _EXCEPTION_NAME.sub("", lines[-1])
    return lines[0] if lines else type(error).__name__


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing (`app.run(..., flags_parser=parse_flags)`) with each failure as one `error:` line.

    Config files load while flags are parsed (`config_flags`), and some of their errors surface only when the
    config is first read: that happens here too, so `main` starts from a loaded config.
    """
    try:
        rest = flags.FLAGS(argv)
        if "config" in flags.FLAGS and flags.FLAGS["config"].present:
            getattr(flags.FLAGS.config, "keys")  # raises the deferred error of a config file that did not load
        return rest
    except Exception as e:  # any failure here comes from the command line (or the config file it names)
        if debugging():
            raise
        fail(_flag_message(argv, e))


def run(main: Callable[[list[str]], Any]) -> None:
    """`absl.app.run(main)` with one-line errors, for flags (`parse_flags`) and in `main` (`USER_ERRORS`)."""
    app.run(reporting_user_errors(main), flags_parser=parse_flags)
