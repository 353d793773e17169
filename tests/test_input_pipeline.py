"""Batch buckets (slot counts and shapes), the seeded batch order, prefetching and the compile count."""
import itertools
import threading

import jax
import numpy as np
import pytest

from conftest import tiny_config
from lai_jax import build as build_lib, input_pipeline as ip, train
from lai_jax.data import masks, slots


@pytest.fixture(scope="module")
def planned(tiny_bert):
    config = tiny_config("ner", tiny_bert, **{"data.train_limit": 40, "max_candidates": 24})
    setup = build_lib.build(config)
    docs = ip.load_splits(config, setup.labels)["train"]
    featurizer, insts, shapes = ip.plan_buckets(setup.featurizer, "ner", docs, 3)
    return setup, docs, featurizer, insts, shapes


def _cost(sizes, overhead):
    return len(sizes) * overhead + 2 * sum(sizes)


@pytest.mark.parametrize("buckets", [(8, 16, 24), (4, 24), (16, 40, 220)])
def test_split_slots_is_the_cheapest_split(buckets):
    """Against brute force: every chunk fits a bucket, all k slots are used, and no split into the same or one
    more number of chunks (ceil(k / K) or one more) costs fewer tokens."""
    K = buckets[-1]
    for k in range(0, 3 * K + 2):
        for overhead in (3, 20, 90):
            counts = slots.split_slots(k, buckets, overhead)
            assert sum(counts) == k and all(c <= K for c in counts)
            if k == 0:
                assert counts == [0]
                continue
            assert all(c >= 1 for c in counts)
            sizes = [min(b for b in buckets if b >= c) for c in counts]
            n0 = -(-k // K)
            best = min(_cost(c, overhead) for n in (n0, n0 + 1) if n <= k
                       for c in itertools.combinations_with_replacement(buckets, n) if sum(c) >= k)
            assert _cost(sizes, overhead) == best, (k, overhead, counts)


def test_choose_slot_buckets_minimises_tokens():
    rng = np.random.default_rng(0)
    demand = [(int(k), int(o)) for k, o in zip(rng.integers(1, 100, 60), rng.integers(10, 60, 60))]
    chosen = slots.choose_slot_buckets(demand, 64, 3)
    assert chosen[-1] == 64 and list(chosen) == sorted(set(chosen)) and all(b % 8 == 0 for b in chosen)
    brute = min(slots.total_tokens(demand, (*c, 64)) for r in (1, 2) for c in itertools.combinations(range(8, 64, 8), r))
    assert slots.total_tokens(demand, chosen) == brute < slots.total_tokens(demand, (64,))
    assert slots.choose_slot_buckets(demand, 64, 1) == (64,)


def test_buckets_cover_every_span_once_and_every_instance_fits(planned):
    setup, docs, featurizer, insts, shapes = planned
    K, T = setup.featurizer.num_slots("ner"), setup.featurizer.seq_len("ner")
    assert shapes[-1] == (K, T) and len(shapes) > 1
    assert [s[0] for s in shapes] == sorted(s[0] for s in shapes) and all(t % 8 == 0 for _, t in shapes)
    # The same candidates as one static shape, each exactly once, only split differently.
    one = ip.make_instances(setup.featurizer, "ner", docs)
    spans = lambda xs: sorted((i.doc, i.sent, sp) for i in xs for sp in i.spans)  # noqa: E731
    assert spans(insts) == spans(one) and len(set(spans(insts))) == len(spans(insts))
    groups = ip.assign(insts, shapes)
    assert sorted(i for g in groups for i in g) == list(range(len(insts)))
    for b, g in enumerate(groups):
        for i in g:
            k, n = len(insts[i].spans), ip.real_length(insts[i])
            assert k <= shapes[b][0] and n <= shapes[b][1]
            assert not any(k <= ks and n <= ts for ks, ts in shapes[:b])  # the first shape that fits
            assert (insts[i].arrays["token_groups"][n:] == masks.PAD).all()  # real tokens are a prefix
            assert not insts[i].arrays["cand_mask"][k:].any()  # real slots are a prefix
    fill = sum(len(i.spans) for i in insts) / sum(shapes[ip.shape_of(i, shapes)][0] for i in insts)
    fill_one = sum(len(i.spans) for i in one) / (K * len(one))
    assert fill > fill_one


def test_epoch_order_is_seeded_complete_and_one_bucket_per_batch(planned):
    *_, insts, shapes = planned
    groups = ip.assign(insts, shapes)
    a = ip.epoch_batches(groups, 4, seed=0, epoch=1)
    assert a == ip.epoch_batches(groups, 4, seed=0, epoch=1)
    assert a != ip.epoch_batches(groups, 4, seed=0, epoch=2)
    assert len(a) == ip.num_batches(groups, 4)
    assert sorted(i for _, idx in a for i in idx) == list(range(len(insts)))
    assert all(set(idx) <= set(groups[b]) and 0 < len(idx) <= 4 for b, idx in a)


def test_cut_batch_gives_the_same_outputs(planned):
    setup, _, _, insts, shapes = planned
    small = ip.assign(insts, shapes)[0][:3]
    full = ip.stack([insts[i] for i in small], 4)
    params = setup.model.init_params(jax.random.PRNGKey(0), full, setup.encoder_params)
    apply = jax.jit(setup.model.apply)
    a = apply({"params": params}, full)
    b = apply({"params": params}, ip.cut(full, shapes[0]))
    K0 = shapes[0][0]
    for key in a:
        got, want = np.asarray(b[key][:3]), np.asarray(a[key][:3])
        if want.ndim >= 2 and want.shape[1] == full["cand_mask"].shape[1]:  # per-slot outputs: the real slots
            want = want[:, :K0]
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_prefetch_keeps_the_order_and_raises_where_the_producer_failed():
    items = [{"x": np.full(3, i)} for i in range(20)]
    for size in (0, 1, 3):
        assert [int(b["x"][0]) for b in ip.prefetch(iter(items), size)] == list(range(20))

    def failing():
        yield 1
        yield 2
        raise RuntimeError("bad batch")
    got = []
    with pytest.raises(RuntimeError, match="bad batch"):
        for x in ip.prefetch(failing(), 2):
            got.append(x)
    assert got == [1, 2]
    # close() stops a producer that is blocked on a full queue.
    p = ip.prefetch(itertools.count(), 2)
    assert next(p) == 0
    p.close()
    assert not any(t.name == "lai_jax-prefetch" and t.is_alive() for t in threading.enumerate())


def test_training_compiles_at_most_once_per_shape(tiny_bert, tmp_path):
    config = tiny_config("ner", tiny_bert, **{"data.train_limit": 40, "num_buckets": 3})
    result = train.train_and_evaluate(config, str(tmp_path))
    assert 2 <= result["compiles"]["train"] <= 3 and 1 <= result["compiles"]["eval"] <= 3
    assert result["test"]["ner"]["micro"]["n_gold"] > 0


def test_few_slots_split_by_length_instead(tiny_bert):
    """RE has few object slots (here 4): no smaller slot count pays off, so the shapes split by token length."""
    config = tiny_config("re", tiny_bert, **{"data.train_limit": 40, "max_text_len": 96})
    setup = build_lib.build(config)
    docs = ip.load_splits(config, setup.labels)["train"]
    featurizer, insts, shapes = ip.plan_buckets(setup.featurizer, "re", docs, 3)
    K, T = featurizer.num_slots("re"), featurizer.seq_len("re")
    assert shapes[-1] == (K, T) and 2 <= len(shapes) <= 3 and len(set(shapes)) == len(shapes)
    assert all(t % 8 == 0 and t < T for _, t in shapes[:-1])
    groups = ip.assign(insts, shapes)
    assert sorted(i for g in groups for i in g) == list(range(len(insts))) and len(groups[0]) > 0


def test_evaluation_shapes_follow_eval_buckets_only_when_training_samples():
    """Sampled training batches get their own shapes, so evaluation may use fewer; otherwise the two share them."""
    from lai_jax.config_base import base_config
    for phase, field, value in (("ner", "ner.train_negatives", 16), ("re", "re.negative_subject_rate", 0.3)):
        config = base_config("conll04", phase)
        config.num_buckets, config.eval_buckets = 3, 1
        assert ip.bucket_count(config) == 3  # every candidate and subject: training's shapes are evaluation's
        section, name = field.split(".")
        setattr(config[section], name, value)
        assert ip.samples(config) and ip.bucket_count(config) == 1
        config.eval_buckets = 0
        assert ip.bucket_count(config) == 3
