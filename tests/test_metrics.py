"""Metrics on hand-made gold / prediction sets; every expected number is counted by hand in comments."""
import pytest

from lai_jax.data.documents import Document, Entity, Relation, Sentence
from lai_jax.metrics import PRF, format_table, score

SYM = {"WORK": False, "PER-SOC": True}


def words(n):
    return [f"w{i}" for i in range(n)]


def gold_docs():
    return [
        Document("d1", [
            # d1 s0: PER(0,0) ORG(2,3) LOC(5,5); WORK (0,0)->(2,3)
            Sentence(words(12),
                     [Entity(0, 0, "PER"), Entity(2, 3, "ORG"), Entity(5, 5, "LOC")],
                     [Relation((0, 0), (2, 3), "WORK")]),
            # d1 s1: PER(0,0) PER(2,2) ORG(4,13) (10 words, longer than any 8-word span cap);
            # PER-SOC (0,0)-(2,2)
            Sentence(words(15),
                     [Entity(0, 0, "PER"), Entity(2, 2, "PER"), Entity(4, 13, "ORG")],
                     [Relation((0, 0), (2, 2), "PER-SOC")]),
        ]),
        Document("d2", [
            # d2 s0: PER(1,1) ORG(3,3); WORK (1,1)->(3,3)
            Sentence(words(8), [Entity(1, 1, "PER"), Entity(3, 3, "ORG")],
                     [Relation((1, 1), (3, 3), "WORK")]),
        ]),
    ]


def pred_docs():
    # Deliberately listed in another document order: matching is by doc_key.
    return [
        Document("d2", [
            # PER(1,1) predicted as LOC (wrong type), ORG(3,3) right, LOC(6,6) spurious.
            # WORK (1,1)->(3,3): RE-correct, but RE+-wrong (head type LOC != PER).
            # WORK (3,3)->(1,1): reversed asymmetric relation, wrong everywhere.
            Sentence(words(8), [Entity(1, 1, "LOC"), Entity(3, 3, "ORG"), Entity(6, 6, "LOC")],
                     [Relation((1, 1), (3, 3), "WORK"), Relation((3, 3), (1, 1), "WORK")]),
        ]),
        Document("d1", [
            # PER(0,0) right (listed twice: counts once), ORG(2,3) right, (5,5) typed PER (gold LOC).
            # WORK (0,0)->(2,3) right, listed twice.
            Sentence(words(12),
                     [Entity(0, 0, "PER"), Entity(2, 3, "ORG"), Entity(5, 5, "PER"), Entity(0, 0, "PER")],
                     [Relation((0, 0), (2, 3), "WORK"), Relation((0, 0), (2, 3), "WORK")]),
            # PER(0,0), PER(2,2) right; the 10-word ORG(4,13) is missed.
            # PER-SOC predicted in both directions: symmetric, so one item, and it is correct.
            Sentence(words(15), [Entity(0, 0, "PER"), Entity(2, 2, "PER")],
                     [Relation((2, 2), (0, 0), "PER-SOC"), Relation((0, 0), (2, 2), "PER-SOC")]),
        ]),
    ]


def check(d, p, r, f1, tp=None, n_pred=None, n_gold=None):
    assert d["p"] == pytest.approx(p)
    assert d["r"] == pytest.approx(r)
    assert d["f1"] == pytest.approx(f1)
    if tp is not None:
        assert (d["tp"], d["n_pred"], d["n_gold"]) == (tp, n_pred, n_gold)


def test_prf_zero_denominators():
    assert (PRF(0, 0, 0).precision, PRF(0, 0, 0).recall, PRF(0, 0, 0).f1) == (0.0, 0.0, 0.0)
    assert PRF(0, 3, 0).f1 == 0.0
    assert PRF(1, 2, 4).f1 == pytest.approx(2 * 0.5 * 0.25 / 0.75)


