"""Host-side decoding of model outputs (numpy arrays) into entities and relation triples.

NER (``decode_ner``)
--------------------
A candidate span is an entity iff ``(not use_filter or filter_prob >= filter_threshold)`` and the
argmax of its type distribution is not the none class (index 0; ties go to the lowest index, so a tie
with none means none). Its score is the **type probability alone** (``type_probs[argmax]``), not
multiplied by the filter probability, so scores are comparable whether or not the filter is used.
Several instances scoring the same span are merged after filtering: the kept prediction with the
highest score wins (its type and score), so a span carries at most one type. Overlapping spans are then
resolved by ``overlap`` (config ``ner.overlap``), visiting entities by score, highest first (ties by
(start, end, type)), and keeping each one unless it overlaps (shares a word with) an already kept one
that the rule counts as a conflict:

* ``plmarker`` (default; PL-Marker's released NER evaluation): a conflict is an overlap with a kept
  entity of the *same* type, so the lower-scoring one is dropped; nested or crossing entities of
  different types are all kept.
* ``flat``: greedy fully-flat decoding; any overlap is a conflict, whatever the types.
* ``none``: no conflicts; every entity is kept.

The result is sorted by (start, end, type).

The RE label space (none, forward and inverse classes) is ``lai_jax.data.labels.RelationLabelSpace``.

RE decoding (``decode_relations``)
----------------------------------
For the ordered pair (i, j), A = ``pair_probs[(i, j)]`` (subject i, object j, from i's instance) and
B = ``pair_probs[(j, i)]``. The evidence for the triple (i -> j, r) is A[forward_id(r)] and
B[inverse_id(r)] (both forward ids for a symmetric r). Rules:

* ``both`` (paper): stands iff argmax(A) = forward(r) with A[.] >= threshold AND
  argmax(B) = inverse(r) with B[.] >= threshold; score = mean of the two probabilities. Needs both
  directions: a pair with a missing direction yields nothing.
* ``either``: stands iff argmax(A) = forward(r) with prob >= threshold, or argmax(B) = inverse(r) with
  prob >= threshold; score = the max over the directions that give it. (Two directions may give two
  different triples for the same pair; both are returned.) A missing direction gives nothing.
* ``sum`` (PL-Marker): per class c in the (i, j) slot's frame, combined[c] = log A[c] + log B[swap(c)]
  (so none_A + none_B, forward r_A + inverse r_B, inverse r_A + forward r_B); the argmax over all
  classes is the decision, and a triple stands iff it is not none. ``threshold`` is **unused** (as in
  PL-Marker). Score = geometric mean of the directions' probabilities, exp(combined / n_directions).
  With one direction missing, only the present one is used (= its argmax). At most one triple per
  unordered pair.

Type constraints (``signatures``, the config's ``re.type_constraints``): given the entities' types and a set of
(relation, head type, tail type) signatures (those of the training split), a class whose relation does not fit
its frame's (head, tail) types has its probability set to 0 in that direction before the rule applies (a
symmetric relation fits in either order), so the rule picks among the classes that fit ("none" always does).
The other probabilities are not renormalised: the threshold applies to what the model gave each class.

Symmetric types: (i -> j, r) and (j -> i, r) are the same relation; only the one whose head span comes
first in span order ((start, end) tuple comparison) is output. Duplicate triples (e.g. the same triple
from both directions, or entities listed twice) are merged keeping the max score. The result is a list
of (head_span, tail_span, type, score) sorted by (head, tail, type). Probabilities are clipped at 1e-30
before the log.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from lai_jax.data.labels import RelationLabelSpace
from lai_jax.data.slots import spans_overlap

Span = tuple[int, int]
RE_DECODE_RULES = ("both", "either", "sum")
NER_OVERLAP_RULES = ("plmarker", "flat", "none")


def decode_ner(spans: list[Span], filter_prob: Optional[np.ndarray], type_probs: np.ndarray,
               entity_types: Sequence[str], overlap: str = "plmarker", filter_threshold: float = 0.5,
               use_filter: bool = True) -> list[tuple[int, int, str, float]]:
    """Decode entities ``(start, end, type, score)`` from per-span filter and type probabilities.

    ``type_probs`` is [n, 1 + E] with column 0 = none; ``filter_prob`` is [n] (may be None when
    ``use_filter`` is False). See the module docstring for the rules.
    """
    if overlap not in NER_OVERLAP_RULES:
        raise ValueError(f"unknown ner overlap rule {overlap!r}; expected one of {NER_OVERLAP_RULES}")
    type_probs = np.asarray(type_probs, dtype=np.float64)
    n = len(spans)
    if type_probs.ndim != 2 or type_probs.shape != (n, 1 + len(entity_types)):
        raise ValueError(f"type_probs has shape {type_probs.shape}, expected ({n}, {1 + len(entity_types)})")
    if use_filter:
        if filter_prob is None:
            raise ValueError("filter_prob is required when use_filter is True")
        filter_prob = np.asarray(filter_prob, dtype=np.float64).reshape(-1)
        if filter_prob.shape != (n,):
            raise ValueError(f"filter_prob has shape {filter_prob.shape}, expected ({n},)")
    best: dict[Span, tuple[str, float]] = {}
    if n:
        labels = np.argmax(type_probs, axis=-1)
        for k, (s, e) in enumerate(spans):
            if use_filter and not filter_prob[k] >= filter_threshold:
                continue
            lab = int(labels[k])
            if lab == 0:
                continue
            span = (int(s), int(e))
            cand = (entity_types[lab - 1], float(type_probs[k, lab]))
            if span not in best or cand[1] > best[span][1]:
                best[span] = cand
    ents = [(s, e, t, p) for (s, e), (t, p) in best.items()]
    if overlap != "none":
        same_type_only = overlap == "plmarker"
        accepted: list[tuple[int, int, str, float]] = []
        for ent in sorted(ents, key=lambda x: (-x[3], x[0], x[1], x[2])):
            if not any(spans_overlap(ent[:2], a[:2]) and (not same_type_only or a[2] == ent[2]) for a in accepted):
                accepted.append(ent)
        ents = accepted
    return sorted(ents, key=lambda x: (x[0], x[1], x[2]))


def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(p, 1e-30, None))


Signature = tuple[str, str, str]  # (relation type, head entity type, tail entity type)


def fitting_classes(space: RelationLabelSpace, subject_type: str, object_type: str,
                    signatures: frozenset[Signature]) -> np.ndarray:
    """[num_classes] bool: the classes of a (subject, object) slot whose relation fits the two types."""
    fits = np.zeros(space.num_classes, bool)
    fits[0] = True  # none
    for c in range(1, space.num_classes):
        r, is_inv = space.class_info(c)
        head, tail = (object_type, subject_type) if is_inv else (subject_type, object_type)
        fits[c] = (r, head, tail) in signatures or (space.is_symmetric(r) and (r, tail, head) in signatures)
    return fits


def decode_relations(entities: list[Span], pair_probs: dict[tuple[int, int], np.ndarray],
                     space: RelationLabelSpace, rule: str = "both", threshold: float = 0.5,
                     entity_types: Optional[Sequence[str]] = None,
                     signatures: Optional[frozenset[Signature]] = None,
                     ) -> list[tuple[Span, Span, str, float]]:
    """Decode relation triples ``(head_span, tail_span, type, score)``; see the module docstring.

    ``pair_probs[(i, j)]`` are the softmax probabilities [num_classes] of the slot with subject
    ``entities[i]`` and object ``entities[j]``. With ``signatures`` (and ``entity_types``, one per entity),
    classes that do not fit the pair's types are ruled out.
    """
    if signatures is not None and (entity_types is None or len(entity_types) != len(entities)):
        raise ValueError("type constraints need one entity type per entity")
    if rule not in RE_DECODE_RULES:
        raise ValueError(f"unknown re_decode rule {rule!r}; expected one of {RE_DECODE_RULES}")
    n, C = len(entities), space.num_classes
    probs: dict[tuple[int, int], np.ndarray] = {}
    fits: dict[tuple[str, str], np.ndarray] = {}  # per (subject type, object type)
    for (i, j), p in pair_probs.items():
        if not (0 <= i < n and 0 <= j < n) or i == j:
            raise ValueError(f"pair ({i}, {j}) is invalid for {n} entities")
        p = np.asarray(p, dtype=np.float64).reshape(-1)
        if p.shape != (C,):
            raise ValueError(f"pair ({i}, {j}) probs have shape {p.shape}, expected ({C},)")
        if signatures is not None:
            types = (entity_types[i], entity_types[j])
            if types not in fits:
                fits[types] = fitting_classes(space, *types, signatures)
            p = p * fits[types]
        probs[(i, j)] = p
    spans = [(int(s), int(e)) for s, e in entities]
    perm = space.swap_permutation()
    out: dict[tuple[Span, Span, str], float] = {}

    def emit(i: int, j: int, c: int, score: float) -> None:
        """Class c read in the (subject i, object j) frame."""
        r, is_inv = space.class_info(c)
        head, tail = (spans[j], spans[i]) if is_inv else (spans[i], spans[j])
        if space.is_symmetric(r) and tail < head:
            head, tail = tail, head
        key = (head, tail, r)
        if key not in out or score > out[key]:
            out[key] = score

    unordered = sorted({(min(i, j), max(i, j)) for i, j in probs})
    for i, j in unordered:
        A, B = probs.get((i, j)), probs.get((j, i))
        if rule == "both":
            if A is None or B is None:
                continue
            c = int(np.argmax(A))
            if c != 0 and int(np.argmax(B)) == perm[c] and A[c] >= threshold and B[perm[c]] >= threshold:
                emit(i, j, c, float((A[c] + B[perm[c]]) / 2))
        elif rule == "either":
            for (s, o), P in (((i, j), A), ((j, i), B)):
                if P is None:
                    continue
                c = int(np.argmax(P))
                if c != 0 and P[c] >= threshold:
                    emit(s, o, c, float(P[c]))
        else:  # sum
            parts = []
            if A is not None:
                parts.append(_log(A))
            if B is not None:
                parts.append(_log(B)[perm])  # B read in the (i, j) frame
            combined = np.sum(parts, axis=0)
            c = int(np.argmax(combined))
            if c != 0:
                emit(i, j, c, float(np.exp(combined[c] / len(parts))))
    return sorted(((h, t, r, s) for (h, t, r), s in out.items()), key=lambda x: (x[0], x[1], x[2]))
