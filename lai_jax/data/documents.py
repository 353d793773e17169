"""The one document type every reader produces and every later stage consumes.

Offsets are sentence-level word indices with an *inclusive* end, whatever the source format used.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from lai_jax.cli import UserError


class DataError(UserError):
    """Malformed input. The message always names the file, the line or document, and the field."""

    def __init__(self, path: str, where: str, field: str, message: str):
        self.path, self.where, self.field = str(path), where, field
        super().__init__(f"{path}: {where}: field '{field}': {message}")


@dataclasses.dataclass(frozen=True)
class Entity:
    start: int  # first word, sentence-level
    end: int  # last word, inclusive
    type: str
    # Model confidence (predictions only); not part of equality, so metrics compare spans and types alone.
    score: Optional[float] = dataclasses.field(default=None, compare=False)

    @property
    def span(self) -> tuple[int, int]:
        return (self.start, self.end)


@dataclasses.dataclass(frozen=True)
class Relation:
    head: tuple[int, int]  # subject span (start, end inclusive), sentence-level
    tail: tuple[int, int]  # object span
    type: str
    score: Optional[float] = dataclasses.field(default=None, compare=False)  # as `Entity.score`


@dataclasses.dataclass
class Sentence:
    words: list[str]
    entities: list[Entity] = dataclasses.field(default_factory=list)
    relations: list[Relation] = dataclasses.field(default_factory=list)
    # Character offsets of each word in the source text (prediction on raw text only).
    char_spans: Optional[list[tuple[int, int]]] = None


@dataclasses.dataclass
class Document:
    doc_key: str
    sentences: list[Sentence]
    text: Optional[str] = None  # the raw text, when the document came from plain text

    def to_pure(self) -> dict:
        """Serialise to PURE/DyGIE JSON (document-level offsets, inclusive ends).

        Scores, where the items carry them, go in parallel lists "ner_scores" / "relation_scores" (one number
        per item, null where unscored) so the PURE triples stay readable by other tools.
        """
        ner, rels, offset = [], [], 0
        for sent in self.sentences:
            ner.append([[e.start + offset, e.end + offset, e.type] for e in sent.entities])
            rels.append([[r.head[0] + offset, r.head[1] + offset, r.tail[0] + offset, r.tail[1] + offset, r.type]
                         for r in sent.relations])
            offset += len(sent.words)
        out = {"doc_key": self.doc_key, "sentences": [s.words for s in self.sentences], "ner": ner, "relations": rels}
        for key, field in (("ner_scores", "entities"), ("relation_scores", "relations")):
            items = [getattr(sent, field) for sent in self.sentences]
            if any(it.score is not None for its in items for it in its):
                out[key] = [[_round(it.score) for it in its] for its in items]
        return out


def _round(score: Optional[float]) -> Optional[float]:
    return None if score is None else round(float(score), 4)