def test_ner_micro_macro():
    res = score(gold_docs(), pred_docs(), SYM)["ner"]
    # gold: d1s0 3 + d1s1 3 (incl. the 10-word ORG) + d2 2 = 8
    # pred (deduplicated): d1s0 3 + d1s1 2 + d2 3 = 8
    # tp: d1s0 PER(0,0) ORG(2,3) = 2; d1s1 PER(0,0) PER(2,2) = 2; d2 ORG(3,3) = 1 -> 5
    check(res["micro"], 5 / 8, 5 / 8, 5 / 8, 5, 8, 8)
    # PER: gold d1s0(0,0) d1s1(0,0),(2,2) d2(1,1) = 4; pred d1s0(0,0),(5,5) d1s1(0,0),(2,2) = 4; tp 3
    check(res["per_type"]["PER"], 3 / 4, 3 / 4, 3 / 4, 3, 4, 4)
    # ORG: gold d1s0(2,3) d1s1(4,13) d2(3,3) = 3; pred d1s0(2,3) d2(3,3) = 2; tp 2
    #      P = 1, R = 2/3 (the long missed entity counts), F1 = 2*1*(2/3)/(5/3) = 4/5
    check(res["per_type"]["ORG"], 1.0, 2 / 3, 0.8, 2, 2, 3)
    # LOC: gold d1s0(5,5) = 1; pred d2(1,1),(6,6) = 2; tp 0
    check(res["per_type"]["LOC"], 0.0, 0.0, 0.0, 0, 2, 1)
    # macro over {PER, ORG, LOC}, each of P, R, F1 averaged separately:
    #   P = (3/4 + 1 + 0)/3 = 7/12; R = (3/4 + 2/3 + 0)/3 = 17/36; F1 = (3/4 + 4/5 + 0)/3 = 31/60
    check(res["macro"], 7 / 12, 17 / 36, 31 / 60)
    # macro F1 is the mean of per-type F1, not the harmonic mean of macro P and R
    assert res["macro"]["f1"] != pytest.approx(2 * (7 / 12) * (17 / 36) / (7 / 12 + 17 / 36))


def test_re_and_re_plus():
    res = score(gold_docs(), pred_docs(), SYM, symmetric_count="once")
    # RE gold: d1s0 WORK, d1s1 PER-SOC, d2 WORK = 3
    # RE pred: d1s0 WORK (duplicate -> 1), d1s1 PER-SOC (both directions -> 1), d2 WORK fwd + WORK reversed = 4
    # tp: d1s0 1, d1s1 1, d2 1 (types of the arguments ignored) = 3 -> P 3/4, R 1, F1 2*.75/1.75 = 6/7
    check(res["re"]["micro"], 3 / 4, 1.0, 6 / 7, 3, 4, 3)
    # WORK: tp 2, pred 3, gold 2 -> P 2/3, R 1, F1 0.8;  PER-SOC: 1/1/1 -> 1
    check(res["re"]["per_type"]["WORK"], 2 / 3, 1.0, 0.8, 2, 3, 2)
    check(res["re"]["per_type"]["PER-SOC"], 1.0, 1.0, 1.0, 1, 1, 1)
    check(res["re"]["macro"], (2 / 3 + 1) / 2, 1.0, 0.9)
    # RE+: the d2 WORK (1,1)->(3,3) has head typed LOC in the prediction (gold PER) -> not correct
    # tp 2, pred 4, gold 3 -> P 1/2, R 2/3, F1 2*(1/2)(2/3)/(7/6) = 4/7
    check(res["re+"]["micro"], 1 / 2, 2 / 3, 4 / 7, 2, 4, 3)
    # WORK: tp 1, pred 3, gold 2 -> P 1/3, R 1/2, F1 2*(1/6)/(5/6) = 2/5; PER-SOC 1 -> macro F1 0.7
    check(res["re+"]["per_type"]["WORK"], 1 / 3, 1 / 2, 0.4, 1, 3, 2)
    check(res["re+"]["macro"], (1 / 3 + 1) / 2, (1 / 2 + 1) / 2, 0.7)


