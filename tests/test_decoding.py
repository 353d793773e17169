"""Decoding on hand-made probability vectors; expected answers worked out by hand in comments."""
import math

import numpy as np
import pytest

from lai_jax.data.labels import RelationLabelSpace
from lai_jax.decoding import decode_ner, decode_relations

TYPES = ["PER", "ORG"]
SPANS = [(0, 0), (0, 1), (1, 1), (2, 3), (3, 3)]
FILTER = np.array([0.9, 0.6, 0.4, 0.8, 0.7])
TYPE_PROBS = np.array([
    [0.1, 0.7, 0.2],  # (0,0): PER 0.7, filter 0.9 -> kept
    [0.1, 0.1, 0.8],  # (0,1): ORG 0.8, filter 0.6 -> kept
    [0.2, 0.1, 0.7],  # (1,1): ORG 0.7, filter 0.4 -> dropped by the filter
    [0.6, 0.3, 0.1],  # (2,3): none -> dropped
    [0.3, 0.6, 0.1],  # (3,3): PER 0.6, filter 0.7 -> kept
])


def names(ents):
    return [(s, e, t) for s, e, t, _ in ents]


def test_ner_filter_and_none():
    # overlap="none": this test is about the filter and the none class only
    out = decode_ner(SPANS, FILTER, TYPE_PROBS, TYPES, overlap="none")
    assert names(out) == [(0, 0, "PER"), (0, 1, "ORG"), (3, 3, "PER")]
    # score = the type probability alone (not times the filter probability)
    assert [p for *_, p in out] == pytest.approx([0.7, 0.8, 0.6])
    # without the filter, (1,1) comes back; (2,3) is still none
    out = decode_ner(SPANS, None, TYPE_PROBS, TYPES, use_filter=False, overlap="none")
    assert names(out) == [(0, 0, "PER"), (0, 1, "ORG"), (1, 1, "ORG"), (3, 3, "PER")]
    # threshold 0.65: filter keeps (0,0) 0.9, (2,3) 0.8 (none), (3,3) 0.7
    out = decode_ner(SPANS, FILTER, TYPE_PROBS, TYPES, filter_threshold=0.65, overlap="none")
    assert names(out) == [(0, 0, "PER"), (3, 3, "PER")]
    # the threshold is inclusive (>=)
    assert names(decode_ner(SPANS, FILTER, TYPE_PROBS, TYPES, filter_threshold=0.9, overlap="none")) == [(0, 0, "PER")]


def test_ner_flat_greedy():
    # by score: (0,1) 0.8 accepted; (0,0) 0.7 overlaps it -> dropped; (3,3) 0.6 accepted
    out = decode_ner(SPANS, FILTER, TYPE_PROBS, TYPES, overlap="flat")
    assert names(out) == [(0, 1, "ORG"), (3, 3, "PER")]
    # no filter: (0,1) 0.8; (0,0) 0.7 and (1,1) 0.7 overlap it; (3,3) 0.6 -> same answer
    out = decode_ner(SPANS, None, TYPE_PROBS, TYPES, overlap="flat", use_filter=False)
    assert names(out) == [(0, 1, "ORG"), (3, 3, "PER")]
    # overlap is independent of the type; a higher-scoring later span wins, output sorted by position
    spans = [(0, 2), (2, 4), (5, 5)]
    probs = np.array([[0.0, 0.6, 0.4], [0.0, 0.1, 0.9], [0.0, 0.5, 0.5]])
    out = decode_ner(spans, np.ones(3), probs, TYPES, overlap="flat")
    # (2,4) ORG 0.9 accepted; (0,2) PER 0.6 overlaps at word 2 -> dropped; (5,5) PER 0.5 (tie -> lower index)
    assert names(out) == [(2, 4, "ORG"), (5, 5, "PER")]


