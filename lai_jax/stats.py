"""Split statistics for `python -m lai_jax.inspect --stats`: candidate slots per batch shape, reachable gold
entities and relations, windowed sentences, overlapping entities."""
from __future__ import annotations

import contextlib
import functools
import logging
import sys
from typing import Optional, Sequence

from lai_jax import input_pipeline
from lai_jax.build import feature_config
from lai_jax.data import features
from lai_jax.data.documents import Document
from lai_jax.data.labels import LabelSet, load_labels, pair_labels
from lai_jax.pretrained import EncoderNotFoundError, load_tokenizer, resolve_encoder_path, tokenizer_path

SPLITS = ("train", "dev", "test")
Span = tuple[int, int]


def with_phase(config, phase: Optional[str]):
    """A copy of `config` whose phase is `phase` (the caller's config is left alone)."""
    config = config.copy_and_resolve_references()
    if phase:
        if phase not in ("ner", "re"):
            raise ValueError(f"phase must be 'ner' or 're', got {phase!r}")
        config.phase = phase
    return config


def canonical_split(config, split: str) -> str:
    """train/dev/test, also accepting the config's own split names (data.train_split, ...)."""
    if split in SPLITS:
        return split
    d = config.data
    named = {d.train_split: "train", d.test_split: "test"}
    if d.dev_split:
        named[d.dev_split] = "dev"
    if split in named:
        return named[split]
    raise ValueError(f"unknown split {split!r}: use train, dev or test"
                     + ("" if d.dev_split else f" (dataset {config.dataset!r} has no dev split: dev is a "
                                               f"{d.dev_holdout:.0%} hold-out of train)"))


@functools.lru_cache(maxsize=4)
def _tokenizer(encoder: str):
    """The encoder's tokenizer; offline without the named model, the packaged one's (with a warning)."""
    try:
        path = tokenizer_path(encoder)
    except EncoderNotFoundError as e:
        logging.getLogger("lai_jax").warning(
            "%s. Showing the packaged MiniLM-L6 tokenizer (BERT uncased vocabulary) instead: wordpieces, "
            "ids and lengths can differ from what training with %r sees.", e, encoder)
        path = resolve_encoder_path("default")
    return load_tokenizer(path)


def make_featurizer(config) -> tuple[features.Featurizer, LabelSet]:
    """The featurizer training would build for `config` (tokenizer only, no encoder weights)."""
    labels = load_labels(input_pipeline.labels_path(config))
    return features.Featurizer(_tokenizer(config.encoder), labels, feature_config(config)), labels


def load_documents(config, labels: LabelSet) -> dict:
    """train/dev/test documents exactly as training sees them (limits, ADE's dev hold-out).

    Anything the tfds builders print while building a cache goes to stderr, so stdout stays clean JSON.
    """
    with contextlib.redirect_stdout(sys.stderr):
        return input_pipeline.load_splits(config, labels)


def relation_stats(featurizer: features.Featurizer, docs: Sequence[Document]) -> dict:
    """What RE training on the gold entities of `docs` can see of their gold relations (`inspect --stats`).

    relations: gold relations; unreachable: those whose entities no window of max_text_len holds together
    (or that join a span which is not a gold entity); unrepresented: those no slot label carries (a third
    relation on one entity pair, see `pair_labels`); multi_pairs: entity pairs with two or more gold
    relations (the ``both`` and ``sum`` decoding rules output at most one per pair); windowed: sentences
    with entities cut into several windows.
    """
    st = dict(relations=0, unreachable=0, unrepresented=0, multi_pairs=0, windowed=0)
    for doc in docs:
        pieces = featurizer.word_pieces(doc)
        for s, sent in enumerate(doc.sentences):
            spans = sorted({(e.start, e.end) for e in sent.entities})
            st["relations"] += len(sent.relations)
            if not spans:
                st["unreachable"] += len(sent.relations)
                continue
            st["windowed"] += len(featurizer.windows(pieces, s)) > 1
            assign = featurizer._re_plan(pieces, s, spans)[1]
            st["unreachable"] += sum((tuple(r.head), tuple(r.tail)) not in assign for r in sent.relations)
            st["unrepresented"] += len(pair_labels(featurizer.rel_space, sent.relations)[1])
            pairs: dict[tuple[Span, Span], set] = {}
            for r in sent.relations:
                head, tail = tuple(r.head), tuple(r.tail)
                if featurizer.rel_space.is_symmetric(r.type) and tail < head:
                    head, tail = tail, head
                pairs.setdefault((min(head, tail), max(head, tail)), set()).add((head, tail, r.type))
            st["multi_pairs"] += sum(len(v) > 1 for v in pairs.values())
    return st


def _pct(num: int, den: int) -> Optional[float]:
    return round(100.0 * num / den, 2) if den else None


def overlap_stats(docs) -> dict:
    """Pairs of distinct gold entities of one sentence that share a word (nested or crossing; the same span
    with two types counts too): ``overlapping_pairs``, and ``overlapping_same_type`` among them. Flat decoding
    (``ner.overlap=flat``) can get at most one entity of each such pair right."""
    pairs = same = 0
    for doc in docs:
        for sent in doc.sentences:
            ents = sorted({(e.start, e.end, e.type) for e in sent.entities})
            for i, a in enumerate(ents):
                for b in ents[i + 1:]:
                    if a[0] <= b[1] and b[0] <= a[1]:
                        pairs += 1
                        same += a[2] == b[2]
    return {"overlapping_pairs": pairs, "overlapping_same_type": same}