def test_symmetric_count_both_directions_as_plmarker():
    # The same documents under PL-Marker's convention (the default): a symmetric relation is two items.
    res = score(gold_docs(), pred_docs(), SYM, symmetric_count="both")
    # RE gold: d1s0 WORK 1 + d1s1 PER-SOC 2 + d2 WORK 1 = 4
    # RE pred: d1s0 WORK 1 + d1s1 PER-SOC 2 (predicted both ways: still one relation, two items) + d2 2 = 5
    # tp: d1s0 1 + d1s1 2 + d2 WORK fwd 1 = 4 -> P 4/5, R 1, F1 2*(4/5)/(9/5) = 8/9
    check(res["re"]["micro"], 4 / 5, 1.0, 8 / 9, 4, 5, 4)
    check(res["re"]["per_type"]["PER-SOC"], 1.0, 1.0, 1.0, 2, 2, 2)
    check(res["re"]["per_type"]["WORK"], 2 / 3, 1.0, 0.8, 2, 3, 2)  # asymmetric: unchanged
    check(res["re"]["macro"], (2 / 3 + 1) / 2, 1.0, 0.9)  # per-type ratios, so macro is unchanged
    # RE+: tp d1s0 1 + d1s1 2 (types PER, PER both ways) = 3; pred 5, gold 4
    # -> P 3/5, R 3/4, F1 2*(9/20)/(27/20) = 2/3
    check(res["re+"]["micro"], 3 / 5, 3 / 4, 2 / 3, 3, 5, 4)
    # The once convention on the same documents (as in test_re_and_re_plus): 3/4/3 and RE+ 2/4/3.
    once = score(gold_docs(), pred_docs(), SYM, symmetric_count="once")
    check(once["re"]["micro"], 3 / 4, 1.0, 6 / 7, 3, 4, 3)
    check(once["re+"]["micro"], 1 / 2, 2 / 3, 4 / 7, 2, 4, 3)
    # NER is not affected; the default is "both"
    assert once["ner"] == res["ner"]
    assert score(gold_docs(), pred_docs(), SYM) == res
    # a wrong symmetric prediction costs two predicted items; a missed one two gold items
    ents = [Entity(0, 0, "PER"), Entity(2, 2, "PER"), Entity(4, 4, "PER")]
    gold = one_sentence(ents, [Relation((0, 0), (2, 2), "PER-SOC")])
    pred = one_sentence(ents, [Relation((4, 4), (2, 2), "PER-SOC")])
    check(score(gold, pred, SYM)["re"]["micro"], 0.0, 0.0, 0.0, 0, 2, 2)
    check(score(gold, pred, SYM, symmetric_count="once")["re"]["micro"], 0.0, 0.0, 0.0, 0, 1, 1)
    with pytest.raises(ValueError, match="symmetric_count"):
        score(gold, pred, SYM, symmetric_count="twice")


def test_without_symmetry_both_directions_count_twice():
    res = score(gold_docs(), pred_docs(), relation_symmetric=None)["re"]
    # PER-SOC now asymmetric: d1s1 has 2 predicted items, of which (0,0)->(2,2) is correct.
    # pred 4 + 1 = 5, tp still 3, gold 3
    check(res["micro"], 3 / 5, 1.0, 2 * 0.6 / 1.6, 3, 5, 3)


def one_sentence(ents, rels, n=6, key="x"):
    return [Document(key, [Sentence(words(n), ents, rels)])]


def test_symmetric_reverse_order_and_gold_both_ways():
    ents = [Entity(0, 0, "PER"), Entity(2, 2, "PER")]
    gold = one_sentence(ents, [Relation((0, 0), (2, 2), "PER-SOC")])
    pred = one_sentence(ents, [Relation((2, 2), (0, 0), "PER-SOC")])
    # predicted only in the reverse order: correct when symmetric (1/1/1) ...
    check(score(gold, pred, SYM, symmetric_count="once")["re+"]["micro"], 1.0, 1.0, 1.0, 1, 1, 1)
    # ... wrong when the type is asymmetric (0/1/1)
    check(score(gold, pred, {"PER-SOC": False})["re"]["micro"], 0.0, 0.0, 0.0, 0, 1, 1)
    # gold annotated both ways (as ACE05 does for symmetric types) counts once in the recall denominator
    gold2 = one_sentence(ents, [Relation((0, 0), (2, 2), "PER-SOC"), Relation((2, 2), (0, 0), "PER-SOC")])
    check(score(gold2, pred, SYM, symmetric_count="once")["re"]["micro"], 1.0, 1.0, 1.0, 1, 1, 1)
    # PL-Marker's convention counts it once per direction: 2 / 2 / 2 (same P, R, F1)
    check(score(gold2, pred, SYM)["re"]["micro"], 1.0, 1.0, 1.0, 2, 2, 2)


def test_symmetric_re_plus_swaps_argument_types():
    gold = one_sentence([Entity(0, 0, "PER"), Entity(2, 2, "ORG")], [Relation((0, 0), (2, 2), "PER-SOC")])
    ok = one_sentence([Entity(0, 0, "PER"), Entity(2, 2, "ORG")], [Relation((2, 2), (0, 0), "PER-SOC")])
    bad = one_sentence([Entity(0, 0, "ORG"), Entity(2, 2, "PER")], [Relation((2, 2), (0, 0), "PER-SOC")])
    # reversed symmetric relation with the types attached to the right spans: RE+ correct
    assert score(gold, ok, SYM, symmetric_count="once")["re+"]["micro"]["tp"] == 1
    assert score(gold, ok, SYM)["re+"]["micro"]["tp"] == 2  # "both": one hit per direction
    # types swapped between the spans: RE correct, RE+ wrong
    res = score(gold, bad, SYM, symmetric_count="once")
    assert (res["re"]["micro"]["tp"], res["re+"]["micro"]["tp"]) == (1, 0)