def test_ner_nested_overlap_rules():
    # Hand-made overlaps (filter all 1): words 0..6
    #   (0,3) ORG 0.9   (1,1) PER 0.8 nested in it, other type   (2,4) ORG 0.7 crosses (0,3), same type
    #   (3,5) PER 0.6 crosses (0,3) [ORG] and (2,4) [ORG], and overlaps no PER   (5,6) PER 0.5 overlaps (3,5) PER
    spans = [(0, 3), (1, 1), (2, 4), (3, 5), (5, 6)]
    probs = np.array([[0.05, 0.05, 0.9], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.3, 0.6, 0.1], [0.2, 0.5, 0.3]])
    ones = np.ones(5)
    # plmarker (the default): visited by score 0.9, 0.8, 0.7, 0.6, 0.5
    #   (0,3) ORG kept; (1,1) PER kept (nested, different type); (2,4) ORG dropped (overlaps the
    #   higher-scoring ORG (0,3)); (3,5) PER kept (its overlaps are ORG); (5,6) PER dropped (overlaps PER (3,5))
    want = [(0, 3, "ORG"), (1, 1, "PER"), (3, 5, "PER")]
    assert names(decode_ner(spans, ones, probs, TYPES)) == want
    assert names(decode_ner(spans, ones, probs, TYPES, overlap="plmarker")) == want
    # flat: (0,3) kept; (1,1), (2,4), (3,5) overlap it; (5,6) overlaps only dropped spans -> kept
    assert names(decode_ner(spans, ones, probs, TYPES, overlap="flat")) == [(0, 3, "ORG"), (5, 6, "PER")]
    # none: everything the filter and classifier accept
    assert names(decode_ner(spans, ones, probs, TYPES, overlap="none")) == sorted(
        [(0, 3, "ORG"), (1, 1, "PER"), (2, 4, "ORG"), (3, 5, "PER"), (5, 6, "PER")])
    # same-type overlap resolved by score whichever span comes first: swap the two ORG scores
    probs2 = probs.copy()
    probs2[0], probs2[2] = [0.1, 0.2, 0.7], [0.05, 0.05, 0.9]
    # (2,4) ORG 0.9 kept; (1,1) PER 0.8 kept; (0,3) ORG 0.7 dropped (overlaps ORG (2,4)); (3,5) PER 0.6 kept
    # (no PER overlap); (5,6) PER 0.5 dropped (overlaps PER (3,5))
    assert names(decode_ner(spans, ones, probs2, TYPES)) == [(1, 1, "PER"), (2, 4, "ORG"), (3, 5, "PER")]
    with pytest.raises(ValueError, match="overlap"):
        decode_ner(spans, ones, probs, TYPES, overlap="nested")


def test_ner_same_span_merged_by_max():
    spans = [(0, 0), (0, 0), (0, 0)]
    probs = np.array([[0.1, 0.6, 0.3], [0.1, 0.2, 0.7], [0.05, 0.05, 0.9]])
    # the third instance (0.9) is removed by the filter; among the rest ORG 0.7 > PER 0.6
    out = decode_ner(spans, np.array([0.9, 0.9, 0.1]), probs, TYPES)
    assert out == [(0, 0, "ORG", pytest.approx(0.7))]
    assert decode_ner([], np.zeros(0), np.zeros((0, 3)), TYPES) == []
    with pytest.raises(ValueError):
        decode_ner(spans, np.ones(3), np.ones((3, 2)), TYPES)


# Classes: 0 none, 1 WORK, 2 PER-SOC, 3 PART, 4 WORK^-1, 5 PART^-1
SPACE = RelationLabelSpace(("WORK", "PER-SOC", "PART"), (False, True, False))


def test_label_space_ids():
    assert SPACE.num_classes == 6
    assert [SPACE.forward_id(r) for r in ("WORK", "PER-SOC", "PART")] == [1, 2, 3]
    assert [SPACE.inverse_id(r) for r in ("WORK", "PER-SOC", "PART")] == [4, 2, 5]
    assert SPACE.class_names() == ["none", "WORK", "PER-SOC", "PART", "WORK^-1", "PART^-1"]
    assert list(SPACE.swap_permutation()) == [0, 4, 2, 5, 1, 3]
    assert SPACE.class_info(5) == ("PART", True) and SPACE.class_info(0) is None
    assert RelationLabelSpace.from_types(["WORK", "PER-SOC", "PART"], ["PER-SOC"]) == SPACE
    all_sym = RelationLabelSpace(("A", "B"), (True, True))
    assert all_sym.num_classes == 3 and all_sym.inverse_id("B") == 2
    with pytest.raises(ValueError):
        SPACE.forward_id("NOPE")
    with pytest.raises(ValueError):
        RelationLabelSpace(("A", "B"), (True,))


