"""Length buckets and the seeded batch order: coverage, determinism, cut invariance, compile count."""
import jax
import numpy as np
import pytest

from conftest import tiny_config
from lai_jax import input_pipeline as ip, train
from lai_jax.data import features, masks
from lai_jax.data.labels import load_labels


@pytest.fixture(scope="module")
def setup_and_instances(tiny_bert):
    config = tiny_config("ner", tiny_bert, **{"data.train_limit": 40})
    setup = train.build(config)
    docs = train.load_splits(config, setup.labels)["train"]
    return setup, train.instances_for(setup, docs)


def test_buckets_cover_every_instance_once_and_hold_it(setup_and_instances):
    _, insts = setup_and_instances
    T = insts[0].arrays["input_ids"].shape[0]
    buckets = ip.bucket_lengths(insts, 3)
    assert buckets[-1] == T and list(buckets) == sorted(buckets) and all(b % 8 == 0 for b in buckets)
    assert len(buckets) > 1  # the toy data really has shorter instances
    groups = ip.assign(insts, buckets)
    assert sorted(i for g in groups for i in g) == list(range(len(insts)))
    for b, g in enumerate(groups):
        for i in g:
            n = ip.real_length(insts[i])
            assert n <= buckets[b] and (b == 0 or n > buckets[b - 1])
            assert (insts[i].arrays["token_groups"][n:] == masks.PAD).all()  # real tokens are a prefix


def test_epoch_order_is_seeded_complete_and_one_bucket_per_batch(setup_and_instances):
    _, insts = setup_and_instances
    groups = ip.assign(insts, ip.bucket_lengths(insts, 3))
    a = ip.epoch_batches(groups, 4, seed=0, epoch=1)
    assert a == ip.epoch_batches(groups, 4, seed=0, epoch=1)
    assert a != ip.epoch_batches(groups, 4, seed=0, epoch=2)
    assert len(a) == ip.num_batches(groups, 4)
    assert sorted(i for _, idx in a for i in idx) == list(range(len(insts)))
    assert all(set(idx) <= set(groups[b]) and 0 < len(idx) <= 4 for b, idx in a)


def test_cut_batch_gives_the_same_outputs(setup_and_instances):
    setup, insts = setup_and_instances
    buckets = ip.bucket_lengths(insts, 3)
    short = ip.assign(insts, buckets)[0][:3]
    full = features.stack([insts[i] for i in short], 4)
    params = setup.model.init_params(jax.random.PRNGKey(0), full, setup.encoder_params)
    apply = jax.jit(setup.model.apply)
    a = apply({"params": params}, full)
    b = apply({"params": params}, ip.cut(full, buckets[0]))
    for key in a:
        np.testing.assert_allclose(a[key][:3], b[key][:3], atol=1e-5)


def test_training_compiles_once_per_bucket(tiny_bert, tmp_path):
    config = tiny_config("ner", tiny_bert, **{"data.train_limit": 40, "num_buckets": 3})
    result = train.train_and_evaluate(config, str(tmp_path))
    assert 2 <= result["compiles"]["train"] <= 3 and 1 <= result["compiles"]["eval"] <= 3
    assert result["test"]["ner"]["micro"]["n_gold"] > 0
