"""Predict entities (and relations) on new text with trained NER (and RE) workdirs.

    python -m lai_jax.predict --ner=runs/quick/ner --re=runs/quick/re --input=news.txt --output=pred.jsonl
    echo "John Smith works for Acme Corp in Boston." | python -m lai_jax.predict --ner=runs/quick/ner --input=- --output=-
    python -m lai_jax.predict --ner=runs/scierc_ner --re=runs/scierc_re --input=data/scierc/test.json --output=-

Input (``--format=auto`` picks by the first non-blank character of the input):

* ``text``: one document per line (UTF-8; a BOM and a trailing CR are ignored). Sentences are split and
  words tokenised by :mod:`lai_jax.text`. Blank lines (whitespace only) are skipped but keep their
  number: every *non-blank* line gives exactly one output object, carrying its 1-based ``"line"``.
* ``pure``: PURE/DyGIE JSONL, one document per line (``doc_key``, ``sentences``), or a JSON list of
  such documents. Chosen by auto when the input starts with '{'.
* ``spert``: a SpERT JSON list of sentences (``tokens``, optional ``orig_id``); each sentence is a
  document with doc_key ``<file stem>:<orig_id or index>`` (stem ``stdin`` for ``-``). Chosen by auto
  when the input starts with '[' (a list whose first item has ``sentences`` is read as PURE).

Gold annotations in JSON input (``ner``/``relations``/``entities``) are ignored, not even validated. Text
that starts with '{' or '[' needs ``--format=text``. Malformed input stops the run with a message naming
the file and line (or item) and exit status 2; nothing is skipped silently.

Output: JSON lines, one object per document, in input order::

    {"line": 3,                      # text input; JSON input has "doc_key" instead
     "tokens": [["John", "Smith", "works", ...], ...],          # words per sentence
     "entities": [{"sentence": 0, "start": 0, "end": 1,        # word indices in the sentence, end inclusive
                   "type": "Peop", "score": 0.97,              # type probability (decoding.decode_ner)
                   "char_start": 0, "char_end": 10,            # text input only: offsets into the line,
                   "text": "John Smith"}, ...],                # end exclusive; text = line[char_start:char_end]
     "relations": [{"sentence": 0, "head": 0, "tail": 1,       # indices into "entities"
                    "type": "Work_For", "score": 0.88}, ...]}  # only with --re

For JSON input ``text`` is the span's words joined by single spaces. Character offsets count Unicode code
points (Python string indices), not bytes. Entities are listed by sentence, then (start, end).

Long sentences: the featurizer's windows serve prediction as they serve training and evaluation
(:mod:`lai_jax.data.features`). A sentence whose wordpieces exceed ``max_text_len`` is cut into
overlapping windows of whole words that together hold every candidate span of at most ``max_span_len``
words, each span scored exactly once (in the window where it is most central), so no word and no span is
dropped and decoding is the one of an ordinary sentence. An entity pair is classified in a window of each
entity's that holds both; a pair whose words from one entity to the other exceed ``max_text_len`` gets no
relation. A single word with more wordpieces than the budget (a long URL or hash) is shown to the model
by its first ``max_text_len`` wordpieces; the output keeps the whole word.

Several sentences in one document: the model sees them as it was trained. A run trained on single-sentence
documents (CoNLL04, ADE) gets each sentence alone, so a line of several sentences gives the same entities
and relations as the same sentences one per line; a run trained on multi-sentence documents (SciERC) gets
each sentence in the context of its neighbours (:mod:`lai_jax.extractor`, which this command is a thin
layer over; ``from lai_jax import Extractor`` is the same in Python).
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from lai_jax.data.documents import DataError
from lai_jax.extractor import Extractor, check_workdir, document_json
from lai_jax.predict_input import FORMATS, InputDoc, PredictError, read_input

__all__ = ["predict_documents", "document_json", "run", "main"]

log = logging.getLogger("lai_jax")


# ---------------------------------------------------------------------------------------------- running
def predict_documents(inputs: Sequence[InputDoc], ner_workdir: str, re_workdir: Optional[str] = None,
                      batch_size: Optional[int] = None) -> list[dict]:
    """Run NER (and RE) on the documents; one output object per input document, in order (`Extractor`)."""
    check_workdir(ner_workdir, "ner")
    if re_workdir:
        check_workdir(re_workdir, "re")
    if not any(s.words for inp in inputs for s in inp.doc.sentences):  # nothing to predict: no model is loaded
        return [document_json(inp, [[] for _ in inp.doc.sentences], [[] for _ in inp.doc.sentences]
                              if re_workdir else None) for inp in inputs]
    return Extractor.load(ner_workdir, re_workdir or None, batch_size).predict_inputs(inputs)


def check_output(path: str) -> None:
    """Fail before any model runs if `path` cannot be written (its folder is created if missing)."""
    if path == "-":
        return
    p = Path(path)
    if p.is_dir():
        raise PredictError(f"--output={path} is a directory; give a file name")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PredictError(f"--output={path}: cannot create {p.parent}: {e.strerror or e}") from None
    if not os.access(p.parent, os.W_OK):
        raise PredictError(f"--output={path}: folder {p.parent} is not writable")


def write_jsonl(path: str, objects: Sequence[dict]) -> None:
    """UTF-8 JSON lines to `path` (written whole, then renamed into place) or to stdout ('-')."""
    lines = "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects)
    if path == "-":
        try:
            sys.stdout.buffer.write(lines.encode("utf-8"))
            sys.stdout.flush()
        except BrokenPipeError:  # e.g. `| head`: the reader has gone, nothing left to report
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    try:
        tmp.write_text(lines, encoding="utf-8")
        os.replace(tmp, p)
    except OSError as e:
        raise PredictError(f"--output={path}: cannot write: {e.strerror or e}") from None


def run(ner_workdir: str, re_workdir: Optional[str], input_path: str, output_path: str, fmt: str = "auto",
        batch_size: Optional[int] = None) -> int:
    """The CLI without flag parsing: returns the exit status (2 on bad input, workdirs or output path)."""
    try:
        if batch_size is not None and batch_size < 1:
            raise PredictError(f"--batch-size must be positive, got {batch_size}")
        check_output(output_path)
        inputs = read_input(input_path, fmt)  # input errors first: they need no model
        if not inputs:
            log.warning("%s: no documents (empty input)", "<stdin>" if input_path == "-" else input_path)
        objects = predict_documents(inputs, ner_workdir, re_workdir, batch_size)
        write_jsonl(output_path, objects)
    except (DataError, PredictError) as e:
        print(f"lai_jax.predict: error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


def main(argv):
    from absl import flags
    if len(argv) > 1:
        from absl import app
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from lai_jax.cli import setup_logging
    setup_logging()  # progress on stderr: stdout may carry the predictions
    F = flags.FLAGS
    return run(F.ner, F.re, F.input, F.output, F.format, F["batch-size"].value)


def define_flags() -> None:
    from absl import flags
    flags.DEFINE_string("ner", None, "NER training workdir (config.json + checkpoints/); its best checkpoint "
                                     "predicts the entities.", required=True)
    flags.DEFINE_string("re", None, "RE training workdir; its best checkpoint predicts relations between the "
                                    "predicted entities. Leave out to predict entities only.")
    flags.DEFINE_string("input", None, "Input file, or - for stdin: plain text (one document per line), PURE "
                                       "JSONL or SpERT JSON.", required=True)
    flags.DEFINE_string("output", None, "Output JSONL file (one object per document), or - for stdout.",
                        required=True)
    flags.DEFINE_enum("format", "auto", list(FORMATS), "Input format; auto: '{' = PURE JSONL, '[' = SpERT "
                                                       "(or PURE) JSON list, anything else = text.")
    flags.DEFINE_integer("batch-size", None, "Per-device evaluation batch size for both phases (default: each "
                                             "workdir's per_device_eval_batch_size).")


if __name__ == "__main__":
    from absl import app
    define_flags()
    app.run(main)
