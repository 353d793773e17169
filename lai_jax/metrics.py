"""Evaluation metrics: NER, RE (boundaries) and RE+ (strict) precision / recall / F1.

All numbers are fractions in [0, 1] (``format_table`` prints percentages).

Definitions
-----------
* **NER**: a predicted entity is correct iff its (start, end, type) equals a gold entity's.
* **RE**: a predicted relation is correct iff the head span, the tail span and the relation type equal
  a gold relation's. Argument entity types are ignored.
* **RE+**: RE, and in addition both arguments' entity types match. The argument types of a predicted
  relation are the types of the *predicted* entities with those spans in the same predicted sentence;
  those of a gold relation come from the gold entities. When a span carries several entity types in a
  sentence, its "type" is the sorted tuple of them (so it only matches an identical set); a span with no
  entity at all gets a sentinel that never matches (missing-pred != missing-gold), i.e. such a relation
  can never be RE+-correct, but a gold one still counts in the recall denominator.
* **Symmetric relation types** (``relation_symmetric[type]`` is True): (a, b, r) and (b, a, r) are the
  same relation. Both gold and predicted relations are normalised to span order (the smaller
  (start, end) first; for RE+ the argument types are swapped with their spans) and deduplicated, so a
  symmetric relation annotated or predicted in both directions is one relation, and one predicted in the
  reverse order of the gold annotation is correct. Types absent from the dict are asymmetric.
  ``symmetric_count`` says how many items such a relation is worth: ``"both"`` (default, PL-Marker's
  released evaluation, whose numbers Table 1 compares against) counts it twice, once per direction, in
  the gold count, the predicted count and the hits alike; ``"once"`` counts it once. Asymmetric types
  count once either way. (So "both" weights symmetric types double in micro scores; per-type P / R / F1,
  and hence macro scores, are the same under both.) A relation whose head and tail are the same span
  counts once.
* **Duplicates**: items are sets per (doc_key, sentence index); a duplicated prediction (or gold
  annotation) counts once.
* **Recall** always counts every gold item; nothing is filtered (e.g. entities longer than the model's
  maximum span width still count).

Micro = tp / n_pred, tp / n_gold over all items. Macro follows SpERT, which calls sklearn's
``precision_recall_fscore_support(average='macro', zero_division=0)`` over the labels present in
gold ∪ pred: per-type P, R and F1 are computed (0 where a denominator is 0) and each is averaged
*separately*, unweighted, over the types that occur in gold ∪ pred of that task. Hence macro F1 is the
mean of per-type F1, not the harmonic mean of macro P and macro R. With no types at all, macro is 0.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Hashable, Iterable, Optional, Sequence

from lai_jax.data.documents import Document, Sentence

SYMMETRIC_COUNTS = ("both", "once")
AVERAGES = ("micro", "macro")
_MISSING_PRED = ("<no predicted entity>",)
_MISSING_GOLD = ("<no gold entity>",)


@dataclasses.dataclass
class PRF:
    """Counts for one label set; precision / recall / F1 are 0 when their denominators are 0."""

    tp: int = 0
    n_pred: int = 0
    n_gold: int = 0

    @property
    def precision(self) -> float:
        return self.tp / self.n_pred if self.n_pred else 0.0

    @property
    def recall(self) -> float:
        return self.tp / self.n_gold if self.n_gold else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if (p + r) > 0 else 0.0

    def as_dict(self) -> dict:
        return {"p": self.precision, "r": self.recall, "f1": self.f1, "tp": self.tp,
                "n_pred": self.n_pred, "n_gold": self.n_gold}


def _span_types(sent: Sentence, missing: tuple) -> dict:
    by_span: dict[tuple[int, int], set[str]] = defaultdict(set)
    for e in sent.entities:
        by_span[(e.start, e.end)].add(e.type)
    out = {span: tuple(sorted(types)) for span, types in by_span.items()}
    return defaultdict(lambda: missing, out)


def _ner_items(sent: Sentence) -> set[tuple]:
    # item = (label, key...)
    return {(e.type, e.start, e.end) for e in sent.entities}


def _re_items(sent: Sentence, symmetric: dict[str, bool], strict: bool, missing: tuple,
              both_directions: bool = False) -> set[tuple]:
    types = _span_types(sent, missing) if strict else None
    items = set()
    for rel in sent.relations:
        head, tail = tuple(rel.head), tuple(rel.tail)
        sym = symmetric.get(rel.type, False)
        if sym and tail < head:
            head, tail = tail, head
        # "both": the normalised relation also stands for its reverse, a second item (never a duplicate).
        for h, t in ((head, tail), (tail, head)) if sym and both_directions else ((head, tail),):
            if strict:
                items.add((rel.type, h, types[h], t, types[t]))
            else:
                items.add((rel.type, h, t))
    return items


def _pair_documents(gold: list[Document], pred: list[Document]) -> list[tuple[str, int, Sentence, Sentence]]:
    """Match documents by doc_key and sentences by index; ValueError on any mismatch."""

    def by_key(docs: list[Document], which: str) -> dict[str, Document]:
        out: dict[str, Document] = {}
        for d in docs:
            if d.doc_key in out:
                raise ValueError(f"duplicate doc_key {d.doc_key!r} in the {which} documents")
            out[d.doc_key] = d
        return out

    g, p = by_key(gold, "gold"), by_key(pred, "predicted")
    missing_pred = [k for k in g if k not in p]
    missing_gold = [k for k in p if k not in g]
    if missing_pred or missing_gold:
        parts = []
        if missing_pred:
            parts.append(f"gold documents without a prediction: {missing_pred[:5]}"
                         + (f" (+{len(missing_pred) - 5} more)" if len(missing_pred) > 5 else ""))
        if missing_gold:
            parts.append(f"predicted documents not in gold: {missing_gold[:5]}"
                         + (f" (+{len(missing_gold) - 5} more)" if len(missing_gold) > 5 else ""))
        raise ValueError("gold and predicted doc keys differ; " + "; ".join(parts))
    pairs = []
    for key, gd in g.items():
        pd = p[key]
        if len(gd.sentences) != len(pd.sentences):
            raise ValueError(f"document {key!r}: gold has {len(gd.sentences)} sentences but the prediction "
                             f"has {len(pd.sentences)}")
        for i, (gs, ps) in enumerate(zip(gd.sentences, pd.sentences)):
            pairs.append((key, i, gs, ps))
    return pairs


def _summarise(gold_items: Iterable[tuple], pred_items: Iterable[tuple]) -> dict:
    """Items are (label, ...) tuples, already unique (prefixed with doc key and sentence index)."""
    gold_set, pred_set = set(gold_items), set(pred_items)
    per_type: dict[Hashable, PRF] = defaultdict(PRF)
    for it in gold_set:
        per_type[it[0]].n_gold += 1
    for it in pred_set:
        per_type[it[0]].n_pred += 1
        if it in gold_set:
            per_type[it[0]].tp += 1
    micro = PRF(sum(c.tp for c in per_type.values()), len(pred_set), len(gold_set))
    # In type order: a set's order follows the process's string hash seed, and float sums follow the order.
    ordered = {t: per_type[t] for t in sorted(per_type)}
    n = len(ordered)
    macro = {
        "p": sum(c.precision for c in ordered.values()) / n if n else 0.0,
        "r": sum(c.recall for c in ordered.values()) / n if n else 0.0,
        "f1": sum(c.f1 for c in ordered.values()) / n if n else 0.0,
    }
    return {"micro": micro.as_dict(), "macro": macro, "per_type": {t: c.as_dict() for t, c in ordered.items()}}


def score(gold: list[Document], pred: list[Document],
          relation_symmetric: Optional[dict[str, bool]] = None, symmetric_count: str = "both") -> dict:
    """Score predicted documents against gold ones.

    ``symmetric_count``: "both" or "once", how many items a symmetric relation counts (module docstring).
    Returns ``{"ner"|"re"|"re+": {"micro": {p, r, f1, tp, n_pred, n_gold}, "macro": {p, r, f1},
    "per_type": {type: {p, r, f1, tp, n_pred, n_gold}}}}`` (fractions, not percentages).
    Raises ValueError (naming the document) when doc keys or sentence counts differ.
    """
    if symmetric_count not in SYMMETRIC_COUNTS:
        raise ValueError(f"symmetric_count must be one of {SYMMETRIC_COUNTS}, got {symmetric_count!r}")
    both = symmetric_count == "both"
    symmetric = dict(relation_symmetric or {})
    items: dict[str, tuple[list, list]] = {"ner": ([], []), "re": ([], []), "re+": ([], [])}
    for key, i, gs, ps in _pair_documents(gold, pred):
        # The label stays first; the (doc, sentence) location follows so items are globally unique.
        def loc(its: set[tuple]) -> list[tuple]:
            return [(it[0], key, i) + it[1:] for it in its]

        items["ner"][0].extend(loc(_ner_items(gs)))
        items["ner"][1].extend(loc(_ner_items(ps)))
        items["re"][0].extend(loc(_re_items(gs, symmetric, False, _MISSING_GOLD, both)))
        items["re"][1].extend(loc(_re_items(ps, symmetric, False, _MISSING_PRED, both)))
        items["re+"][0].extend(loc(_re_items(gs, symmetric, True, _MISSING_GOLD, both)))
        items["re+"][1].extend(loc(_re_items(ps, symmetric, True, _MISSING_PRED, both)))
    return {task: _summarise(g_items, p_items) for task, (g_items, p_items) in items.items()}


def format_table(results: dict, tasks: Sequence[str] = ("ner", "re", "re+")) -> str:
    """A compact console table: a row per task in `tasks`, micro P R F1 (with counts) and macro F1, in %."""
    header = f"{'task':<5} {'P':>7} {'R':>7} {'F1':>7} {'macroF1':>8} {'tp':>7} {'pred':>7} {'gold':>7}"
    lines = [header, "-" * len(header)]
    for task in tasks:
        if task not in results:
            continue
        mi, ma = results[task]["micro"], results[task]["macro"]
        lines.append(f"{task:<5} {100 * mi['p']:7.2f} {100 * mi['r']:7.2f} {100 * mi['f1']:7.2f} "
                     f"{100 * ma['f1']:8.2f} {mi['tp']:7d} {mi['n_pred']:7d} {mi['n_gold']:7d}")
    return "\n".join(lines)