def split_stats(config, splits: Sequence[str] = SPLITS) -> dict:
    """Per split: NER candidate statistics (`Featurizer.ner_instances`) and what RE training can see of the
    gold relations (`Featurizer.relation_stats`), with percentages.

    Keys per split: sentences, instances, slots, filled, filled_pct, gold, reachable, reachable_pct, too_long
    (gold entities over max_span_len words), windowed, windowed_pct (sentences over max_text_len, cut into
    windows), long_words (words over max_text_len wordpieces, shortened), spans_unreachable (spans of
    <= max_span_len words over max_text_len wordpieces), relations, relations_unreachable (entities farther
    apart than max_text_len), relations_unrepresented (no slot label carries them: a third relation on one
    entity pair), relation_multi_pairs (entity pairs with several gold relations). Percentages are null where
    the denominator is 0. And the gold entity overlaps of :func:`overlap_stats`:
    overlapping_pairs, overlapping_same_type. Slots are counted at the NER batch shapes training would use
    (`num_buckets`, chosen from the training split): `buckets` lists per shape [slots, tokens], instances,
    slots, filled and filled_pct.
    """
    splits = [canonical_split(config, s) for s in splits]
    featurizer, labels = make_featurizer(config)
    docs = load_documents(config, labels)
    featurizer, train_inst, shapes = input_pipeline.plan_buckets(featurizer, "ner", docs["train"], config.num_buckets)
    out = {}
    for split in splits:
        insts, s = featurizer.ner_instances(docs[split], with_labels=False)
        s = {k: int(v) for k, v in s.items()}
        groups = input_pipeline.assign(insts, shapes)
        s["buckets"] = [{"shape": list(shape), "instances": len(g), "slots": shape[0] * len(g),
                         "filled": sum(len(insts[i].spans) for i in g),
                         "filled_pct": _pct(sum(len(insts[i].spans) for i in g), shape[0] * len(g))}
                        for shape, g in zip(shapes, groups)]
        s["slots"] = sum(b["slots"] for b in s["buckets"])
        s["filled_pct"] = _pct(s["filled"], s["slots"])
        s["reachable_pct"] = _pct(s["reachable"], s["gold"])
        s["windowed_pct"] = _pct(s["windowed"], s["sentences"])
        r = relation_stats(featurizer, docs[split])
        s.update(relations=r["relations"], relations_unreachable=r["unreachable"],
                 relations_unrepresented=r["unrepresented"], relation_multi_pairs=r["multi_pairs"])
        s.update(overlap_stats(docs[split]))
        out[split] = s
    return out


def format_stats(config, stats: dict) -> str:
    featurizer, _ = make_featurizer(config)

    def with_pct(num, den, pct):
        return f"{num}/{den} ({'-' if pct is None else f'{pct:.2f}%'})"

    fold = f" fold {config.data.fold}" if config.dataset == "ade" else ""
    lines = [f"{config.dataset}{fold}: C = max_text_len {config.max_text_len}, L = max_span_len {config.max_span_len}, "
             f"K = max_candidates {config.max_candidates}, NER T = {featurizer.seq_len('ner')}"]
    header = ("split", "sentences", "instances", "candidate slots filled", "gold entities reachable",
              "entities > L words", "texts windowed", "relations unreachable", "RE labels collapsed")
    rows = [header]
    for split, s in stats.items():
        windowed = "-" if s["windowed_pct"] is None else f"{s['windowed_pct']:.2f}%"
        rows.append((split, str(s["sentences"]), str(s["instances"]),
                     with_pct(s["filled"], s["slots"], s["filled_pct"]),
                     with_pct(s["reachable"], s["gold"], s["reachable_pct"]), str(s["too_long"]),
                     f"{s['windowed']} ({windowed})", f"{s['relations_unreachable']}/{s['relations']}",
                     f"{s['relations_unrepresented']} (multi-relation pairs {s['relation_multi_pairs']})"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    for split, s in stats.items():
        lines.append(f"{split} batch shapes (slots, tokens): " + ", ".join(
            f"{tuple(b['shape'])} {with_pct(b['filled'], b['slots'], b['filled_pct'])} in {b['instances']} instances"
            for b in s["buckets"]))
    lines.append("overlapping gold entity pairs (of them same type): " + ", ".join(
        f"{split} {s['overlapping_pairs']} ({s['overlapping_same_type']})" for split, s in stats.items()
        if "overlapping_pairs" in s))
    notes = []
    if any(s["spans_unreachable"] or s["long_words"] for s in stats.values()):
        notes.append("spans of <= L words over C wordpieces (never candidates): " + ", ".join(
            f"{split} {s['spans_unreachable']}" for split, s in stats.items())
            + "; words over C wordpieces (shown by their first C): " + ", ".join(
            f"{split} {s['long_words']}" for split, s in stats.items()))
    notes.append("relations unreachable: their entities are farther apart than C wordpieces. RE labels collapsed: "
                 "gold relations no slot label carries (a third relation on one entity pair); of a multi-relation "
                 "pair, re_decode 'both' or 'sum' can output at most one relation.")
    return "\n".join(lines + notes)