def test_gold_label():
    assert SPACE.gold_label(None, None) == 0
    assert SPACE.gold_label("WORK", None) == 1
    assert SPACE.gold_label(None, "WORK") == 4  # subj is the object of WORK -> inverse
    assert SPACE.gold_label(None, "PART") == 5
    assert SPACE.gold_label(None, "PER-SOC") == 2  # symmetric: its own inverse
    assert SPACE.gold_label("PART", "WORK") == 3  # both directions labelled: forward wins
    assert SPACE.gold_label("PER-SOC", "PER-SOC") == 2


def p(**kw):
    """Probability vector from class-name keywords (none, WORK, PERSOC, PART, WORKi, PARTi)."""
    idx = {"none": 0, "WORK": 1, "PERSOC": 2, "PART": 3, "WORKi": 4, "PARTi": 5}
    v = np.zeros(6)
    for k, x in kw.items():
        v[idx[k]] = x
    assert v.sum() == pytest.approx(1.0)
    return v


ENTS = [(0, 0), (2, 2), (4, 5)]
PAIRS = {
    # (0,1): A says WORK 0.6; B says none 0.55 (WORK^-1 0.45)
    (0, 1): p(none=0.4, WORK=0.6), (1, 0): p(none=0.55, WORKi=0.45),
    # (0,2): A says WORK 0.7; B says none 0.9 (WORK^-1 0.1)
    (0, 2): p(none=0.3, WORK=0.7), (2, 0): p(none=0.9, WORKi=0.1),
    # (1,2): A says PART 0.8; B says PART^-1 0.7 -> both agree on (2,2)->(4,5) PART
    (1, 2): p(none=0.1, PART=0.8, PARTi=0.1), (2, 1): p(none=0.2, PART=0.1, PARTi=0.7),
}


def test_decode_both():
    # only (1,2) has both argmaxes agreeing above 0.5: score (0.8 + 0.7)/2 = 0.75
    assert decode_relations(ENTS, PAIRS, SPACE, "both") == [((2, 2), (4, 5), "PART", pytest.approx(0.75))]
    # threshold 0.75: B's 0.7 is below -> nothing
    assert decode_relations(ENTS, PAIRS, SPACE, "both", threshold=0.75) == []


def test_decode_either():
    # (0,1): A WORK 0.6; (0,2): A WORK 0.7; (1,2): A PART 0.8 and B PART^-1 0.7 -> same triple, max 0.8
    assert decode_relations(ENTS, PAIRS, SPACE, "either") == [
        ((0, 0), (2, 2), "WORK", pytest.approx(0.6)),
        ((0, 0), (4, 5), "WORK", pytest.approx(0.7)),
        ((2, 2), (4, 5), "PART", pytest.approx(0.8)),
    ]
    # threshold 0.75: only A of (1,2) (0.8) passes
    assert decode_relations(ENTS, PAIRS, SPACE, "either", threshold=0.75) == [
        ((2, 2), (4, 5), "PART", pytest.approx(0.8))]


def test_decode_sum():
    # (0,1): none 0.4*0.55 = 0.22 < WORK 0.6*0.45 = 0.27 -> WORK, score sqrt(0.27)
    # (0,2): none 0.3*0.9 = 0.27 > WORK 0.7*0.1 = 0.07 -> none
    # (1,2): PART 0.8*0.7 = 0.56 > none 0.1*0.2 = 0.02 > PART^-1 0.1*0.1 -> PART, score sqrt(0.56)
    expected = [((0, 0), (2, 2), "WORK", pytest.approx(math.sqrt(0.27))),
                ((2, 2), (4, 5), "PART", pytest.approx(math.sqrt(0.56)))]
    assert decode_relations(ENTS, PAIRS, SPACE, "sum") == expected
    # threshold unused by `sum`
    assert decode_relations(ENTS, PAIRS, SPACE, "sum", threshold=0.99) == expected