def test_re_plus_argument_without_predicted_entity_is_wrong():
    gold = one_sentence([Entity(0, 0, "PER"), Entity(2, 2, "ORG")], [Relation((0, 0), (2, 2), "WORK")])
    pred = one_sentence([Entity(0, 0, "PER")], [Relation((0, 0), (2, 2), "WORK")])
    res = score(gold, pred, SYM)
    assert (res["re"]["micro"]["tp"], res["re+"]["micro"]["tp"]) == (1, 0)
    assert res["re+"]["micro"]["n_gold"] == 1


def test_empty_predictions():
    gold = gold_docs()
    pred = [Document(d.doc_key, [Sentence(list(s.words)) for s in d.sentences]) for d in gold]
    res = score(gold, pred, SYM)
    # gold relations: WORK, PER-SOC (symmetric: 2 items under the default "both"), WORK = 4
    for task, n_gold in (("ner", 8), ("re", 4), ("re+", 4)):
        check(res[task]["micro"], 0.0, 0.0, 0.0, 0, 0, n_gold)
        check(res[task]["macro"], 0.0, 0.0, 0.0)
    # nothing anywhere: all zero, no types
    empty = score(pred, pred, SYM)
    assert empty["ner"]["per_type"] == {}
    check(empty["re+"]["micro"], 0.0, 0.0, 0.0, 0, 0, 0)
    check(empty["ner"]["macro"], 0.0, 0.0, 0.0)
    assert score([], [], SYM)["re"]["micro"]["n_gold"] == 0


def test_mismatched_documents_raise():
    gold, pred = gold_docs(), pred_docs()
    with pytest.raises(ValueError, match="d2"):
        score(gold, pred[1:], SYM)
    pred[0].doc_key = "other"
    with pytest.raises(ValueError, match="other"):
        score(gold, pred, SYM)
    pred = pred_docs()
    pred[1].sentences = pred[1].sentences[:1]
    with pytest.raises(ValueError, match="d1"):
        score(gold, pred, SYM)
    with pytest.raises(ValueError, match="duplicate doc_key 'd1'"):
        score(gold + gold[:1], pred_docs(), SYM)


def test_format_table():
    table = format_table(score(gold_docs(), pred_docs(), SYM))
    lines = table.splitlines()
    assert len(lines) == 5
    assert lines[2].split()[0] == "ner" and lines[4].split()[0] == "re+"
    # ner: P R F1 = 62.50, macro F1 = 31/60 = 51.67
    assert lines[2].split()[1:5] == ["62.50", "62.50", "62.50", "51.67"]
    ner_only = format_table(score(gold_docs(), pred_docs(), SYM), tasks=("ner",)).splitlines()
    assert ner_only == lines[:3]


MACRO_IN_A_PROCESS = """
import json
from lai_jax.data.documents import Document, Entity, Sentence
from lai_jax.metrics import score
# Eight types whose F1 values (1/2, 2/3, 2/5, ...) sum to different floats in different orders.
gold, pred = [], []
for k in range(8):
    n = k + 2
    gold.append(Entity(2 * k, 2 * k, f"T{k}"))
    pred += [Entity(2 * k, 2 * k, f"T{k}")] + [Entity(40 + 2 * j + 20 * k, 40 + 2 * j + 20 * k, f"T{k}") for j in range(n)]
words = [f"w{i}" for i in range(250)]
res = score([Document("d", [Sentence(words, gold, [])])], [Document("d", [Sentence(words, pred, [])])], {})
print(json.dumps(res["ner"]["macro"]))
"""


def test_macro_scores_do_not_depend_on_the_string_hash_seed():
    """Sets iterate in an order that follows PYTHONHASHSEED (a process's own): macro averages summed in that order
    differed in the last digit between the processes of one multi-process run."""
    import os
    import subprocess
    import sys
    outs = {subprocess.run([sys.executable, "-c", MACRO_IN_A_PROCESS], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in range(6)}
    assert len(outs) == 1, outs
