"""Sampled negatives (`ner.train_negatives`): gold spans kept, the weighted loss unbiased, evaluation untouched."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import tiny_config
from lai_jax import build as build_lib
from lai_jax import input_pipeline
from lai_jax.data.documents import Document, Entity, Sentence
from lai_jax.data.slots import enumerate_spans, sample_negatives
from lai_jax.models import HeadConfig, ner_loss

WORDS = "John Smith of Acme Corp met Mary Jones in Boston on a cold Monday morning".split()
GOLD = [Entity(0, 1, "Peop"), Entity(3, 4, "Org"), Entity(6, 7, "Peop"), Entity(9, 9, "Loc")]


def docs() -> list[Document]:
    return [Document("d0", [Sentence(WORDS, GOLD), Sentence(WORDS[:6], GOLD[:2])])]


def test_sample_negatives_keeps_gold_and_weights_add_up_to_the_candidates():
    spans = enumerate_spans(len(WORDS), 3)
    gold = {e.span for e in GOLD}
    rng = np.random.default_rng(0)
    for n in (1, 5, 20):
        chosen, weights = sample_negatives(spans, gold, n, rng)
        assert gold <= set(chosen) and len(chosen) == len(gold) + n
        assert chosen == sorted(chosen)  # neighbours stay neighbours, as in the full enumeration
        assert sum(weights) == pytest.approx(len(spans))
        assert all(w == 1.0 for sp, w in zip(chosen, weights) if sp in gold)
    assert sample_negatives(spans, gold, 0, rng) == (spans, [1.0] * len(spans))  # 0 = no sampling
    assert sample_negatives(spans, gold, 10 ** 6, rng) == (spans, [1.0] * len(spans))  # fewer than asked


def test_stratified_negatives_draw_their_share_near_gold_and_weight_each_stratum():
    spans = enumerate_spans(len(WORDS), 3)
    gold = {e.span for e in GOLD}
    near = {sp for sp in spans if sp not in gold and any(sp[0] <= b and a <= sp[1] for a, b in gold)}
    far = set(spans) - gold - near
    rng = np.random.default_rng(0)
    for n, hard in ((6, 4), (20, 2), (len(far) + 3, 1), (10, len(near) + 5), (3, 5)):
        chosen, weights = sample_negatives(spans, gold, n, rng, hard)
        got = dict(zip(chosen, weights))
        h = min(len(near), max(hard, n - len(far)), n - 1)  # a stratum short of its share hands it on
        assert gold <= set(chosen) and len(chosen) == len(gold) + n and chosen == sorted(chosen)
        assert len(near & set(chosen)) == h and len(far & set(chosen)) == n - h
        assert all(got[sp] == pytest.approx(len(near) / h) for sp in near & set(chosen))
        assert all(got[sp] == pytest.approx(len(far) / (n - h)) for sp in far & set(chosen))
        assert sum(weights) == pytest.approx(len(spans))
    # Uniform draws hold near-gold negatives in proportion (6 x 23 / 38 = 3.6 here); hard=5 holds 5.
    uniform = [len(near & set(sample_negatives(spans, gold, 6, rng)[0])) for _ in range(400)]
    assert abs(np.mean(uniform) - 6 * len(near) / (len(near) + len(far))) < 0.2


def _loss_terms(instances, table: dict, head: HeadConfig, use_gold: bool) -> tuple[dict, dict]:
    """ner_loss summed over instances, with each candidate's logits looked up by (sentence, span): the model's
    outputs are held fixed so that only the sampling and its weights differ between the two sides."""
    sums, counts = {}, {}
    for inst in instances:
        a = inst.arrays
        K = a["cand_mask"].shape[0]
        f, t = np.zeros((1, K, 2), np.float32), np.zeros((1, K, head.num_classes), np.float32)
        for slot, sp in enumerate(inst.spans):
            f[0, slot], t[0, slot] = table[(inst.sent, sp)]
        batch = {k: v[None] for k, v in a.items()}
        s, c = ner_loss({"filter_logits": f, "logits": t}, batch, np.bool_(use_gold), head)
        for k in s:
            sums[k] = sums.get(k, 0.0) + float(s[k])
            counts[k] = counts.get(k, 0.0) + float(c[k])
    return sums, counts


@pytest.mark.parametrize("use_gold,hard", [(True, 0), (False, 0), (False, 2)])
def test_weighted_loss_over_samples_equals_the_full_loss_in_expectation(tiny_bert, use_gold, hard):
    """Mean over many draws of the weighted sums equals the sums over every candidate.

    Tolerance: the draws are independent, so the mean of n draws has standard error sd / sqrt(n) (measured);
    4 standard errors (plus float32 rounding) fail a correct estimator with probability ~6e-5, while weights
    of 1 for the negatives (no inverse-rate correction) miss by ~80 % of the negatives' share, hundreds of
    standard errors. The counts (normalisers) must match exactly on every draw. `hard` > 0 draws the negatives
    near gold at a higher rate than the others: each stratum needs its own weight.
    """
    config = tiny_config("ner", tiny_bert, max_candidates=64, max_text_len=40, max_span_len=3, num_buckets=1)
    setup = build_lib.build(config)
    f = setup.featurizer
    head = HeadConfig("ner", 1 + len(setup.labels.entity_types), filter_gate_threshold=0.5)
    rng = np.random.default_rng(1)
    table = {(s, sp): (rng.normal(size=2) * 2, rng.normal(size=head.num_classes))
             for s, sent in enumerate(docs()[0].sentences) for sp in enumerate_spans(len(sent.words), 3)}
    full_sums, full_counts = _loss_terms(f.ner_instances(docs())[0], table, head, use_gold)
    windows = f.ner_windows(docs())
    draws = []
    for seed in range(400):
        inst = f.sampled_ner_instances(windows, 4, np.random.default_rng(seed), hard)
        assert all(len(i.spans) <= 4 + 4 for i in inst)  # gold + 4 negatives per window
        sums, counts = _loss_terms(inst, table, head, use_gold)
        assert counts == pytest.approx(full_counts, rel=1e-6)
        draws.append(sums)
    for k, full in full_sums.items():
        values = np.array([d[k] for d in draws])
        se = values.std(ddof=1) / np.sqrt(len(values))
        if k == "filter" or not use_gold:  # in cold start the span term sees gold spans only: no variance
            assert se > 0
        assert abs(values.mean() - full) <= 4 * se + 1e-4 * abs(full), (k, values.mean(), full, se)


def _training_set(config) -> tuple[input_pipeline.TrainingSet, list, list]:
    """The run's TrainingSet for `config.phase` as lai_jax.train builds it, with every instance of the full
    enumeration and evaluation's shapes."""
    setup = build_lib.build(config)
    train = input_pipeline.load_splits(config, setup.labels)["train"]
    featurizer, inst, shapes = input_pipeline.plan_buckets(setup.featurizer, config.phase, train, config.num_buckets)
    return input_pipeline.TrainingSet(featurizer, config.phase, train, inst, shapes, config), inst, shapes


