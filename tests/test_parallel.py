"""Runner.compile_train: the ahead-of-time executable is what `train` then runs, with no second compile."""
import jax
import numpy as np
import pytest

from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def tiny_run(tiny_bert):
    """(setup, two batches of different lengths, host initial state) on the tiny BERT."""
    from lai_jax import build as build_lib, input_pipeline as ip
    config = tiny_config("ner", tiny_bert, **{"model.dropout": 0.0, "model.encoder_dropout": 0.0})
    setup = build_lib.build(config)
    inst = ip.make_instances(setup.featurizer, "ner", ip.load_splits(config, setup.labels)["train"])
    full = ip.stack(inst[:4], 4)
    K = full["cand_mask"].shape[1]
    short = ip.cut(ip.stack(inst[4:8], 4), (K, max(map(ip.real_length, inst[4:8]))))
    host0 = jax.tree.map(np.asarray, build_lib.init_state(setup, ip.stack(inst[:1]), total_steps=2))
    return setup, full, short, host0


def _max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(jax.tree.leaves(a),
                                                                                    jax.tree.leaves(b)))


@pytest.mark.parametrize("mode", ["pmap", "shard_map"])
def test_compile_train_is_dispatched_and_equals_the_jitted_step(tiny_run, mode):
    from lai_jax.parallel import Runner
    from lai_jax.steps import bind_steps
    setup, full, short, host0 = tiny_run
    devices = jax.devices()[:1]

    plain = Runner(mode, *bind_steps(setup.model, "ner"), devices=devices)
    want = plain.put_state(host0)
    for _ in range(2):  # the learning rate warms up from 0: the second step moves the parameters
        want, want_m = plain.train(want, full, True)

    runner = Runner(mode, *bind_steps(setup.model, "ner"), devices=devices)
    state = runner.put_state(host0)
    compiled = runner.compile_train(state, full, True)
    assert runner.compiles["train"] == 1  # the one trace of the ahead-of-time lowering
    assert compiled.memory_analysis() is None or compiled.memory_analysis().temp_size_in_bytes >= 0
    got = state
    for _ in range(2):
        got, got_m = runner.train(got, full, True)
    assert runner.compiles["train"] == 1  # train ran the executable: no new trace

    params = lambda s: runner.get_state(s).params
    assert _max_diff(params(want), host0.params) > 1e-4  # the step really moved the parameters
    assert _max_diff(params(got), params(want)) < 1e-6
    assert abs(float(runner.scalar(got_m)["loss"]) - float(plain.scalar(want_m)["loss"])) < 1e-6

    # Another shape (a shorter length bucket) is not covered by that executable: the jitted step compiles it.
    runner.train(got, short, True)
    assert runner.compiles["train"] == 2
