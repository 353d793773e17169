"""Documents -> static-shape model instances (SPEC §3 NER, §8 RE).

Layout of one instance (packed, then padded to the config's static length T):

    [CLS] context_left sentence context_right [SEP] a_0 .. a_{N-1} [SEP] M^s_0 .. M^s_{k-1} M^e_0 .. M^e_{k-1} [PAD..]

Position ids run 0, 1, 2, ... over text, [SEP], annotations and the second [SEP]; a marker takes the
position id of its span's first (start marker) or last (end marker) wordpiece. In the RE phase solid
subject markers are real tokens inside the text (so the text's position ids shift past them) and every
other entity gets a pair of levitated object markers. Every array has a shape fixed by the config alone,
so one XLA compile serves a whole phase and split.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Optional, Sequence

import numpy as np

from lai_jax.data import masks
from lai_jax.data.documents import Document, Entity
from lai_jax.data.labels import LabelSet
from lai_jax.decoding import RelationLabelSpace

# Reserved vocabulary entries used as marker tokens (BERT vocabularies carry [unused0..98]).
NER_START, NER_END = "[unused0]", "[unused1]"
SUBJ_START, SUBJ_END = "[unused2]", "[unused3]"
OBJ_START, OBJ_END = "[unused4]", "[unused5]"


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """The host-side shape parameters (config fields of the same names)."""
    max_text_len: int = 150  # C: wordpieces of sentence + document context
    max_span_len: int = 8  # L: longest candidate span, in words
    max_candidates: int = 220  # K: candidate slots per NER instance
    max_objects: int = 16  # object slots per RE instance
    use_annotations: bool = True  # False = the paper's "w/o 1st round" ablation


def round_up(n: int, multiple: int = 8) -> int:
    return -(-n // multiple) * multiple


def num_candidates(num_words: int, max_span_len: int) -> int:
    """|Psi| for a sentence of m words: m*L + (L - L^2)/2 when m >= L (the paper's formula), else m(m+1)/2."""
    l = min(num_words, max_span_len)
    return num_words * l + (l - l * l) // 2


def enumerate_spans(num_words: int, max_span_len: int) -> list[tuple[int, int]]:
    """All spans of <= max_span_len words, sorted by (start, end) so neighbours share an instance."""
    return [(i, j) for i in range(num_words) for j in range(i, min(num_words, i + max_span_len))]


@dataclasses.dataclass
class SentencePieces:
    """Wordpieces of one sentence and its document context, cut to the text budget."""
    ids: list[int]  # text wordpieces: left context + sentence + right context
    word_first: list[int]  # per sentence word: index of its first wordpiece in `ids` (-1 if cut off)
    word_last: list[int]
    truncated: bool  # the sentence alone exceeded max_text_len


@dataclasses.dataclass
class Instance:
    """One model instance: fixed-shape numpy arrays plus host-side bookkeeping."""
    arrays: dict[str, np.ndarray]
    doc: int  # index of the document in the split
    sent: int  # index of the sentence in the document
    spans: list[tuple[int, int]]  # candidate (NER) or object (RE) spans, one per filled slot
    subject: Optional[tuple[int, int]] = None  # RE only


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

    # ----------------------------------------------------------------------------------- shapes
    def _annotation_segment(self, annotations: Sequence[str]) -> tuple[list[int], list[tuple[int, int]]]:
        """Wordpieces of all annotations in order, and each annotation's (first, last) piece offset."""
        ids, bounds = [], []
        for text in annotations:
            pieces = self.tok(text, add_special_tokens=False)["input_ids"] or [self.unk_id]
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

    def sentence_pieces(self, doc_pieces: list[list[list[int]]], s: int, budget: int) -> SentencePieces:
        """Sentence s with left/right document context filling `budget` wordpieces (half each side first)."""
        sent_ids: list[int] = []
        first, last = [], []
        cut = False
        for word in doc_pieces[s]:
            # Once a word does not fit, every later word is cut too: the kept text never has a gap.
            cut = cut or len(sent_ids) + len(word) > budget
            if cut:
                first.append(-1), last.append(-1)
                continue
            first.append(len(sent_ids))
            sent_ids.extend(word)
            last.append(len(sent_ids) - 1)
        truncated = sum(len(w) for w in doc_pieces[s]) > budget
        left_ctx = [p for sent in doc_pieces[:s] for w in sent for p in w]
        right_ctx = [p for sent in doc_pieces[s + 1:] for w in sent for p in w]
        room = budget - len(sent_ids)
        n_right = min(len(right_ctx), room - min(len(left_ctx), room // 2))
        n_left = min(len(left_ctx), room - n_right)
        left = left_ctx[len(left_ctx) - n_left:]
        ids = left + sent_ids + right_ctx[:n_right]
        shift = len(left)
        return SentencePieces(ids=ids, word_first=[f + shift if f >= 0 else -1 for f in first],
                              word_last=[l + shift if l >= 0 else -1 for l in last], truncated=truncated)

    # -------------------------------------------------------------------------------- assembly
    def _assemble(self, text_ids: list[int], phase: str,
                  slots: list[tuple[int, int]], num_slots: int, marker_ids: tuple[int, int]) -> dict[str, np.ndarray]:
        """Common layout: [CLS] text [SEP] (annotations [SEP]) start markers end markers, padded.

        `slots` holds for each filled slot the token indices (in the final sequence) of the wordpieces whose
        position ids its start/end markers copy.
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
            for s in slots:
                ids.append(marker_ids[which])
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
        return arr

    def ner_instances(self, docs: Sequence[Document], with_labels: bool = True) -> tuple[list[Instance], dict]:
        """All NER instances of a split, and the statistics `inspect --stats` prints."""
        c = self.cfg
        out: list[Instance] = []
        stats = dict(sentences=0, instances=0, slots=0, filled=0, gold=0, reachable=0, truncated=0)
        for d, doc in enumerate(docs):
            pieces = self.word_pieces(doc)
            for s, sent in enumerate(doc.sentences):
                sp = self.sentence_pieces(pieces, s, c.max_text_len)
                stats["sentences"] += 1
                stats["truncated"] += sp.truncated
                spans = [(i, j) for i, j in enumerate_spans(len(sent.words), c.max_span_len)
                         if sp.word_last[j] >= 0]  # spans cut off by max_text_len cannot be marked
                gold = {(e.start, e.end): self.entity_class(e.type, doc.doc_key, s) if with_labels else 0
                        for e in sent.entities}
                stats["gold"] += len(gold)
                span_set = set(spans)
                stats["reachable"] += sum(g in span_set for g in gold)
                for lo in range(0, max(len(spans), 1), c.max_candidates):
                    chunk = spans[lo:lo + c.max_candidates]
                    out.append(self._ner_instance(sp, chunk, gold if with_labels else {}, d, s))
                    stats["instances"] += 1
                    stats["slots"] += c.max_candidates
                    stats["filled"] += len(chunk)
        return out, stats

    def _ner_instance(self, sp: SentencePieces, chunk, gold, d, s) -> Instance:
        K = self.cfg.max_candidates
        offset = 1  # [CLS]
        bounds = [(sp.word_first[i] + offset, sp.word_last[j] + offset) for i, j in chunk]
        arr = self._assemble(sp.ids, "ner", bounds, K, (self.marker_ids[NER_START], self.marker_ids[NER_END]))
        ts, te, labels = np.zeros(K, np.int32), np.zeros(K, np.int32), np.zeros(K, np.int32)
        for slot, ((a, b), span) in enumerate(zip(bounds, chunk)):
            ts[slot], te[slot] = a, b
            labels[slot] = gold.get(span, 0)
        arr.update(cand_text_start=ts, cand_text_end=te, labels=labels)
        return Instance(arr, d, s, list(chunk))

    def re_instances(self, docs: Sequence[Document], entities: Optional[Sequence[Sequence[Sequence[Entity]]]] = None,
                     ) -> list[Instance]:
        """One instance per subject entity (more if it has over max_objects objects).

        entities[d][s] overrides the gold entities of sentence s of document d (end-to-end evaluation
        on predicted entities); labels are then still read from the gold relations where spans match.
        """
        c = self.cfg
        out: list[Instance] = []
        for d, doc in enumerate(docs):
            pieces = self.word_pieces(doc)
            for s, sent in enumerate(doc.sentences):
                ents = list(entities[d][s]) if entities is not None else list(sent.entities)
                spans = sorted({(e.start, e.end) for e in ents})
                gold = {(r.head, r.tail): r.type for r in sent.relations}
                for subj in spans:
                    objs = [o for o in spans if o != subj]
                    for lo in range(0, max(len(objs), 1), c.max_objects):
                        inst = self._re_instance(pieces, s, subj, objs[lo:lo + c.max_objects], gold, d)
                        if inst is not None:
                            out.append(inst)
        return out

    def _re_instance(self, pieces, s: int, subj, objs, gold, d) -> Optional[Instance]:
        c = self.cfg
        sp = self.sentence_pieces(pieces, s, c.max_text_len)
        if sp.word_last[subj[1]] < 0:
            return None  # subject cut off by max_text_len: it cannot carry solid markers
        objs = [o for o in objs if sp.word_last[o[1]] >= 0]
        a, b = sp.word_first[subj[0]], sp.word_last[subj[1]]
        ids = sp.ids[:a] + [self.marker_ids[SUBJ_START]] + sp.ids[a:b + 1] + [self.marker_ids[SUBJ_END]] + sp.ids[b + 1:]

        def shifted(p: int) -> int:  # token index in the final sequence of text piece p
            return 1 + p + (p >= a) + (p > b)

        bounds = [(shifted(sp.word_first[i]), shifted(sp.word_last[j])) for i, j in objs]
        arr = self._assemble(ids, "re", bounds, c.max_objects,
                             (self.marker_ids[OBJ_START], self.marker_ids[OBJ_END]))
        labels = np.zeros(c.max_objects, np.int32)
        for slot, o in enumerate(objs):
            labels[slot] = self.rel_space.gold_label(gold.get((subj, o)), gold.get((o, subj)))
        arr.update(subj_marker_start=np.int32(1 + a), subj_marker_end=np.int32(1 + b + 2), labels=labels)
        return Instance(arr, d, s, list(objs), subject=subj)


def stack(instances: Sequence[Instance], size: Optional[int] = None) -> dict[str, np.ndarray]:
    """Stack instances into a batch, padding to `size` with zero-weight copies of the first instance."""
    arrays = [inst.arrays for inst in instances]
    size = size or len(arrays)
    if len(arrays) < size:
        arrays = list(arrays) + [empty_batch_like(arrays[0])] * (size - len(arrays))
    return {k: np.stack([a[k] for a in arrays]) for k in arrays[0]}


def empty_batch_like(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Zero-weight arrays of the same shapes: all PAD tokens, no candidates, weight 0."""
    return {k: np.zeros_like(v) for k, v in batch.items()}


def iter_batches(instances: Sequence[Instance], batch_size: int, order: Optional[Iterable[int]] = None):
    """Yield (batch, instances) with every batch padded to `batch_size` (zero weight on the padding)."""
    idx = list(order) if order is not None else list(range(len(instances)))
    for lo in range(0, len(idx), batch_size):
        chunk = [instances[i] for i in idx[lo:lo + batch_size]]
        yield stack(chunk, batch_size), chunk