def test_inverse_direction_gives_reversed_triple():
    # A (subject (0,0)) says WORK^-1: (2,2) works for (0,0); B (subject (2,2)) agrees with WORK forward
    pairs = {(0, 1): p(none=0.1, WORKi=0.9), (1, 0): p(none=0.2, WORK=0.8)}
    for rule, sc in (("both", 0.85), ("either", 0.9), ("sum", math.sqrt(0.72))):
        assert decode_relations(ENTS, pairs, SPACE, rule) == [((2, 2), (0, 0), "WORK", pytest.approx(sc))]


def test_missing_direction():
    only_a = {(0, 1): p(none=0.3, WORK=0.7)}
    assert decode_relations(ENTS, only_a, SPACE, "both") == []
    assert decode_relations(ENTS, only_a, SPACE, "either") == [((0, 0), (2, 2), "WORK", pytest.approx(0.7))]
    assert decode_relations(ENTS, only_a, SPACE, "sum") == [((0, 0), (2, 2), "WORK", pytest.approx(0.7))]
    # only (2,2)'s instance: it says it is the object of WORK, i.e. (0,0) -> (2,2) WORK
    only_b = {(1, 0): p(none=0.1, WORKi=0.9)}
    assert decode_relations(ENTS, only_b, SPACE, "both") == []
    for rule in ("either", "sum"):
        assert decode_relations(ENTS, only_b, SPACE, rule) == [((0, 0), (2, 2), "WORK", pytest.approx(0.9))]
    # a direction present but arguing for none does not let `both` stand
    assert decode_relations(ENTS, {(0, 1): p(none=0.3, WORK=0.7), (1, 0): p(none=1.0)}, SPACE, "both") == []


def test_symmetric_dedupe_in_span_order():
    ents = [(4, 4), (0, 0)]  # entity 0 comes *after* entity 1 in span order
    pairs = {(0, 1): p(none=0.2, PERSOC=0.8), (1, 0): p(none=0.4, PERSOC=0.6)}
    # one triple, head = the earlier span (0,0), whatever the index order
    assert decode_relations(ents, pairs, SPACE, "both") == [((0, 0), (4, 4), "PER-SOC", pytest.approx(0.7))]
    assert decode_relations(ents, pairs, SPACE, "either") == [((0, 0), (4, 4), "PER-SOC", pytest.approx(0.8))]
    assert decode_relations(ents, pairs, SPACE, "sum") == [
        ((0, 0), (4, 4), "PER-SOC", pytest.approx(math.sqrt(0.48)))]
    # a single direction, read from the later span's instance, is also output in span order
    assert decode_relations(ents, {(0, 1): p(none=0.2, PERSOC=0.8)}, SPACE, "either") == [
        ((0, 0), (4, 4), "PER-SOC", pytest.approx(0.8))]


def test_either_two_different_triples_and_disagreement():
    # A says WORK (0->1); B says PART (1->0): `either` returns both, `both` none,
    # `sum` picks the larger joint: WORK 0.6*0.3 = 0.18 vs PART^-1 (frame (0,1)) 0.3*0.6 = 0.18 vs none 0.1*0.1
    # -> exact tie broken by the lower class id (WORK, 1 < 5)
    pairs = {(0, 1): p(none=0.1, WORK=0.6, PARTi=0.3), (1, 0): p(none=0.1, WORKi=0.3, PART=0.6)}
    assert decode_relations(ENTS, pairs, SPACE, "either") == [
        ((0, 0), (2, 2), "WORK", pytest.approx(0.6)), ((2, 2), (0, 0), "PART", pytest.approx(0.6))]
    assert decode_relations(ENTS, pairs, SPACE, "both") == []
    out = decode_relations(ENTS, pairs, SPACE, "sum")
    assert out == [((0, 0), (2, 2), "WORK", pytest.approx(math.sqrt(0.18)))]


