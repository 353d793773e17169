"""Entity/relation type inventories with their natural-language annotations (SPEC §2).

The annotations live in a per-dataset ``labels.json`` that users may edit::

    {"entities": {"GPE": "geography political entity", ...},
     "relations": {"PER-SOC": {"annotation": "person social", "symmetric": true}, ...}}

File order is the order of the annotation segment, so it is kept exactly. Top-level keys starting
with ``_`` (e.g. ``_comment``) are ignored; any other unknown key is an error because it is most
likely a typo that would otherwise silently drop labels.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from lai_jax.data.documents import DataError, Relation

PathLike = Union[str, os.PathLike]
Span = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class LabelSet:
    """Types and annotations of one dataset, in file order."""

    entity_types: tuple[str, ...]
    entity_annotations: tuple[str, ...]
    relation_types: tuple[str, ...]
    relation_annotations: tuple[str, ...]
    symmetric: tuple[bool, ...]  # per relation type: is it its own inverse?
    source: str = dataclasses.field(default="", compare=False)  # the file it was read from, for error messages

    def __post_init__(self):
        if len(self.entity_types) != len(self.entity_annotations):
            raise ValueError("entity_types and entity_annotations differ in length")
        if not (len(self.relation_types) == len(self.relation_annotations) == len(self.symmetric)):
            raise ValueError("relation_types, relation_annotations and symmetric differ in length")

    @property
    def num_entity_types(self) -> int:
        return len(self.entity_types)

    @property
    def num_relation_types(self) -> int:
        return len(self.relation_types)

    def entity_index(self) -> dict[str, int]:
        """Type -> position in the annotation segment (0-based; 'none' classes are the caller's business)."""
        return {t: i for i, t in enumerate(self.entity_types)}

    def relation_index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.relation_types)}

    def is_symmetric(self, relation_type: str) -> bool:
        return self.symmetric[self.relation_types.index(relation_type)]

    def to_json(self) -> dict[str, Any]:
        """Inverse of :func:`load_labels` (without comments)."""
        return {
            "entities": dict(zip(self.entity_types, self.entity_annotations)),
            "relations": {t: {"annotation": a, "symmetric": s}
                          for t, a, s in zip(self.relation_types, self.relation_annotations, self.symmetric)},
        }


def _pairs_no_duplicates(path: PathLike):
    # json.load keeps the last of duplicate keys; a duplicated type is almost surely an editing mistake.
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise DataError(path, "file", key, f"duplicate key {key!r}")
            seen[key] = value
        return seen
    return hook


