"""`lai_jax.predict`'s input: plain text, PURE JSONL or SpERT JSON as documents (formats: see `lai_jax.predict`)."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from lai_jax import text as text_lib
from lai_jax.data.documents import DataError, Document, Sentence

FORMATS = ("auto", "text", "pure", "spert")
GOLD_KEYS = ("ner", "relations", "ner_scores", "relation_scores", "predicted_ner", "predicted_relations",
             "entities", "clusters", "events")


class PredictError(Exception):
    """A usage problem the CLI reports in one line (exit status 2)."""


# ------------------------------------------------------------------------------------------------ input
@dataclasses.dataclass
class InputDoc:
    key: dict[str, Any]  # {"line": n} for text input, {"doc_key": k} for JSON input
    doc: Document  # words per sentence; for text also char_spans and text (the line)


def text_document(line: str, doc_key: str) -> Document:
    """One line of text as a Document with the character span of every word (possibly no sentences)."""
    sentences = [Sentence([w.text for w in sent], char_spans=[(w.start, w.end) for w in sent])
                 for sent in text_lib.split_sentences(line)]
    return Document(doc_key, sentences, text=line)


def _read_source(path: str) -> tuple[str, str]:
    """(display name, decoded text) of a file or of stdin ('-')."""
    if path == "-":
        name, raw = "<stdin>", sys.stdin.buffer.read()
    else:
        p = Path(path)
        name = str(p)
        if not p.exists():
            raise DataError(name, "file", "path", "file not found")
        if not p.is_file():
            raise DataError(name, "file", "path", "not a regular file")
        try:
            raw = p.read_bytes()
        except OSError as e:
            raise DataError(name, "file", "path", f"cannot read: {e.strerror or e}") from None
    try:
        return name, raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(name, f"line {line}", "encoding", f"not UTF-8 (byte {e.start}: {e.reason})") from None


def sniff_format(content: str) -> str:
    """auto's choice by the first non-blank character: '{' PURE JSONL, '[' SpERT (or PURE) JSON list, else text."""
    first = content.lstrip()[:1]
    if first == "{":
        return "pure"
    if first == "[":
        return "spert"
    return "text"


def _strip_gold(obj: Any) -> Any:
    return {k: v for k, v in obj.items() if k not in GOLD_KEYS} if isinstance(obj, dict) else obj


def _json_error(name: str, e: json.JSONDecodeError, where: str, hint: str) -> DataError:
    return DataError(name, where, "json", f"invalid JSON: {e.msg} (column {e.colno}){hint}")


def parse_input(content: str, name: str, fmt: str = "auto") -> list[InputDoc]:
    """Documents of an input's text (see the module docstring); raises DataError naming file and line."""
    from lai_jax.data.readers import document_from_pure, sentence_from_spert
    if fmt not in FORMATS:
        raise PredictError(f"unknown --format {fmt!r}: expected one of {', '.join(FORMATS)}")
    auto = fmt == "auto"
    if auto:
        fmt = sniff_format(content)
    hint = (f"; detected as {fmt.upper() if fmt == 'pure' else 'SpERT'} JSON from the first character, "
            "pass --format=text for plain text") if auto else ""
    out: list[InputDoc] = []
    if fmt == "text":
        for n, line in enumerate(content.split("\n"), start=1):
            line = line[:-1] if line.endswith("\r") else line
            if line.strip():
                out.append(InputDoc({"line": n}, text_document(line, f"line{n}")))
        return out
    if content.lstrip().startswith("["):  # a JSON list: SpERT sentences or PURE documents
        try:
            data = json.loads(content)
        except json.JSONDecodeError as e:
            raise _json_error(name, e, f"line {e.lineno}", hint) from None
        if not isinstance(data, list):
            raise DataError(name, "file", "<top level>", f"expected a JSON list, got {type(data).__name__}{hint}")
        if fmt == "spert" and data and isinstance(data[0], dict) and "sentences" in data[0] and "tokens" not in data[0]:
            fmt = "pure" if auto else fmt
        stem = "stdin" if name == "<stdin>" else Path(name).stem
        for i, obj in enumerate(data):
            if fmt == "pure":
                doc = document_from_pure(_strip_gold(obj), source=name, where=f"document {i}",
                                         require_annotations=False)
                out.append(InputDoc({"doc_key": doc.doc_key}, doc))
                continue
            orig_id = obj.get("orig_id") if isinstance(obj, dict) else None
            where = f"sentence {i} (orig_id {orig_id})" if orig_id is not None else f"sentence {i}"
            sent = sentence_from_spert(_strip_gold(obj), source=name, where=where, require_annotations=False)
            key = f"{stem}:{orig_id if orig_id is not None else i}"
            out.append(InputDoc({"doc_key": key}, Document(key, [sent])))
        return out
    if fmt == "spert":
        first = content.lstrip()[:1]
        raise DataError(name, "line 1", "format", f"SpERT input must be a JSON list (starting with '['), "
                                                  f"found {first!r}")
    for n, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise _json_error(name, e, where, hint) from None
        doc = document_from_pure(_strip_gold(obj), source=name, where=where, require_annotations=False)
        out.append(InputDoc({"doc_key": doc.doc_key}, doc))
    return out


def read_input(path: str, fmt: str = "auto") -> list[InputDoc]:
    """Documents of a file or of stdin ('-'); raises DataError naming file and line."""
    name, content = _read_source(path)
    return parse_input(content, name, fmt)