@pytest.mark.parametrize("hard", [0, 2])
def test_sampled_epochs_keep_their_shapes_and_differ(tiny_bert, hard):
    config = tiny_config("ner", tiny_bert, **{"ner.train_negatives": 3, "ner.hard_negatives": hard})
    ts, _, shapes = _training_set(config)
    e0, e1 = ts.epoch(0), ts.epoch(1)
    assert [len(i.spans) for i in e0] == [len(i.spans) for i in e1]
    assert [input_pipeline.real_length(i) for i in e0] == [input_pipeline.real_length(i) for i in e1]
    assert [i.spans for i in e0] != [i.spans for i in e1]  # each epoch draws its own negatives
    again, _, _ = _training_set(config)
    assert [i.spans for i in again.epoch(1)] == [i.spans for i in e1]  # from (seed, epoch) alone: resumable
    assert max(k for k, _ in ts.shapes) < shapes[-1][0]  # training batches carry fewer slots than evaluation
    assert all(input_pipeline.shape_of(i, ts.shapes) is not None for i in e0)


@pytest.mark.parametrize("eval_buckets", [0, 1])
def test_evaluation_scores_every_candidate_whatever_the_training_sampling(tiny_bert, tmp_path, monkeypatch,
                                                                          eval_buckets):
    """A run trained on 2 sampled negatives per window still scores every span of every dev/test sentence, with
    evaluation's shapes from `num_buckets` (0) or one shape (`eval_buckets=1`: one evaluation compile)."""
    from lai_jax import evaluation, train
    config = tiny_config("ner", tiny_bert, **{"ner.train_negatives": 2, "max_steps": 2, "num_buckets": 3,
                                              "eval_buckets": eval_buckets})
    seen: list[tuple[str, list]] = []
    forward = evaluation.forward

    def recording_forward(runner, state, setup, instances, desc):
        seen.append((desc, list(instances)))
        return forward(runner, state, setup, instances, desc)

    monkeypatch.setattr(evaluation, "forward", recording_forward)
    result = train.train_and_evaluate(config, str(tmp_path))
    assert {desc for desc, _ in seen} == {"dev", "test"}
    saved = json.loads((tmp_path / "shapes.json").read_text())
    if eval_buckets == 1:
        assert len(saved["shapes"]) == 1 and result["compiles"]["eval"] == 1
        assert saved["shapes"][0] == [config.max_candidates, saved["shapes"][0][1]]  # every candidate slot
    else:
        assert len(saved["shapes"]) > 1
    splits = input_pipeline.load_splits(config, build_lib.build(config).labels)
    for desc, instances in seen:
        per_sent: dict = {}
        for inst in instances:
            per_sent.setdefault((inst.doc, inst.sent), []).extend(inst.spans)
        sentences = {(d, s): sent for d, doc in enumerate(splits[desc]) for s, sent in enumerate(doc.sentences)}
        assert per_sent.keys() == sentences.keys()
        for key, spans in per_sent.items():
            assert sorted(spans) == enumerate_spans(len(sentences[key].words), config.max_span_len), (desc, key)