def _annotation(path: PathLike, where: str, field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise DataError(path, where, field, f"annotation must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(path, where, field, "annotation is empty")
    return value.strip()


def load_labels(path: PathLike) -> LabelSet:
    """Read a ``labels.json``; raise :class:`DataError` naming the file and field on bad content."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file", "path", "file not found")
    try:
        # utf-8-sig: a byte-order mark (as Windows editors write) is not part of the JSON.
        obj = json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=_pairs_no_duplicates(path))
    except json.JSONDecodeError as e:
        raise DataError(path, f"line {e.lineno}", "json", f"invalid JSON: {e.msg} (column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise DataError(path, "file", "encoding", f"not UTF-8: {e}") from None
    if not isinstance(obj, dict):
        raise DataError(path, "file", "<top level>", f"expected a JSON object, got {type(obj).__name__}")
    for key in obj:
        if key not in ("entities", "relations") and not key.startswith("_"):
            raise DataError(path, "file", key, "unknown key (expected 'entities' and 'relations')")
    for key in ("entities", "relations"):
        if key not in obj:
            raise DataError(path, "file", key, "missing required key")
        if not isinstance(obj[key], dict):
            raise DataError(path, "file", key, f"must be an object type -> annotation, got {type(obj[key]).__name__}")

    entities: dict[str, Any] = obj["entities"]
    if not entities:
        raise DataError(path, "file", "entities", "no entity types")
    ent_types, ent_annos = [], []
    for etype, anno in entities.items():
        if not etype.strip():
            raise DataError(path, "entities", repr(etype), "empty type name")
        ent_types.append(etype)
        ent_annos.append(_annotation(path, "entities", etype, anno))

    # An empty relation inventory is allowed: NER-only datasets have no RE phase.
    rel_types, rel_annos, symmetric = [], [], []
    for rtype, spec in obj["relations"].items():
        if not rtype.strip():
            raise DataError(path, "relations", repr(rtype), "empty type name")
        if not isinstance(spec, dict):
            raise DataError(path, "relations", rtype,
                            'expected {"annotation": str, "symmetric": bool}, got ' + type(spec).__name__)
        for key in spec:
            if key not in ("annotation", "symmetric") and not key.startswith("_"):
                raise DataError(path, f"relations.{rtype}", key, "unknown key (expected 'annotation', 'symmetric')")
        for key in ("annotation", "symmetric"):
            if key not in spec:
                raise DataError(path, f"relations.{rtype}", key, "missing required key")
        if not isinstance(spec["symmetric"], bool):
            raise DataError(path, f"relations.{rtype}", "symmetric",
                            f"must be true or false, got {spec['symmetric']!r}")
        rel_types.append(rtype)
        rel_annos.append(_annotation(path, f"relations.{rtype}", "annotation", spec["annotation"]))
        symmetric.append(spec["symmetric"])

    return LabelSet(tuple(ent_types), tuple(ent_annos), tuple(rel_types), tuple(rel_annos), tuple(symmetric),
                    source=str(path))


@dataclasses.dataclass(frozen=True)
class RelationLabelSpace:
    """The RE classifier's classes: none, forward per type, inverse per asymmetric type.

    Class 0 = none; 1..R = the relation types in label-file order, forward (this slot's subject is the
    relation's head, its object the tail); then R+1.. = one inverse class per *asymmetric* type, in the same
    order (this slot's subject is the relation's tail, its object the head). A symmetric type is its own
    inverse. ``swap(c)`` maps a class to what the same fact looks like from the other direction's slot
    (forward r <-> inverse r; symmetric and none map to themselves).
    """

    relation_types: tuple[str, ...]
    symmetric: tuple[bool, ...]

    def __post_init__(self):
        object.__setattr__(self, "relation_types", tuple(self.relation_types))
        object.__setattr__(self, "symmetric", tuple(bool(s) for s in self.symmetric))
        if len(self.relation_types) != len(self.symmetric):
            raise ValueError(f"{len(self.relation_types)} relation types but {len(self.symmetric)} "
                             "symmetric flags")
        if len(set(self.relation_types)) != len(self.relation_types):
            raise ValueError(f"duplicate relation types in {self.relation_types}")
        inv, nxt = {}, 1 + len(self.relation_types)
        for k, (r, sym) in enumerate(zip(self.relation_types, self.symmetric)):
            if sym:
                inv[r] = 1 + k
            else:
                inv[r], nxt = nxt, nxt + 1
        object.__setattr__(self, "_inverse", inv)

    @classmethod
    def from_types(cls, relation_types: Sequence[str], symmetric_types: Sequence[str] = ()) -> "RelationLabelSpace":
        """Build from the type list and the names of the symmetric ones."""
        unknown = set(symmetric_types) - set(relation_types)
        if unknown:
            raise ValueError(f"symmetric types {sorted(unknown)} are not relation types")
        sym = set(symmetric_types)
        return cls(tuple(relation_types), tuple(r in sym for r in relation_types))

    @property
    def num_classes(self) -> int:
        return 1 + len(self.relation_types) + sum(not s for s in self.symmetric)

    def is_symmetric(self, rtype: str) -> bool:
        return self.symmetric[self.relation_types.index(rtype)]

    def forward_id(self, rtype: str) -> int:
        try:
            return 1 + self.relation_types.index(rtype)
        except ValueError:
            raise ValueError(f"unknown relation type {rtype!r}; known: {self.relation_types}") from None

    def inverse_id(self, rtype: str) -> int:
        """The inverse class of ``rtype`` (== forward_id for a symmetric type)."""
        self.forward_id(rtype)
        return self._inverse[rtype]

    def class_info(self, c: int) -> Optional[tuple[str, bool]]:
        """Class id -> (relation type, is_inverse), None for the none class. Symmetric: is_inverse False."""
        if not 0 <= c < self.num_classes:
            raise ValueError(f"class {c} out of range [0, {self.num_classes})")
        if c == 0:
            return None
        if c <= len(self.relation_types):
            return self.relation_types[c - 1], False
        asym = [r for r, s in zip(self.relation_types, self.symmetric) if not s]
        return asym[c - 1 - len(self.relation_types)], True

    def class_names(self) -> list[str]:
        """Human-readable class names: 'none', 'r', ..., 'r^-1', ..."""
        names = ["none"] + list(self.relation_types)
        names += [f"{r}^-1" for r, s in zip(self.relation_types, self.symmetric) if not s]
        return names

    def swap(self, c: int) -> int:
        """The class describing the same fact from the reversed slot (forward <-> inverse)."""
        info = self.class_info(c)
        if info is None:
            return 0
        r, is_inv = info
        return self.forward_id(r) if is_inv else self.inverse_id(r)

    def swap_permutation(self) -> np.ndarray:
        """``perm[c] = swap(c)`` for every class, as an int array."""
        return np.array([self.swap(c) for c in range(self.num_classes)], dtype=np.int64)

    def gold_label(self, pair_rel: Optional[str], reverse_rel: Optional[str]) -> int:
        """Label of the (subj, obj) slot.

        ``pair_rel`` is the gold relation subj -> obj (None if none), ``reverse_rel`` the gold relation
        obj -> subj. The forward relation wins when both exist; otherwise the reverse one gives the
        inverse class (its forward class when symmetric); 0 (none) when neither exists.
        """
        if pair_rel is not None:
            return self.forward_id(pair_rel)
        if reverse_rel is not None:
            return self.inverse_id(reverse_rel)
        return 0


def pair_labels(space: RelationLabelSpace, relations: Iterable[Relation]
                ) -> tuple[dict[tuple[Span, Span], int], list[Relation]]:
    """Gold class of each ordered (subject, object) slot of a sentence, and the gold relations no slot carries.

    The classifier gives one class per slot (SPEC §8). For each unordered entity pair, each direction's
    slot takes a relation it reads forward (its subject is the head; a symmetric type reads forward both
    ways), else one it reads as inverse, preferring one the other slot does not already carry. So a single
    relation fills both slots (forward in one, inverse in the other), and two relations on one pair
    (opposite directions, or two types in one direction) fill one slot each; a third one has no slot and
    is returned as lost. A relation listed twice (or a symmetric one listed both ways) counts once.
    Note that the ``both`` and ``sum`` decoding rules read the two slots of a pair together, so they can
    output at most one relation per pair; ``either`` can output both.
    """
    by_pair: dict[tuple[Span, Span], list[Relation]] = {}
    for r in relations:
        head, tail = tuple(r.head), tuple(r.tail)
        if space.is_symmetric(r.type) and tail < head:
            head, tail = tail, head
        r = Relation(head, tail, r.type)
        group = by_pair.setdefault((min(head, tail), max(head, tail)), [])
        if r not in group:
            group.append(r)
    out: dict[tuple[Span, Span], int] = {}
    lost: list[Relation] = []

    def reads_forward(r: Relation, subj: Span) -> bool:
        return r.head == subj or space.is_symmetric(r.type)

    def label(r: Relation, subj: Span) -> int:
        return space.forward_id(r.type) if reads_forward(r, subj) else space.inverse_id(r.type)

    for (x, y), group in by_pair.items():
        a = next((r for r in group if reads_forward(r, x)), group[0])
        rest = [r for r in group if r is not a]
        b = next((r for r in rest if reads_forward(r, y)), rest[0]) if rest else a
        out[(x, y)], out[(y, x)] = label(a, x), label(b, y)
        lost.extend(r for r in rest if r is not b)
    return out, lost
