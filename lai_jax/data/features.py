"""Documents -> static-shape model instances (SPEC §3 NER, §8 RE).

Layout of one instance (packed, then padded to the config's static length T):

    [CLS] context_left sentence context_right [SEP] a_0 .. a_{N-1} [SEP] M^s_0 .. M^s_{k-1} M^e_0 .. M^e_{k-1} [PAD..]

Position ids run 0, 1, 2, ... over text, [SEP], annotations and the second [SEP]; a marker takes the
position id of its span's first (start marker) or last (end marker) wordpiece. In the RE phase solid
subject markers are real tokens inside the text (so the text's position ids shift past them) and every
other entity gets a pair of levitated object markers. Every array has a shape fixed by the config alone
(T tokens, K slots). A window's candidates (RE: a subject's objects) are split into instances sized for a few
slot buckets (`lai_jax.data.slots`); `lai_jax.input_pipeline` cuts each batch to its bucket's shape.

Long sentences (training, evaluation and prediction alike): a sentence whose wordpieces exceed
``max_text_len`` is covered by overlapping windows of whole words (:func:`plan_windows`); each window is
the text core of its instances, the rest of the sentence and the document around it fill the remaining
budget as context. Every span of at most ``max_span_len`` words whose wordpieces fit the budget lies
wholly inside some window and is a candidate in exactly one of them: the window where it is most central
(:func:`best_window`). Instances keep sentence-level word indices (``Instance.spans``, ``subject``), so
decoding merges a sentence's instances whatever windows they come from. A word with more wordpieces than
the budget is shown by its first ``max_text_len`` pieces. RE on a windowed sentence: each subject gets a
window centred on it; an object outside it goes to a window of the subject's reaching towards the object,
so a pair is an object slot (once per direction) whenever the words from one entity to the other fit the
budget. A pair farther apart than that is unreachable: it gets no slot, and ``relation_stats`` counts the
gold relations lost that way (``inspect --stats``). Nothing is dropped without being counted.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Optional, Sequence

import numpy as np

from lai_jax.data import masks, slots
from lai_jax.data.slots import enumerate_spans
from lai_jax.data.documents import Document, Entity
from lai_jax.data.labels import LabelSet, RelationLabelSpace, pair_labels
from lai_jax.data.windows import best_window, pair_windows, plan_windows

# Reserved vocabulary entries used as marker tokens (BERT vocabularies carry [unused0..98]).
NER_START, NER_END = "[unused0]", "[unused1]"
SUBJ_START, SUBJ_END = "[unused2]", "[unused3]"
OBJ_START, OBJ_END = "[unused4]", "[unused5]"
# Typed RE markers (`re.typed_markers`): entity type t (0-based, label-file order) marks a subject with
# [unused{6+4t}] / [unused{7+4t}] and an object with [unused{8+4t}] / [unused{9+4t}].
TYPED_MARKER_BASE = 6


def typed_marker_tokens(num_types: int) -> list[tuple[str, str, str, str]]:
    """(subject start, subject end, object start, object end) marker tokens of each entity type."""
    return [tuple(f"[unused{TYPED_MARKER_BASE + 4 * t + i}]" for i in range(4)) for t in range(num_types)]

Span = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """The host-side shape parameters (config fields of the same names)."""
    max_text_len: int = 150  # C: wordpieces of sentence + document context
    max_span_len: int = 8  # L: longest candidate span, in words
    max_candidates: int = 220  # K: candidate slots per NER instance
    max_objects: int = 16  # object slots per RE instance
    use_annotations: bool = True  # False = the paper's "w/o 1st round" ablation
    # RE markers name the entity type (PURE's typed markers; not in the paper, which marks every entity alike).
    typed_markers: bool = False
    # Slot counts an instance may be filled for (ascending, the last = max_candidates / max_objects; see
    # `lai_jax.data.slots`); empty = K alone, candidates cut into consecutive chunks of K as in the paper.
    ner_slot_buckets: tuple[int, ...] = ()
    re_slot_buckets: tuple[int, ...] = ()


def round_up(n: int, multiple: int = 8) -> int:
    return -(-n // multiple) * multiple


@dataclasses.dataclass
class SentencePieces:
    """Wordpieces of one window of a sentence (by default the whole sentence) and its context."""
    ids: list[int]  # text wordpieces: left context + window + right context
    word_first: list[int]  # per sentence word: index of its first wordpiece in `ids` (-1 outside the window)
    word_last: list[int]
    truncated: bool  # the window alone exceeded the budget (never for the featurizer's own windows)
    window: tuple[int, int] = (0, 0)  # the sentence words [lo, hi) the text core holds


@dataclasses.dataclass
class Instance:
    """One model instance: fixed-shape numpy arrays plus host-side bookkeeping."""
    arrays: dict[str, np.ndarray]
    doc: int  # index of the document in the split
    sent: int  # index of the sentence in the document
    spans: list[tuple[int, int]]  # candidate (NER) or object (RE) spans, one per filled slot
    subject: Optional[tuple[int, int]] = None  # RE only
    window: Optional[tuple[int, int]] = None  # the sentence words [lo, hi) in the text core (all, unless windowed)


class Featurizer:
    """Builds NER and RE instances for one tokenizer, label set and shape config."""

    def __init__(self, tokenizer, labels: LabelSet, cfg: FeatureConfig):
        self.tok, self.labels, self.cfg = tokenizer, labels, cfg
        vocab = tokenizer.get_vocab()
        missing = [t for t in (NER_START, NER_END, SUBJ_START, SUBJ_END, OBJ_START, OBJ_END) if t not in vocab]
        if missing:
            raise ValueError(f"the encoder's vocabulary lacks the reserved marker tokens {missing}; "
                             "lai-jax needs a BERT-style vocabulary with [unused0]..[unused5]")
        self.marker_ids = {t: vocab[t] for t in (NER_START, NER_END, SUBJ_START, SUBJ_END, OBJ_START, OBJ_END)}
        # RE marker ids (subject start, subject end, object start, object end) by entity type.
        self.re_markers: dict[str, tuple[int, int, int, int]] = {}
        if cfg.typed_markers:
            names = typed_marker_tokens(len(labels.entity_types))
            lacking = [t for four in names for t in four if t not in vocab]
            if lacking:
                raise ValueError(f"re.typed_markers: the encoder's vocabulary lacks the reserved tokens {lacking[:4]} "
                                 f"({len(labels.entity_types)} entity types need [unused{TYPED_MARKER_BASE}].."
                                 f"{names[-1][-1]})")
            self.re_markers = {t: tuple(vocab[x] for x in four) for t, four in zip(labels.entity_types, names)}
        self.untyped_re_markers = tuple(self.marker_ids[t] for t in (SUBJ_START, SUBJ_END, OBJ_START, OBJ_END))
        self.cls_id, self.sep_id, self.pad_id = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
        self.unk_id = tokenizer.unk_token_id
        self.ner_anno = self._annotation_segment(labels.entity_annotations)
        self.re_anno = self._annotation_segment(labels.relation_annotations)
        self.rel_space = RelationLabelSpace(labels.relation_types, labels.symmetric)
        self.entity_index = {t: i + 1 for i, t in enumerate(labels.entity_types)}  # 0 = none

    def entity_class(self, etype: str, doc_key: str, s: int) -> int:
        """Class id of a gold entity type; an unknown type is an error, never "none"."""
        if etype not in self.entity_index:
            raise ValueError(f"document {doc_key!r}, sentence {s}: gold entity type {etype!r} is not in the label "
                             f"file{' ' + self.labels.source if self.labels.source else ''} "
                             f"(known: {', '.join(self.entity_index)})")
        return self.entity_index[etype]

    def marker_sources(self, phase: str) -> dict[int, list[int]]:
        """For `model.marker_init="brackets"`: each marker token id the phase uses -> the vocabulary ids whose
        mean embedding it starts from. Levitated markers (NER candidates, RE objects) start as "[" / "]", solid
        subject markers as "<" / ">"; a typed RE marker adds the wordpieces of its type's annotation, so the
        type can be read from the first step. The reserved [unused] rows are otherwise nearly alike (cosine
        ~0.8 in BERT uncased vocabularies) and carry nothing the encoder was trained on."""
        brackets = [self._wordpieces(b) for b in ("<", ">", "[", "]")]  # subject start / end, object (levitated) start / end
        if phase == "ner":
            return {self.marker_ids[NER_START]: brackets[2], self.marker_ids[NER_END]: brackets[3]}
        out = dict(zip(self.untyped_re_markers, brackets))
        annotation = dict(zip(self.labels.entity_types, self.labels.entity_annotations))
        for etype, four in self.re_markers.items():
            word = self._wordpieces(annotation[etype])
            out.update({m: b + word for m, b in zip(four, brackets)})
        return out

    def _wordpieces(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    # ----------------------------------------------------------------------------------- shapes
    def _annotation_segment(self, annotations: Sequence[str]) -> tuple[list[int], list[tuple[int, int]]]:
        """Wordpieces of all annotations in order, and each annotation's (first, last) piece offset."""
        ids, bounds = [], []
        for text in annotations:
            pieces = self._wordpieces(text) or [self.unk_id]
            bounds.append((len(ids), len(ids) + len(pieces) - 1))
            ids.extend(pieces)
        return ids, bounds

    def seq_len(self, phase: str) -> int:
        """Static total length T for a phase."""
        c = self.cfg
        if phase == "ner":
            anno, slots, text = self.ner_anno[0], c.max_candidates, c.max_text_len
        else:
            anno, slots, text = self.re_anno[0], c.max_objects, c.max_text_len + 2  # + solid markers
        anno_len = len(anno) + 1 if c.use_annotations else 0
        return round_up(1 + text + 1 + anno_len + 2 * slots)

    def num_slots(self, phase: str) -> int:
        """K: candidate (NER) or object (RE) slots per instance."""
        return self.cfg.max_candidates if phase == "ner" else self.cfg.max_objects

    def slot_buckets(self, phase: str) -> tuple[int, ...]:
        return (self.cfg.ner_slot_buckets if phase == "ner" else self.cfg.re_slot_buckets) or (self.num_slots(phase),)

    def with_slot_buckets(self, phase: str, buckets: Sequence[int]) -> "Featurizer":
        """The same featurizer splitting a phase's slots for `buckets` (see `lai_jax.data.slots`)."""
        field = "ner_slot_buckets" if phase == "ner" else "re_slot_buckets"
        return Featurizer(self.tok, self.labels, dataclasses.replace(self.cfg, **{field: tuple(map(int, buckets))}))

    def overhead(self, sp: "SentencePieces", phase: str) -> int:
        """Tokens of an instance besides its markers: [CLS] text [SEP] (annotations [SEP]) (RE: solid markers)."""
        anno = (len((self.ner_anno if phase == "ner" else self.re_anno)[0]) + 1) if self.cfg.use_annotations else 0
        return 2 + len(sp.ids) + anno + (2 if phase == "re" else 0)

    def chunks(self, items: Sequence, sp: "SentencePieces", phase: str) -> list[list]:
        """A window's slots (spans or objects) split into instances: consecutive runs of K with one bucket,
        else the cheapest split for the buckets (`slots.split_slots`); [[]] when there are none."""
        buckets = self.slot_buckets(phase)
        if len(buckets) == 1:
            K = buckets[0]
            return [list(items[lo:lo + K]) for lo in range(0, max(len(items), 1), K)]
        out, lo = [], 0
        for n in slots.split_slots(len(items), buckets, self.overhead(sp, phase)):
            out.append(list(items[lo:lo + n]))
            lo += n
        return out

    def slot_demand(self, docs: Sequence[Document], phase: str) -> list[tuple[int, int]]:
        """(slots, overhead tokens) of every window that becomes instances: what slot buckets are chosen for."""
        if phase == "ner":
            return [(len(spans), self.overhead(sp, phase)) for _, _, sp, spans, _ in self._ner_windows(docs, False)]
        return [(len(objs), self.overhead(sp, phase)) for _, _, sp, _, objs, _, _ in self._re_groups(docs, None)]

    def num_types(self, phase: str) -> int:
        return len(self.labels.entity_types) if phase == "ner" else len(self.labels.relation_types)

    # ------------------------------------------------------------------------------ tokenising
    def word_pieces(self, doc: Document) -> list[list[list[int]]]:
        """Per sentence, per word, its wordpiece ids (never empty: an untokenisable word becomes [UNK])."""
        out = []
        for sent in doc.sentences:
            enc = self.tok(list(sent.words), is_split_into_words=True, add_special_tokens=False)
            pieces: list[list[int]] = [[] for _ in sent.words]
            for pid, wid in zip(enc["input_ids"], enc.word_ids()):
                if wid is not None:
                    pieces[wid].append(pid)
            out.append([p or [self.unk_id] for p in pieces])
        return out

    def sentence_pieces(self, doc_pieces: list[list[list[int]]], s: int, budget: int,
                        window: Optional[tuple[int, int]] = None) -> SentencePieces:
        """Window [lo, hi) of sentence s (default: the whole sentence) with context filling `budget` wordpieces.

        The context is the rest of the sentence and the document around the window, half each side first. A
        word of more than `budget` pieces keeps its first `budget`. Should the window itself exceed the
        budget (not for windows of `windows`), its words from the first that does not fit on are cut
        (word_first -1) and `truncated` is set.
        """
        words = [w[:budget] for w in doc_pieces[s]]
        lo, hi = window if window is not None else (0, len(words))
        sent_ids: list[int] = []
        first, last = [-1] * len(words), [-1] * len(words)
        cut = False
        for i in range(lo, hi):
            # Once a word does not fit, every later word is cut too: the kept text never has a gap.
            cut = cut or len(sent_ids) + len(words[i]) > budget
            if cut:
                continue
            first[i] = len(sent_ids)
            sent_ids.extend(words[i])
            last[i] = len(sent_ids) - 1
        truncated = sum(len(w) for w in words[lo:hi]) > budget
        left_ctx = [p for sent in doc_pieces[:s] for w in sent for p in w] + [p for w in words[:lo] for p in w]
        right_ctx = [p for w in words[hi:] for p in w] + [p for sent in doc_pieces[s + 1:] for w in sent for p in w]
        room = budget - len(sent_ids)
        n_right = min(len(right_ctx), room - min(len(left_ctx), room // 2))
        n_left = min(len(left_ctx), room - n_right)
        left = left_ctx[len(left_ctx) - n_left:]
        ids = left + sent_ids + right_ctx[:n_right]
        shift = len(left)
        return SentencePieces(ids=ids, word_first=[f + shift if f >= 0 else -1 for f in first],
                              word_last=[l + shift if l >= 0 else -1 for l in last], truncated=truncated,
                              window=(lo, hi))

    def windows(self, doc_pieces: list[list[list[int]]], s: int) -> list[tuple[int, int]]:
        """The word windows of sentence s (one, [0, m), when it fits max_text_len; [(0, 0)] when empty)."""
        c = self.cfg
        return plan_windows([len(w) for w in doc_pieces[s]], c.max_text_len, c.max_span_len) or [(0, 0)]

    # -------------------------------------------------------------------------------- assembly
    def _assemble(self, text_ids: list[int], phase: str,
                  slots: list[tuple[int, int]], num_slots: int, marker_ids: Sequence[tuple[int, int]]
                  ) -> dict[str, np.ndarray]:
        """Common layout: [CLS] text [SEP] (annotations [SEP]) start markers end markers, padded.

        `slots` holds for each filled slot the token indices (in the final sequence) of the wordpieces whose
        position ids its start/end markers copy, and `marker_ids` each slot's (start, end) marker token ids.
        """
        T = self.seq_len(phase)
        anno_ids, anno_bounds = self.ner_anno if phase == "ner" else self.re_anno
        ids = [self.cls_id] + list(text_ids) + [self.sep_id]
        groups = [masks.TEXT] * len(ids)
        anno_start = np.zeros(len(anno_bounds), np.int32)
        anno_end = np.zeros(len(anno_bounds), np.int32)
        if self.cfg.use_annotations:
            base = len(ids)
            anno_start[:] = [base + a for a, _ in anno_bounds]
            anno_end[:] = [base + b for _, b in anno_bounds]
            ids += anno_ids + [self.sep_id]
            groups += [masks.ANNO] * (len(anno_ids) + 1)
        positions = list(range(len(ids)))
        k = len(slots)
        m_base = len(ids)
        for which in (0, 1):
            for s, pair in zip(slots, marker_ids):
                ids.append(pair[which])
                positions.append(positions[s[which]])
                groups.append(masks.MARKER)
        n = len(ids)
        if n > T:
            raise AssertionError(f"instance of length {n} exceeds static length {T}")  # a featurizer bug
        pad = T - n
        arr = {
            "input_ids": np.array(ids + [self.pad_id] * pad, np.int32),
            "position_ids": np.array(positions + [0] * pad, np.int32),
            "token_type_ids": np.zeros(T, np.int32),
            "token_groups": np.array(groups + [masks.PAD] * pad, np.int8),
            "anno_start": anno_start,
            "anno_end": anno_end,
            "weight": np.float32(1.0),
        }
        partner = np.arange(T, dtype=np.int32)
        starts = m_base + np.arange(k)
        partner[starts], partner[starts + k] = starts + k, starts
        arr["marker_partner"] = partner
        cand_ms = np.zeros(num_slots, np.int32)
        cand_me = np.zeros(num_slots, np.int32)
        cand_ms[:k], cand_me[:k] = starts, starts + k
        arr["cand_marker_start"], arr["cand_marker_end"] = cand_ms, cand_me
        arr["cand_mask"] = np.arange(num_slots) < k
        # Loss weight of each slot: 1, or a sampled negative's inverse sampling rate (`sampled_ner_instances`).
        arr["cand_weight"] = arr["cand_mask"].astype(np.float32)
        return arr

    def ner_instances(self, docs: Sequence[Document], with_labels: bool = True) -> tuple[list[Instance], dict]:
        """All NER instances of a split, and the statistics `inspect --stats` prints.

        Stats: sentences, instances, slots (of the instances' slot buckets), filled (candidate slots), gold and
        reachable (gold entities that are a candidate), too_long (gold entities longer than max_span_len, never
        candidates), windowed (sentences cut into several windows), long_words (words shown by their first
        max_text_len pieces), spans_unreachable (spans of <= max_span_len words whose pieces exceed max_text_len).
        """
        out: list[Instance] = []
        stats = dict(sentences=0, instances=0, slots=0, filled=0, gold=0, reachable=0, too_long=0, windowed=0,
                     long_words=0, spans_unreachable=0)
        buckets = self.slot_buckets("ner")
        for d, s, sp, win_spans, gold in self._ner_windows(docs, with_labels, stats):
            for chunk in self.chunks(win_spans, sp, "ner"):
                out.append(self._ner_instance(sp, chunk, gold, d, s))
                stats["instances"] += 1
                stats["slots"] += next(b for b in buckets if len(chunk) <= b)
                stats["filled"] += len(chunk)
        return out, stats

    def ner_windows(self, docs: Sequence[Document]) -> list[tuple]:
        """The NER windows of a split with their candidates and gold classes, tokenised once: what
        `sampled_ner_instances` draws each epoch's training instances from."""
        return list(self._ner_windows(docs, True))

    def sampled_ner_instances(self, windows: Sequence[tuple], negatives: int, rng: np.random.Generator,
                              hard: int = 0, reweight: bool = True) -> list[Instance]:
        """Training instances holding every gold span of each window and `negatives` of its other candidates
        (`slots.sample_negatives`, `hard` of them from those overlapping a gold span), weighted by their inverse
        sampling rate (`cand_weight`), or 1 with `reweight=False`.

        A window's sampled slot count does not depend on the draw, so every epoch's instances have the same
        slots and tokens, in the same order: batch shapes and the epoch's batches stay fixed. Candidates go in
        consecutive runs of K (one instance unless gold + negatives exceed K).
        """
        K = self.cfg.max_candidates
        out = []
        for d, s, sp, spans, gold in windows:
            chosen, weights = slots.sample_negatives(spans, gold, negatives, rng, hard, reweight)
            for lo in range(0, max(len(chosen), 1), K):
                out.append(self._ner_instance(sp, chosen[lo:lo + K], gold, d, s, weights[lo:lo + K]))
        return out

    def _ner_windows(self, docs: Sequence[Document], with_labels: bool, stats: Optional[dict] = None):
        """(doc, sentence, window pieces, the window's candidate spans, gold classes) of every window that gets
        instances: each span of <= max_span_len words in the window where it is most central."""
        c = self.cfg
        stats = stats if stats is not None else collections.Counter()
        for d, doc in enumerate(docs):
            pieces = self.word_pieces(doc)
            for s, sent in enumerate(doc.sentences):
                wins = self.windows(pieces, s)
                stats["sentences"] += 1
                stats["windowed"] += len(wins) > 1
                stats["long_words"] += sum(len(w) > c.max_text_len for w in pieces[s])
                spans = enumerate_spans(len(sent.words), c.max_span_len)
                if len(wins) == 1:
                    owned = [spans]
                else:
                    owner = [best_window(wins, i, j) for i, j in spans]
                    owned = [[sp for sp, o in zip(spans, owner) if o == k] for k in range(len(wins))]
                    stats["spans_unreachable"] += owner.count(None)
                gold = {(e.start, e.end): self.entity_class(e.type, doc.doc_key, s) if with_labels else 0
                        for e in sent.entities}
                stats["gold"] += len(gold)
                stats["too_long"] += sum(b - a >= c.max_span_len for a, b in gold)
                span_set = {sp for chunk in owned for sp in chunk}
                stats["reachable"] += sum(g in span_set for g in gold)
                emitted = False
                for win, win_spans in zip(wins, owned):
                    if not win_spans and (emitted or win != wins[-1]):
                        continue  # a window owning no span needs no instance (but every sentence gets one)
                    emitted = True
                    yield d, s, self.sentence_pieces(pieces, s, c.max_text_len, win), win_spans, \
                        (gold if with_labels else {})

    def _ner_instance(self, sp: SentencePieces, chunk, gold, d, s, weights: Optional[Sequence[float]] = None
                      ) -> Instance:
        K = self.cfg.max_candidates
        offset = 1  # [CLS]
        bounds = [(sp.word_first[i] + offset, sp.word_last[j] + offset) for i, j in chunk]
        markers = (self.marker_ids[NER_START], self.marker_ids[NER_END])
        arr = self._assemble(sp.ids, "ner", bounds, K, [markers] * len(bounds))
        ts, te, labels = np.zeros(K, np.int32), np.zeros(K, np.int32), np.zeros(K, np.int32)
        for slot, ((a, b), span) in enumerate(zip(bounds, chunk)):
            ts[slot], te[slot] = a, b
            labels[slot] = gold.get(span, 0)
        arr.update(cand_text_start=ts, cand_text_end=te, labels=labels)
        if weights is not None:
            arr["cand_weight"][:len(chunk)] = weights
        return Instance(arr, d, s, list(chunk), window=sp.window)

    def re_instances(self, docs: Sequence[Document], entities: Optional[Sequence[Sequence[Sequence[Entity]]]] = None,
                     ) -> list[Instance]:
        """One instance per subject entity and window (more if its objects there exceed its slots).

        entities[d][s] overrides the gold entities of sentence s of document d (end-to-end evaluation
        on predicted entities); labels are then still read from the gold relations where spans match
        (`pair_labels`). Each ordered entity pair is an object slot exactly once, unless it is unreachable
        (module docstring).
        """
        return [self._re_instance(sp, subj, chunk, gold, d, s, types)
                for d, s, sp, subj, objs, gold, types in self._re_groups(docs, entities)
                for chunk in self.chunks(objs, sp, "re")]

    def _re_groups(self, docs: Sequence[Document], entities):
        """(doc, sentence, window pieces, subject, its objects in that window, gold pair labels, entity type by
        span) of every subject and window that gets instances."""
        c = self.cfg
        for d, doc in enumerate(docs):
            pieces = self.word_pieces(doc)
            for s, sent in enumerate(doc.sentences):
                ents = list(entities[d][s]) if entities is not None else list(sent.entities)
                types: dict[Span, str] = {}
                for e in ents:  # a span predicted with two types (overlap=none) is marked with the first
                    types.setdefault((e.start, e.end), e.type)
                spans = sorted(types)
                if not spans:
                    continue
                wins, assign, home = self._re_plan(pieces, s, spans)
                gold = pair_labels(self.rel_space, sent.relations)[0]
                texts: dict[int, SentencePieces] = {}
                for subj in spans:
                    groups: dict[int, list[Span]] = {}
                    for o in spans:
                        if o != subj and (subj, o) in assign:
                            groups.setdefault(assign[(subj, o)], []).append(o)
                    if not groups:  # no object within reach: one instance without objects, as for a lone entity
                        if subj not in home:
                            continue  # the subject alone exceeds max_text_len: counted by relation_stats
                        groups[home[subj]] = []
                    for k in sorted(groups):
                        if k not in texts:
                            texts[k] = self.sentence_pieces(pieces, s, c.max_text_len, wins[k])
                        yield d, s, texts[k], subj, groups[k], gold, types

    def _re_plan(self, pieces, s: int, spans: Sequence[Span]) -> tuple[list[tuple[int, int]], dict, dict]:
        """RE windows of sentence s (`windows.pair_windows`)."""
        wins = self.windows(pieces, s)
        if len(wins) == 1:
            return wins, {(x, y): 0 for x in spans for y in spans if x != y}, {x: 0 for x in spans}
        return pair_windows([len(w) for w in pieces[s]], spans, self.cfg.max_text_len)

    def _re_markers(self, span_type: Optional[str]) -> tuple[int, int, int, int]:
        """(subject start, subject end, object start, object end) marker ids of an entity of this type."""
        if not self.cfg.typed_markers:
            return self.untyped_re_markers
        if span_type not in self.re_markers:
            raise ValueError(f"re.typed_markers: entity type {span_type!r} is not in the label file "
                             f"(known: {', '.join(self.re_markers)})")
        return self.re_markers[span_type]

    def _re_instance(self, sp: SentencePieces, subj: Span, objs: Sequence[Span], gold: dict, d: int, s: int,
                     types: dict[Span, str]) -> Instance:
        c = self.cfg
        a, b = sp.word_first[subj[0]], sp.word_last[subj[1]]
        s_start, s_end = self._re_markers(types[subj])[:2]
        ids = sp.ids[:a] + [s_start] + sp.ids[a:b + 1] + [s_end] + sp.ids[b + 1:]

        def shifted(p: int) -> int:  # token index in the final sequence of text piece p
            return 1 + p + (p >= a) + (p > b)

        bounds = [(shifted(sp.word_first[i]), shifted(sp.word_last[j])) for i, j in objs]
        arr = self._assemble(ids, "re", bounds, c.max_objects, [self._re_markers(types[o])[2:] for o in objs])
        labels = np.zeros(c.max_objects, np.int32)
        for slot, o in enumerate(objs):
            labels[slot] = gold.get((subj, o), 0)
        arr.update(subj_marker_start=np.int32(1 + a), subj_marker_end=np.int32(1 + b + 2), labels=labels)
        return Instance(arr, d, s, list(objs), subject=subj, window=sp.window)