def test_re_subject_sampling_keeps_related_subjects_and_the_expected_loss(tiny_bert):
    """Every subject instance with a gold relation is kept each epoch; the others are drawn at the rate and
    weighted by its inverse, each shape holds the same number of instances every epoch, and the weighted
    loss sum (per-slot losses held fixed) matches the full sum in expectation (4 standard errors; as in the NER
    test, unweighted draws miss by most of the unrelated subjects' share)."""
    config = tiny_config("re", tiny_bert, **{"re.negative_subject_rate": 0.34, "data.train_limit": 40})
    ts, inst, _ = _training_set(config)
    key = lambda i: (i.doc, i.sent, i.subject, tuple(i.spans))  # noqa: E731
    related = {key(i) for i in inst if (i.arrays["labels"] > 0).any()}
    unrelated = [i for i in inst if key(i) not in related]
    assert related and len(unrelated) >= 6
    rng = np.random.default_rng(0)
    loss = {key(i): rng.uniform(0, 1, i.arrays["cand_weight"].shape) for i in inst}
    total = lambda insts: sum(float(np.sum(i.arrays["cand_weight"] * loss[key(i)])) for i in insts)  # noqa: E731
    draws = []
    for epoch in range(300):
        e = ts.epoch(epoch)
        assert input_pipeline.assign(e, ts.shapes) == ts.groups  # the same batch plan every epoch
        assert related <= {key(i) for i in e}
        assert len(e) < len(inst)  # the unrelated subjects really are sampled
        draws.append(total(e))
    draws = np.array(draws)
    se = draws.std(ddof=1) / np.sqrt(len(draws))
    assert se > 0 and abs(draws.mean() - total(inst)) <= 4 * se, (draws.mean(), total(inst), se)
    assert ts.epoch(3) is not ts.epoch(2) and [key(i) for i in ts.epoch(2)] != [key(i) for i in ts.epoch(3)]


def test_re_subjects_drawn_without_reweighting_weigh_one(tiny_bert):
    """`re.reweight_subjects=False`: the same draws (same seed), each drawn unrelated subject with weight 1, the
    related ones untouched."""
    runs = {}
    for reweight in (True, False):
        config = tiny_config("re", tiny_bert, **{"re.negative_subject_rate": 0.34, "data.train_limit": 40,
                                                 "re.reweight_subjects": reweight})
        ts, _, _ = _training_set(config)
        assert ("inverse-rate" in ts.sampling) == reweight
        runs[reweight] = ts.epoch(1)
    weighted, plain = runs[True], runs[False]
    assert [(i.doc, i.sent, i.subject) for i in weighted] == [(i.doc, i.sent, i.subject) for i in plain]
    for w, p in zip(weighted, plain):
        related = (p.arrays["labels"] > 0).any()
        real = p.arrays["cand_mask"]
        assert np.all(p.arrays["cand_weight"][real] == 1.0)
        if not related:
            assert np.all(w.arrays["cand_weight"][real] > 1.0)  # the inverse rate, 3 of 1 / 0.34


@pytest.mark.parametrize("hard", [0, 2])
def test_ner_negatives_drawn_without_reweighting_weigh_one(tiny_bert, hard):
    """`ner.reweight_negatives=False`: the same spans drawn from the same seed, every kept slot with weight 1,
    where the default weighs a drawn negative by its stratum's inverse rate."""
    runs = {}
    for reweight in (True, False):
        config = tiny_config("ner", tiny_bert, **{"ner.train_negatives": 3, "ner.hard_negatives": hard,
                                                  "ner.reweight_negatives": reweight})
        ts, _, _ = _training_set(config)
        assert ("inverse-rate" in ts.sampling) == reweight and ("weight 1" in ts.sampling) != reweight
        runs[reweight] = ts.epoch(1)
    weighted, plain = runs[True], runs[False]
    assert [(i.doc, i.sent, i.spans) for i in weighted] == [(i.doc, i.sent, i.spans) for i in plain]
    negatives = 0
    for w, p in zip(weighted, plain):
        real, gold = p.arrays["cand_mask"] > 0, p.arrays["labels"] > 0
        assert np.all(p.arrays["cand_weight"][real] == 1.0) and np.all(p.arrays["cand_weight"][~real] == 0.0)
        assert np.all(w.arrays["cand_weight"][real & gold] == 1.0)
        negatives += int(np.sum(w.arrays["cand_weight"][real & ~gold] > 1.0))
    assert negatives > 0  # the default really reweights some drawn negatives
