"""Predictions files: PURE JSONL with the decoding settings beside them, and the check that dev and test agree."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

from lai_jax.cli import UserError
from lai_jax.config_base import RUN_REFERENCES, get_field, stored_reference
from lai_jax.data.documents import Document

log = logging.getLogger("lai_jax")


# Config fields that decide what a phase's predictions file holds besides the checkpoint (see `write_predictions`).
PREDICTION_FIELDS = {"ner": ("model.use_filter", "ner.filter_threshold", "ner.overlap"),
                     "re": ("re.entities_from", "re.re_decode", "re.threshold", "re.type_constraints")}


def prediction_settings(config, checkpoint_step: Optional[int], workdir: Optional[Path] = None) -> dict:
    """The settings recorded with a predictions file: phase, checkpoint step and the phase's decoding fields.

    Run references (`re.entities_from`) are recorded relative to `workdir` when given, as config.json has them,
    so that the files of runs moved together still agree.
    """
    out: dict[str, Any] = {"phase": config.phase, "checkpoint_step": checkpoint_step}
    for key in PREDICTION_FIELDS[config.phase]:
        value = get_field(config, key)
        out[key] = stored_reference(value, workdir) if key in RUN_REFERENCES and workdir is not None else value
    return out


def settings_path(path: Path) -> Path:
    """predictions/<split>.jsonl -> predictions/<split>.settings.json"""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".jsonl") + ".settings.json")


def write_predictions(path: Path, docs: list[Document], settings: Optional[dict] = None) -> None:
    """PURE JSONL predictions, and `settings` (`prediction_settings`) beside them in <split>.settings.json."""
    path.parent.mkdir(parents=True, exist_ok=True)
    side = settings_path(path)
    side.unlink(missing_ok=True)  # no stale settings for new predictions, even if this write is cut short
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for doc in docs:
            f.write(json.dumps(doc.to_pure()) + "\n")
    tmp.replace(path)
    if settings is not None:
        tmp = side.with_name(side.name + ".tmp")
        tmp.write_text(json.dumps(settings, indent=2, sort_keys=True))
        tmp.replace(side)


def check_prediction_settings(paths: Sequence[Path]) -> None:
    """Refuse predictions files (one run's dev and test) written with different settings.

    End-to-end RE reads the entities of both; had one been rewritten with, say, another filter threshold, dev
    would select and test would report on entities made differently. Files not written yet are skipped; a
    file without its settings (written before they were recorded) gets a warning, as it cannot be checked.
    """
    known = []
    for path in map(Path, paths):
        if not path.exists():
            continue
        side = settings_path(path)
        if not side.exists():
            log.warning("%s has no %s (written before settings were recorded): cannot check that it was decoded "
                        "like %s; rewrite it with `python -m lai_jax.evaluate --write`", path, side.name,
                        " and ".join(str(p) for p in paths if Path(p) != path))
            continue
        known.append((path, json.loads(side.read_text(encoding="utf-8"))))
    for path, settings in known[1:]:
        first, ref = known[0]
        diff = sorted(k for k in set(ref) | set(settings) if ref.get(k, "<unset>") != settings.get(k, "<unset>"))
        if diff:
            detail = "; ".join(f"{k}: {ref.get(k, '<unset>')!r} in {first.name}, {settings.get(k, '<unset>')!r} in "
                               f"{path.name}" for k in diff)
            raise UserError(f"{first} and {path} were written with different settings ({detail}), so dev and "
                            f"test would be scored on entities decoded differently. Rewrite both with the same "
                            f"settings: python -m lai_jax.evaluate --workdir={first.parent.parent} --split=<split> "
                            f"[--set=FIELD=VALUE ...] --write for each split.")