def test_decode_relations_validation():
    with pytest.raises(ValueError):
        decode_relations(ENTS, PAIRS, SPACE, "vote")
    with pytest.raises(ValueError):
        decode_relations(ENTS, {(0, 1): np.ones(5) / 5}, SPACE)
    with pytest.raises(ValueError):
        decode_relations(ENTS, {(0, 3): p(none=1.0)}, SPACE)
    assert decode_relations([], {}, SPACE, "sum") == []


def test_type_constraints_rule_out_classes_that_do_not_fit_the_pair():
    from lai_jax.decoding import fitting_classes
    sigs = frozenset({("WORK", "PER", "ORG"), ("PART", "ORG", "ORG"), ("PER-SOC", "PER", "GPE")})
    # Slot (subject PER, object ORG): WORK fits forward; WORK^-1 would make the ORG work for the PER; PART needs
    # two ORGs; PER-SOC (symmetric) needs PER and GPE in either order.
    assert fitting_classes(SPACE, "PER", "ORG", sigs).tolist() == [True, True, False, False, False, False]
    assert fitting_classes(SPACE, "ORG", "PER", sigs).tolist() == [True, False, False, False, True, False]
    assert fitting_classes(SPACE, "GPE", "PER", sigs).tolist() == [True, False, True, False, False, False]
    assert fitting_classes(SPACE, "ORG", "ORG", sigs).tolist() == [True, False, False, True, False, True]
    # (1,2) said PART both ways; between a PER and an ORG PART cannot be, so `both` keeps nothing, `either`
    # nothing for that pair, and `sum` falls back on the best class that fits (none: 0.1*0.2 vs WORK 0).
    types = ["PER", "PER", "ORG"]
    assert decode_relations(ENTS, PAIRS, SPACE, "both", entity_types=types, signatures=sigs) == []
    assert decode_relations(ENTS, PAIRS, SPACE, "either", entity_types=types, signatures=sigs) == [
        ((0, 0), (4, 5), "WORK", pytest.approx(0.7))]  # (0,1) PER -> PER WORK is ruled out too
    # The argmax moves to the next class that fits: (0,1) says PART 0.5 > WORK 0.4 between a PER and an ORG;
    # the probabilities are not renormalised (WORK stays 0.4, under the default threshold of 0.5).
    pairs = {(0, 1): p(none=0.1, WORK=0.4, PART=0.5)}
    assert decode_relations(ENTS, pairs, SPACE, "either", 0.3) == [((0, 0), (2, 2), "PART", pytest.approx(0.5))]
    fit = dict(entity_types=["PER", "ORG", "ORG"], signatures=sigs)
    assert decode_relations(ENTS, pairs, SPACE, "either", 0.3, **fit) == [((0, 0), (2, 2), "WORK", pytest.approx(0.4))]
    assert decode_relations(ENTS, pairs, SPACE, "either", **fit) == []
    with pytest.raises(ValueError):
        decode_relations(ENTS, PAIRS, SPACE, "both", signatures=sigs)  # no entity types


def test_relation_signatures_of_documents():
    from lai_jax.data.documents import Document, Entity, Relation, Sentence
    from lai_jax.run_record import signatures, training_data
    sent = Sentence(["a", "b", "c", "d"], [Entity(0, 0, "PER"), Entity(1, 1, "ORG"), Entity(3, 3, "PER")],
                    [Relation((0, 0), (1, 1), "WORK"), Relation((3, 3), (1, 1), "WORK"),
                     Relation((1, 1), (0, 0), "PART")])
    docs = [Document("d", [sent]), Document("e", [Sentence(["x"])])]
    assert signatures(docs) == {("PART", "ORG", "PER"), ("WORK", "PER", "ORG")}
    assert training_data(docs)["relation_signatures"] == [["PART", "ORG", "PER"], ["WORK", "PER", "ORG"]]
