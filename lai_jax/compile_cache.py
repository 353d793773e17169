"""JAX's persistent compilation cache for lai-jax commands (config field `compile_cache`).

A BERT-base train step takes tens of seconds to compile, and each phase compiles one train and one eval
executable per batch shape; reruns, resumes, seeds, `evaluate` and `predict` compile the same programs
again. With the cache they load them from disk instead. XLA's cache key covers the program, the devices,
the compile options and the jax/XLA versions, so a changed model or setup compiles anew.

    compile_cache = ""       $LAI_JAX_COMPILE_CACHE, else $XDG_CACHE_HOME/lai_jax/jax_cache (~/.cache/...)
    compile_cache = "off"    no persistent cache
    compile_cache = "/path"  that folder

Only programs that took at least `jax_persistent_cache_min_compile_time_secs` (JAX's default: 1 s) are written;
tiny ones are faster to compile than to load.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import jax
from jax.experimental.compilation_cache import compilation_cache

log = logging.getLogger("lai_jax")

OFF = "off"


def cache_dir(setting: str) -> Optional[Path]:
    """The folder `compile_cache` names (see the module docstring), None when off."""
    setting = setting or os.environ.get("LAI_JAX_COMPILE_CACHE", "")
    if setting.lower() == OFF:
        return None
    if setting:
        return Path(setting).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lai_jax" / "jax_cache"


def enable(setting: str) -> Optional[Path]:
    """Point JAX's persistent compilation cache at the folder `setting` names (or turn it off); returns it.

    JAX opens its cache at the first compile of the process; a different folder than the one in use resets
    that, so the setting takes effect wherever in a process it is made (tests, notebooks).
    """
    path = cache_dir(setting)
    wanted = str(path) if path is not None else None
    if jax.config.jax_compilation_cache_dir == wanted:
        return path
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", wanted)
    compilation_cache.reset_cache()
    log.debug("persistent compilation cache: %s", wanted or "off")
    return path
