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
    from lai_jax.parallel import Runner, host_scalars
    from lai_jax.steps import bind_steps
    setup, full, short, host0 = tiny_run
    devices = jax.devices()[:1]

    # The reference runs the train step as one program; `runner` compiles its gradient and update apart.
    step, eval_step = bind_steps(setup.model, "ner")
    plain = Runner(mode, lambda s, b, u: step(s, b, u), eval_step, devices=devices)
    want = plain.put_state(host0)
    for _ in range(2):  # the learning rate warms up from 0: the second step moves the parameters
        want, want_m = plain.train(want, full, True)

    runner = Runner(mode, *bind_steps(setup.model, "ner"), devices=devices)
    state = runner.put_state(host0)
    compiled = runner.compile_train(state, full, True)
    assert runner.compiles["train"] == 1 and runner.compiles["apply"] == 1  # compiled ahead of time
    assert plain.compiles["apply"] == 0  # a plain function is compiled whole
    memory = compiled.memory_analysis()  # what benchmarks report: the gradient program's real footprint
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(host0))
    params_bytes = sum(x.nbytes for x in jax.tree.leaves(host0.params))
    batch_bytes = sum(x.nbytes for x in full.values())
    # The parameters and the batch come in (jit drops what the program never reads: the optimiser state, which only
    # the update takes, and batch arrays such as NER's unused RE fields).
    assert params_bytes + full["input_ids"].nbytes <= memory.argument_size_in_bytes < state_bytes
    assert memory.output_size_in_bytes >= params_bytes  # the gradients go out
    assert memory.temp_size_in_bytes > batch_bytes  # activations of forward and backward at least
    got = state
    for _ in range(2):
        got, got_m = runner.train(got, full, True)
    assert runner.compiles["train"] == 1 and runner.compiles["apply"] == 1  # train ran them: no new compile

    params = lambda s: runner.get_state(s).params
    assert _max_diff(params(want), host0.params) > 1e-4  # the step really moved the parameters
    assert _max_diff(params(got), params(want)) < 1e-6
    assert abs(host_scalars(runner.scalar(got_m))["loss"] - host_scalars(plain.scalar(want_m))["loss"]) < 1e-6

    # Another shape (a shorter length bucket) is not covered by that executable: the jitted step compiles it.
    runner.train(got, short, True)
    assert runner.compiles["train"] == 2 and runner.compiles["apply"] == 1  # the update is shape-free


@pytest.mark.parametrize("mode", ["pmap", "shard_map"])
def test_compiles_counts_executables_one_per_batch_shape(tiny_run, mode):
    """A host batch and the same batch placed on the devices run one executable; another shape compiles one more."""
    from lai_jax.parallel import Runner
    from lai_jax.steps import bind_steps
    setup, full, short, host0 = tiny_run
    runner = Runner(mode, *bind_steps(setup.model, "ner"), devices=jax.devices()[:1])
    params = runner.put_state(host0.params)
    want = runner.eval(params, full)
    for batch in (runner.put_batch(full), full):
        got = runner.fetch(runner.eval_async(params, batch))
        assert all(np.array_equal(got[k], want[k]) for k in want)
    assert runner.compiles["eval"] == 1
    runner.eval(params, short)
    assert runner.compiles == {"train": 0, "eval": 2, "apply": 0}


def test_pmap_metrics_are_read_from_the_first_shard_without_a_device_op(tiny_run):
    """`Runner.scalar` hands back device 0's own buffer: `x[0]` would compile and run a gather every step."""
    from lai_jax.parallel import Runner, host_scalars
    from lai_jax.steps import bind_steps
    setup, full, _, host0 = tiny_run
    runner = Runner("pmap", *bind_steps(setup.model, "ner"), devices=jax.devices()[:1])
    _, metrics = runner.train(runner.put_state(host0), full, True)
    local = runner.scalar(metrics)
    for k, x in metrics.items():
        assert local[k].unsafe_buffer_pointer() == x.addressable_shards[0].data.unsafe_buffer_pointer(), k
    host = host_scalars(local)
    assert set(host) >= {"loss", "grad_norm", "finite"} and host["finite"] == 1.0 and host["loss"] > 0


def test_moving_average_is_the_loop_over_raw_parameters_and_leaves_training_alone(tiny_run):
    """`optim.ema_decay`: after each update the average is d * average + (1 - d) * parameters, with the warmed-up
    decay d = min(decay, (1 + step) / (10 + step)), computed here by a host loop over the raw parameters; the
    raw parameters follow the same path as without an average."""
    from lai_jax.parallel import Runner
    from lai_jax.steps import bind_steps, eval_params
    setup, full, short, host0 = tiny_run
    devices, decay = jax.devices()[:1], 0.25
    plain = Runner("pmap", *bind_steps(setup.model, "ner"), devices=devices)
    averaged = Runner("pmap", *bind_steps(setup.model, "ner", ema_decay=decay), devices=devices)
    a, b = plain.put_state(host0), averaged.put_state(host0.replace(ema_params=jax.tree.map(np.copy, host0.params)))
    want = jax.tree.map(np.float64, host0.params)
    for t, batch in enumerate((full, short, full), start=1):
        a, _ = plain.train(a, batch, True)
        b, _ = averaged.train(b, batch, True)
        raw = averaged.get_state(b).params
        d = min(decay, (1 + t) / (10 + t))  # 0.18, 0.25, 0.25
        want = jax.tree.map(lambda e, p: d * e + (1 - d) * np.float64(p), want, raw)
        assert _max_diff(averaged.get_state(b).ema_params, want) < 1e-6
        assert _max_diff(raw, plain.get_state(a).params) < 1e-6
    got = averaged.get_state(b)
    assert _max_diff(got.ema_params, got.params) > 1e-5  # the average lags the raw parameters
    assert eval_params(got) is got.ema_params and eval_params(plain.get_state(a)) is not None
