"""Readers for PURE/DyGIE JSONL and SpERT JSON into :class:`~lai_jax.data.documents.Document`.

Every check raises :class:`DataError` naming the file, the line (PURE) or sentence index and orig_id
(SpERT), and the field. Nothing is skipped or repaired silently: a malformed benchmark file would
otherwise shift the reported scores without anyone noticing.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

from lai_jax.data.documents import DataError, Document, Entity, Relation, Sentence
from lai_jax.data.labels import LabelSet

PathLike = Union[str, os.PathLike]

__all__ = ["read_pure", "read_spert", "read_documents", "document_from_pure", "sentence_from_spert",
           "detect_format"]


# ----------------------------------------------------------------------------------------------- helpers

def _read_text(path: Path) -> str:
    if not path.exists():
        raise DataError(path, "file", "path", "file not found")
    if not path.is_file():
        raise DataError(path, "file", "path", "not a regular file")
    try:
        # utf-8-sig drops a byte-order mark (as Windows editors write); CRLF line ends are whitespace to JSON
        # and split like LF by str.splitlines.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(path, "file", "encoding", f"not UTF-8: {e}") from None
    if not text.strip():
        # An empty data file is almost always a failed download or a wrong path, not an empty corpus.
        raise DataError(path, "file", "content", "file is empty (no documents)")
    return text


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)  # JSON true/false must not pass as 1/0


def _require(obj: dict, key: str, kind: type | tuple[type, ...], src: PathLike, where: str, field: str) -> Any:
    if key not in obj:
        raise DataError(src, where, field, "missing required key")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(src, where, field, f"expected {names}, got {type(value).__name__}: {_short(value)}")
    return value


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_type(kind: str, type_: Any, labels: Optional[LabelSet], src: PathLike, where: str, field: str) -> str:
    """A gold type must be one the label file lists: never mapped to "none" or dropped."""
    if not isinstance(type_, str) or not type_:
        raise DataError(src, where, field, f"{kind} type must be a non-empty string, got {_short(type_)}")
    if labels is not None:
        allowed = labels.entity_types if kind == "entity" else labels.relation_types
        if type_ not in allowed:
            where_from = f" in the label file {labels.source}" if labels.source else ""
            raise DataError(src, where, field, f"unknown {kind} type {type_!r}: not{where_from} "
                                               f"(known: {', '.join(allowed)})")
    return type_


def _words(tokens: Any, src: PathLike, where: str, field: str) -> list[str]:
    if not isinstance(tokens, list):
        raise DataError(src, where, field, f"expected a list of words, got {type(tokens).__name__}")
    if not tokens:
        raise DataError(src, where, field, "empty sentence (no words)")
    for j, w in enumerate(tokens):
        # An empty word has no wordpieces, so spans pointing at it could never be encoded.
        if not isinstance(w, str) or not w:
            raise DataError(src, where, f"{field}[{j}]", f"word must be a non-empty string, got {_short(w)}")
    return list(tokens)


# ----------------------------------------------------------------------------------------------- PURE

def _scores(obj: dict, key: str, items: list, src: PathLike, where: str) -> list[list[Optional[float]]]:
    """Optional per-item scores (predictions files: "ner_scores" / "relation_scores", parallel to `items`)."""
    if key not in obj:
        return [[None] * len(sent) if isinstance(sent, list) else [] for sent in items]
    value = obj[key]
    shape_ok = isinstance(value, list) and len(value) == len(items) and all(
        isinstance(v, list) and isinstance(it, list) and len(v) == len(it) for v, it in zip(value, items))
    if not shape_ok:
        base = {"ner_scores": "ner", "relation_scores": "relations"}[key]
        raise DataError(src, where, key, f"expected one list of scores per sentence, parallel to '{base}'")
    for i, sent in enumerate(value):
        for j, x in enumerate(sent):
            if x is not None and (not isinstance(x, (int, float)) or isinstance(x, bool)):
                raise DataError(src, where, f"{key}[{i}][{j}]", f"expected a number or null, got {_short(x)}")
    return [[None if x is None else float(x) for x in sent] for sent in value]


def document_from_pure(obj: Any, labels: Optional[LabelSet] = None, *, source: PathLike = "<memory>",
                       where: str = "document", require_annotations: bool = True) -> Document:
    """Convert one PURE/DyGIE JSON object (document-level, inclusive offsets) into a Document.

    ``source``/``where`` only label error messages (file and line, or dataset and record).
    With ``require_annotations=False`` a missing ``ner``/``relations`` means "no gold" (prediction input).
    """
    if not isinstance(obj, dict):
        raise DataError(source, where, "<document>", f"expected a JSON object, got {type(obj).__name__}")
    doc_key = _require(obj, "doc_key", (str, int), source, where, "doc_key")
    doc_key = str(doc_key)
    where = f"{where} (doc_key {doc_key!r})"
    sentences = _require(obj, "sentences", list, source, where, "sentences")
    if not sentences:
        raise DataError(source, where, "sentences", "document has no sentences")
    n_sent = len(sentences)

    def per_sentence(key: str) -> list:
        if key not in obj and not require_annotations:
            return [[] for _ in range(n_sent)]
        value = _require(obj, key, list, source, where, key)
        if len(value) != n_sent:
            raise DataError(source, where, key, f"has {len(value)} sentence lists but 'sentences' has {n_sent}")
        return value

    ner, rels = per_sentence("ner"), per_sentence("relations")
    ner_scores = _scores(obj, "ner_scores", ner, source, where)
    rel_scores = _scores(obj, "relation_scores", rels, source, where)

    words_all = [_words(s, source, where, f"sentences[{i}]") for i, s in enumerate(sentences)]
    starts = [0]
    for w in words_all:
        starts.append(starts[-1] + len(w))
    n_words = starts[-1]

    out: list[Sentence] = []
    for i, words in enumerate(words_all):
        lo, hi = starts[i], starts[i + 1] - 1  # document-level word range of sentence i (inclusive)
        if not isinstance(ner[i], list):
            raise DataError(source, where, f"ner[{i}]", f"expected a list, got {type(ner[i]).__name__}")
        if not isinstance(rels[i], list):
            raise DataError(source, where, f"relations[{i}]", f"expected a list, got {type(rels[i]).__name__}")
        entities: list[Entity] = []
        for j, item in enumerate(ner[i]):
            field = f"ner[{i}][{j}]"
            if not (isinstance(item, list) and len(item) == 3 and _is_int(item[0]) and _is_int(item[1])):
                raise DataError(source, where, field, f"expected [start, end, type], got {_short(item)}")
            s, e, t = item
            if s > e:
                raise DataError(source, where, field, f"reversed span: start {s} > end {e}")
            if s < 0 or e >= n_words:
                raise DataError(source, where, field,
                                f"offsets [{s}, {e}] out of range: document has {n_words} words (0..{n_words - 1})")
            if s < lo or e > hi:
                what = "spans a sentence boundary" if (lo <= s <= hi or lo <= e <= hi or s < lo <= hi < e) \
                    else "lies outside its sentence"
                raise DataError(source, where, field,
                                f"entity [{s}, {e}] {what}: sentence {i} covers words [{lo}, {hi}]")
            _check_type("entity", t, labels, source, where, field)
            entities.append(Entity(s - lo, e - lo, t, ner_scores[i][j]))
        spans = {ent.span for ent in entities}
        relations: list[Relation] = []
        for j, item in enumerate(rels[i]):
            field = f"relations[{i}][{j}]"
            if not (isinstance(item, list) and len(item) == 5 and all(_is_int(x) for x in item[:4])):
                raise DataError(source, where, field, f"expected [s1, e1, s2, e2, type], got {_short(item)}")
            head, tail = (item[0] - lo, item[1] - lo), (item[2] - lo, item[3] - lo)
            for role, span, raw in (("head", head, item[0:2]), ("tail", tail, item[2:4])):
                if span not in spans:
                    raise DataError(source, where, field,
                                    f"{role} {raw} is not an annotated entity of sentence {i} (see ner[{i}])")
            _check_type("relation", item[4], labels, source, where, field)
            relations.append(Relation(head, tail, item[4], rel_scores[i][j]))
        out.append(Sentence(words=words, entities=entities, relations=relations))
    return Document(doc_key=doc_key, sentences=out)


def read_pure(path: PathLike, labels: Optional[LabelSet] = None, *,
              require_annotations: bool = True) -> list[Document]:
    """Read PURE/DyGIE JSONL (one document a line). Keys other than the four used are ignored."""
    path = Path(path)
    docs: list[Document] = []
    keys: dict[str, int] = {}
    # Lines end at "\n" (a CR before it is dropped): str.splitlines would also cut at characters such as
    # U+2028 or U+0085, which JSON allows unescaped inside strings.
    for lineno, line in enumerate(_read_text(path).split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue  # blank lines (e.g. a trailing one) carry no document
        where = f"line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, where, "json", f"invalid JSON: {e.msg} (column {e.colno})") from None
        doc = document_from_pure(obj, labels, source=path, where=where, require_annotations=require_annotations)
        # doc_key identifies predictions and context; two documents sharing one would be conflated.
        if doc.doc_key in keys:
            raise DataError(path, f"{where} (doc_key {doc.doc_key!r})", "doc_key",
                            f"duplicate doc_key (first on line {keys[doc.doc_key]})")
        keys[doc.doc_key] = lineno
        docs.append(doc)
    return docs


# ----------------------------------------------------------------------------------------------- SpERT

def sentence_from_spert(obj: Any, labels: Optional[LabelSet] = None, *, source: PathLike = "<memory>",
                        where: str = "sentence", require_annotations: bool = True) -> Sentence:
    """Convert one SpERT sentence object (sentence-level, end exclusive) into a Sentence (end inclusive)."""
    if not isinstance(obj, dict):
        raise DataError(source, where, "<sentence>", f"expected a JSON object, got {type(obj).__name__}")
    words = _words(_require(obj, "tokens", list, source, where, "tokens"), source, where, "tokens")
    n = len(words)

    def listed(key: str) -> list:
        if key not in obj and not require_annotations:
            return []
        return _require(obj, key, list, source, where, key)

    entities: list[Entity] = []
    for j, item in enumerate(listed("entities")):
        field = f"entities[{j}]"
        if not isinstance(item, dict):
            raise DataError(source, where, field, f"expected an object, got {_short(item)}")
        s = _require(item, "start", int, source, where, f"{field}.start")
        e = _require(item, "end", int, source, where, f"{field}.end")
        t = _require(item, "type", str, source, where, f"{field}.type")
        if s >= e:
            raise DataError(source, where, field, f"reversed or empty span: start {s} >= end {e} (end is exclusive)")
        if s < 0 or e > n:
            raise DataError(source, where, field, f"offsets [{s}, {e}) out of range: sentence has {n} words")
        _check_type("entity", t, labels, source, where, f"{field}.type")
        entities.append(Entity(s, e - 1, t))

    relations: list[Relation] = []
    for j, item in enumerate(listed("relations")):
        field = f"relations[{j}]"
        if not isinstance(item, dict):
            raise DataError(source, where, field, f"expected an object, got {_short(item)}")
        args = []
        for role in ("head", "tail"):
            k = _require(item, role, int, source, where, f"{field}.{role}")
            if not 0 <= k < len(entities):
                raise DataError(source, where, f"{field}.{role}",
                                f"entity index {k} out of range: sentence has {len(entities)} entities")
            args.append(entities[k].span)
        t = _require(item, "type", str, source, where, f"{field}.type")
        _check_type("relation", t, labels, source, where, f"{field}.type")
        relations.append(Relation(args[0], args[1], t))
    return Sentence(words=words, entities=entities, relations=relations)


def read_spert(path: PathLike, labels: Optional[LabelSet] = None, *,
               require_annotations: bool = True) -> list[Document]:
    """Read SpERT JSON (a list of sentences); each sentence becomes a one-sentence Document.

    ``doc_key`` is ``f"{file stem}:{orig_id}"`` (or the 0-based index when ``orig_id`` is absent).
    """
    path = Path(path)
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(path, f"line {e.lineno}", "json", f"invalid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(data, list):
        raise DataError(path, "file", "<top level>", f"expected a JSON list of sentences, got {type(data).__name__}")
    if not data:
        raise DataError(path, "file", "<top level>", "empty list (no sentences)")
    docs: list[Document] = []
    keys: dict[str, int] = {}
    for i, obj in enumerate(data):
        orig_id = obj.get("orig_id") if isinstance(obj, dict) else None
        where = f"sentence {i} (orig_id {orig_id})" if orig_id is not None else f"sentence {i}"
        if orig_id is not None and (not isinstance(orig_id, (int, str)) or isinstance(orig_id, bool)):
            raise DataError(path, where, "orig_id", f"expected int or str, got {_short(orig_id)}")
        sent = sentence_from_spert(obj, labels, source=path, where=where, require_annotations=require_annotations)
        key = f"{path.stem}:{orig_id if orig_id is not None else i}"
        if key in keys:
            raise DataError(path, where, "orig_id", f"duplicate orig_id (first at sentence {keys[key]})")
        keys[key] = i
        docs.append(Document(doc_key=key, sentences=[sent]))
    return docs


# ----------------------------------------------------------------------------------------------- dispatch

def detect_format(path: PathLike) -> str:
    """'spert' if the file's first non-space character is '[', 'pure' if it is '{'."""
    path = Path(path)
    text = _read_text(path)
    first = text.lstrip()[:1]
    if first == "[":
        return "spert"
    if first == "{":
        return "pure"
    raise DataError(path, "line 1", "format", f"cannot detect format: starts with {first!r}, expected '[' (SpERT) "
                                               "or '{' (PURE JSONL)")


def read_documents(path: PathLike, labels: Optional[LabelSet] = None, format: str = "auto", *,
                   require_annotations: bool = True) -> list[Document]:
    """Read a PURE JSONL or SpERT JSON file; ``format`` is 'auto', 'pure' or 'spert'."""
    if format == "auto":
        format = detect_format(path)
    if format == "pure":
        return read_pure(path, labels, require_annotations=require_annotations)
    if format == "spert":
        return read_spert(path, labels, require_annotations=require_annotations)
    raise ValueError(f"unknown format {format!r}: expected 'auto', 'pure' or 'spert'")
