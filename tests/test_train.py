"""Training system: multi-device equality, static shapes (one compile), kill + resume, NaN stop, CLI smoke."""
import json
import re
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import REPO, subprocess_xla_flags, tiny_config
from lai_jax import build as build_lib
from lai_jax import evaluate
from lai_jax import input_pipeline
from lai_jax import predictions

ENV = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": subprocess_xla_flags()}


def run(args, env=None, check=True, timeout=600):
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env or ENV, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}")
    return proc


def test_eight_devices_equal_one_device_and_pmap_equals_shard_map(tiny_bert):
    env = {**ENV, "XLA_FLAGS": subprocess_xla_flags("--xla_force_host_platform_device_count=8")}
    out = run(["tests/multidevice_check.py", tiny_bert, "ner"], env=env)
    diffs = json.loads(out.stdout.strip().splitlines()[-1])
    assert diffs["moved"] > 1e-4  # the steps really changed the parameters
    assert diffs["pmap8_vs_pmap1"] < 1e-5
    assert diffs["pmap8_vs_shard8"] < 1e-5
    assert diffs["pmap8_vs_pmap2_accum4"] < 1e-5  # 2 devices x 4 micro-batches of 2 = 8 devices x 2
    # With dropout, 8 devices on 8 copies of the same rows draw 8 different masks: their mean loss is not the
    # loss of device 0's masks alone, which 8 devices drawing one mask would give exactly.
    one, eight = diffs["dropout_loss_pmap1"], diffs["dropout_loss_pmap8"]
    assert abs(eight - one) > 1e-3 * abs(one), (one, eight)


def test_accumulated_micro_batches_equal_one_large_batch(tiny_bert):
    """k=4 micro-batches of 2 on one device give the parameters of one batch of 8, also when padding leaves
    micro-batches (here the whole last one) without real instances: losses are normalised by global counts."""
    import jax
    from lai_jax.parallel import Runner, host_scalars
    from lai_jax.steps import bind_steps
    config = tiny_config("ner", tiny_bert, **{"model.dropout": 0.0, "model.encoder_dropout": 0.0, "batch_size": 8,
                                              "optim.adam_eps": 1e-6})
    setup = build_lib.build(config)
    inst = input_pipeline.make_instances(setup.featurizer, setup.config.phase, input_pipeline.load_splits(config, setup.labels)["train"])
    batches = [input_pipeline.stack(inst[0:8], 8), input_pipeline.stack(inst[8:13], 8)]  # the second: 5 real + 3 padding
    host0 = jax.tree.map(np.asarray, build_lib.init_state(setup, input_pipeline.stack(inst[:1]), total_steps=2))
    finals, losses = {}, {}
    for accum in (1, 4):
        runner = Runner("pmap", *bind_steps(setup.model, "ner", accum), devices=jax.devices()[:1])
        state = runner.put_state(host0)
        for b in batches:  # cold start on: the filter's own near-tie decisions could flip with summation order
            state, m = runner.train(state, b, True)
        finals[accum] = runner.get_state(state).params
        losses[accum] = host_scalars(runner.scalar(m))["loss"]
        assert runner.compiles["train"] == 1
    diff = max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(finals[1]), jax.tree.leaves(finals[4])))
    moved = max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(finals[1]), jax.tree.leaves(host0.params)))
    assert moved > 1e-4 and diff < 1e-5, (moved, diff)
    assert abs(losses[1] - losses[4]) < 1e-5 * max(1.0, abs(losses[1]))


def test_per_device_batch_splits_the_global_batch():
    from lai_jax.config_base import base_config
    from lai_jax.train import per_device_batch
    c = base_config("scierc", "ner")
    c.batch_size, c.grad_accum_steps = 48, 1
    assert per_device_batch(c, 1) == 48 and per_device_batch(c, 8) == 6 and per_device_batch(c, 4, processes=2) == 6
    c.grad_accum_steps = 3
    assert per_device_batch(c, 1) == 16 and per_device_batch(c, 2) == 8
    with pytest.raises(ValueError, match=r"batch_size=48 must be a positive multiple of .* = 30"):
        per_device_batch(c, 5, processes=2)
    c.grad_accum_steps = 0
    with pytest.raises(ValueError, match="grad_accum_steps"):
        per_device_batch(c, 1)


def test_evaluation_interval_steps_epochs_or_only_at_the_end():
    from lai_jax.config_base import base_config
    from lai_jax.train import eval_interval
    c = base_config("conll04", "ner")
    c.eval_every_steps, c.eval_every_epochs = 0, 2
    assert eval_interval(c, 10, 70) == 20
    c.eval_every_epochs = 0  # only at the end, whatever the number of epochs
    assert eval_interval(c, 10, 70) == 70 and eval_interval(c, 10, 30) == 30
    c.eval_every_steps = 7  # steps win over epochs
    assert eval_interval(c, 10, 70) == 7
    for name in ("quick", "conll04_cpu"):  # the CPU configs evaluate RE once, also with --config.num_epochs=N
        from lai_jax.config_base import load_config_file
        re_config = load_config_file(REPO / "configs" / f"{name}.py", "re")
        re_config.num_epochs = 9
        assert eval_interval(re_config, 10, 90) == 90


def test_dev_holdout_does_not_follow_the_training_seed(monkeypatch):
    """ADE's dev hold-out is drawn with data.holdout_seed: seeds vary the model, not the data."""
    from configs.ade import get_config
    from lai_jax.data.documents import Document, Sentence
    docs = [Document(f"d{i}", [Sentence(["w"])]) for i in range(50)]
    monkeypatch.setattr(input_pipeline, "load_docs", lambda config, split, labels: list(docs))
    keys = lambda splits: ([d.doc_key for d in splits["train"]], [d.doc_key for d in splits["dev"]])  # noqa: E731
    c = get_config("ner")
    seen = set()
    for seed in (0, 1, 7):
        c.seed = seed
        train_keys, dev_keys = keys(input_pipeline.load_splits(c, None))
        assert len(dev_keys) == 5 and not set(dev_keys) & set(train_keys) and len(train_keys) == 45
        seen.add(tuple(dev_keys))
    assert len(seen) == 1
    c.data.holdout_seed = 1
    assert keys(input_pipeline.load_splits(c, None))[1] != list(seen.pop())


def test_one_compile_per_phase_with_short_last_batch(tiny_bert, tmp_path):
    from lai_jax import train
    config = tiny_config("ner", tiny_bert, **{"data.train_limit": 10, "batch_size": 4, "grad_accum_steps": 2,
                                              "num_buckets": 1})
    result = train.train_and_evaluate(config, str(tmp_path))
    setup_n = result["steps"]
    assert setup_n >= 2
    # 1 train compile over an epoch whose last batch is short, one of the optimiser update; dev evals during
    # training and the final dev/test evaluations share one eval compile.
    assert result["compiles"] == {"train": 1, "eval": 1, "apply": 1}
    assert (tmp_path / "predictions" / "test.jsonl").exists() and (tmp_path / "results.json").exists()
    clock = json.loads((tmp_path / "results.json").read_text())["wall_clock_s"]
    parts = ("compile", "train_steps", "evaluation", "checkpoint_waits", "host_input", "setup", "other")
    assert set(clock) == {*parts, "total"} and all(clock[p] >= 0 for p in parts if p != "other")
    assert clock["compile"] > 0 and clock["train_steps"] > 0 and clock["evaluation"] > 0
    assert abs(sum(clock[p] for p in parts) - clock["total"]) < 0.05 + 0.01 * clock["total"]


def test_moving_average_is_what_a_run_evaluates_and_saves(tiny_bert, tmp_path):
    """With `optim.ema_decay` the best checkpoint holds the final state's average, not its raw parameters, and
    the run's test scores are the average's (evaluate restores that checkpoint and scores the same)."""
    import jax
    from lai_jax import evaluate, train
    from lai_jax.checkpoints import Checkpoints
    config = tiny_config("ner", tiny_bert, **{"data.train_limit": 12, "batch_size": 4, "num_buckets": 1,
                                              "optim.ema_decay": 0.5, "checkpoint_every_evals": 1})
    result = train.train_and_evaluate(config, str(tmp_path))
    state = Checkpoints(tmp_path / "checkpoints").restore_latest(None)
    _, runner, best = evaluate.restore_run(tmp_path)
    best = runner.get_state(best)
    assert result["best_step"] == result["steps"]  # one evaluation, at the end
    leaves = lambda t: [np.asarray(x) for x in jax.tree.leaves(t)]
    for x, y in zip(leaves(best), leaves(state["ema_params"])):
        np.testing.assert_array_equal(x, y)
    assert max(float(np.max(np.abs(x - y))) for x, y in zip(leaves(best), leaves(state["params"]))) > 1e-6
    assert evaluate.evaluate_split(tmp_path, "test") == result["test"]


def test_forced_resume_switches_the_moving_average_on_and_off(tiny_bert, tmp_path, caplog):
    """--resume=force after `optim.ema_decay` changed: the saved state is restored in its own layout (not set aside
    as damaged), the average starts from the restored parameters or is dropped, and training goes on."""
    import jax
    from lai_jax import train
    from lai_jax.checkpoints import Checkpoints
    base = {"data.train_limit": 12, "batch_size": 4, "num_buckets": 1, "eval_every_steps": 1,
            "checkpoint_every_evals": 1}
    steps = lambda n, decay: tiny_config("ner", tiny_bert, **base, **{"max_steps": n, "optim.ema_decay": decay})  # noqa: E731
    leaves = lambda t: [np.asarray(x) for x in jax.tree.leaves(t)]  # noqa: E731
    train.train_and_evaluate(steps(1, 0.0), str(tmp_path))
    for n, decay in ((2, 0.5), (3, 0.0)):
        before = Checkpoints(tmp_path / "checkpoints").restore_latest(None)
        result = train.train_and_evaluate(steps(n, decay), str(tmp_path), resume="force")
        assert result["steps"] == n and f"resumed from step {n - 1}" in caplog.text
        assert not (tmp_path / "checkpoints" / "damaged").exists()
        after = Checkpoints(tmp_path / "checkpoints").restore_latest(None)
        assert (after.get("ema_params") is not None) == (decay > 0)
        if decay:  # one update (to step 2) from the restored parameters: d = min(0.5, (1 + 2) / (10 + 2))
            d = 3 / 12
            for e, p0, p1 in zip(leaves(after["ema_params"]), leaves(before["params"]), leaves(after["params"])):
                np.testing.assert_allclose(e, d * p0 + (1 - d) * p1, rtol=1e-5, atol=1e-7)


def _final_params(workdir: Path):
    from lai_jax.checkpoints import Checkpoints
    ckpt = Checkpoints(workdir / "checkpoints")
    state = ckpt.restore_latest(None)
    return ckpt.latest_step(), state["params"], state["opt_state"]


def test_kill_resume_equals_uninterrupted_then_evaluate(tiny_bert, tmp_path):
    common = ["-m", "lai_jax.main", "--config=configs/quick.py:ner", f"--config.encoder={tiny_bert}",
              "--config.data.train_limit=24", "--config.data.eval_limit=8", "--config.max_text_len=24",
              "--config.max_span_len=3", "--config.max_candidates=24", "--config.batch_size=4",
              "--config.model.gcn_heads=2", "--config.max_steps=6", "--config.eval_every_steps=2",
              "--config.cold_start_epochs=0", "--config.log_every_steps=1", "--config.num_buckets=3",
              "--config.checkpoint_every_evals=1"]
    killed = run(common + [f"--workdir={tmp_path / 'a'}", "--config.debug_kill_after_step=3"], check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL: nothing after step 3 ran
    assert not (tmp_path / "a" / "results.json").exists()
    resumed = run(common + [f"--workdir={tmp_path / 'a'}"])
    assert "resumed from step 2" in resumed.stderr
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if "loss" in r]
    assert train_steps == [1, 2, 3, 4, 5, 6]  # step 3, logged before the kill, is logged once
    best_at_2 = next(r["dev/ner_micro_f1"] for r in records if r.get("step") == 2 and "dev/ner_micro_f1" in r)
    assert f"best dev F1 so far {best_at_2:.4f}" in resumed.stderr  # 0.0 is a best F1, not "none yet" (-1)
    # stderr is not a terminal here (as under SLURM): plain progress lines replace the bar.
    assert re.search(r"train ner step 4/6 epoch \d+ loss \d+\.\d+ \d+\.\d+ steps/s ETA \d+m\d\ds", resumed.stderr)
    # Rerunning with another seed (or forgetting to change --workdir) is refused, the run left as it was.
    saved = (tmp_path / "a" / "config.json").read_text()
    refused = run(common + [f"--workdir={tmp_path / 'a'}", "--config.seed=7"], check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    assert "seed 0 -> 7" in refused.stderr and "--resume=force" in refused.stderr
    assert (tmp_path / "a" / "config.json").read_text() == saved
    run(common + [f"--workdir={tmp_path / 'b'}"])
    step_a, params_a, opt_a = _final_params(tmp_path / "a")
    step_b, params_b, opt_b = _final_params(tmp_path / "b")
    assert step_a == step_b == 6
    import jax
    for x, y in zip(jax.tree.leaves((params_a, opt_a)), jax.tree.leaves((params_b, opt_b))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # Restore the best checkpoint for evaluation, as a user would.
    out = run(["-m", "lai_jax.evaluate", f"--workdir={tmp_path / 'a'}", "--split=test"])
    assert "ner" in out.stdout and (tmp_path / "a" / "eval" / "test.json").exists()
    result = json.loads((tmp_path / "a" / "eval" / "test.json").read_text())
    assert result["ner"]["micro"]["n_gold"] > 0
    # Evaluation batches and splits slots as training did (shapes.json): the same scores as the run's own.
    assert result == json.loads((tmp_path / "a" / "results.json").read_text())["test"]
    saved = json.loads((tmp_path / "a" / "shapes.json").read_text())
    assert len(saved.get("train_shapes", saved["shapes"])) > 1  # resumed across training's batch shapes
    assert "re+" not in out.stdout  # a NER run's table has no relation rows
    # A sweep decodes several thresholds from one forward pass; at the run's own threshold it equals evaluate.
    from lai_jax.config_base import load_run_config
    own = load_run_config(tmp_path / "a").ner.filter_threshold
    out = run(["-m", "lai_jax.evaluate", f"--workdir={tmp_path / 'a'}", "--split=test",
               f"--sweep=ner.filter_threshold={own},1.0"])
    sweep = json.loads((tmp_path / "a" / "eval" / "test_sweep.json").read_text())
    assert [r["value"] for r in sweep["runs"]] == [own, 1.0] and "ner.filter_threshold" in out.stdout
    assert sweep["runs"][0]["result"] == result
    assert sweep["runs"][1]["result"]["ner"]["micro"]["n_pred"] == 0
    # A decoding override, as when tuning the filter threshold on dev (the default split): no probability is 1.
    out = run(["-m", "lai_jax.evaluate", f"--workdir={tmp_path / 'a'}", "--set=ner.filter_threshold=1"])
    result = json.loads((tmp_path / "a" / "eval" / "dev.json").read_text())
    assert result["overrides"] == {"ner.filter_threshold": 1.0}
    assert result["ner"]["micro"]["n_pred"] == 0 and result["ner"]["micro"]["n_gold"] > 0
    bad = run(["-m", "lai_jax.evaluate", f"--workdir={tmp_path / 'a'}", "--set=model.dtype=bfloat16"], check=False)
    assert bad.returncode == 2 and "ner.filter_threshold" in bad.stderr and "Traceback" not in bad.stderr


def test_saved_config_missing_newer_fields_still_loads(tmp_path):
    from lai_jax.config_base import base_config
    from lai_jax.config_base import load_run_config
    saved = base_config("conll04", "ner").to_dict()
    saved["max_text_len"] = 77
    saved["re"]["entities_from"] = "somewhere"
    del saved["model"]["dropout_bits"]  # as in a workdir written before the field existed
    for key in ("batch_size", "grad_accum_steps"):  # before the global batch: a per-device one
        del saved[key]
    del saved["data"]["holdout_seed"]
    saved["per_device_batch_size"] = 16
    saved["seed"] = 3
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config = load_run_config(tmp_path)
    assert config.model.dropout_bits == base_config("conll04", "ner").model.dropout_bits
    assert config.batch_size == base_config("conll04", "ner").batch_size
    assert config.data.holdout_seed == 3  # such runs drew the dev hold-out with the training seed
    # a run reference that is a run neither from the workdir nor from here resolves from the workdir
    assert config.max_text_len == 77 and config.re.entities_from == str(tmp_path / "somewhere")
    (tmp_path / "config.json").write_text(json.dumps({"foo": 1}))
    with pytest.raises(ValueError, match="not a lai-jax run config"):
        load_run_config(tmp_path)


def test_saved_flat_ner_maps_to_overlap_and_defaults(tmp_path):
    from lai_jax.config_base import base_config
    from lai_jax.config_base import load_run_config
    from lai_jax.build import check_choices
    default = base_config("scierc", "ner")
    assert default.ner.overlap == "plmarker" and default.eval.symmetric_count == "both"
    for flat, overlap in ((True, "flat"), (False, "none")):
        saved = default.to_dict()
        del saved["ner"]["overlap"], saved["eval"]  # as written before these fields existed
        saved["ner"]["flat_ner"] = flat
        (tmp_path / "config.json").write_text(json.dumps(saved))
        config = load_run_config(tmp_path)
        assert config.ner.overlap == overlap and "flat_ner" not in config.ner
        assert config.eval.symmetric_count == "both"
        check_choices(config)
    config.ner.overlap = "nested"
    with pytest.raises(ValueError, match="ner.overlap"):
        check_choices(config)
    config.ner.overlap = "plmarker"
    config.model.span_loss_norm = "candidate"  # a typo must not silently mean the paper's "kept"
    with pytest.raises(ValueError, match="model.span_loss_norm"):
        check_choices(config)


def _write_ner_predictions(workdir, split, settings):
    from lai_jax.data.documents import Document, Entity, Sentence
    docs = [Document("d0", [Sentence(["a", "b"], [Entity(0, 0, "Method")])])]
    predictions.write_predictions(Path(workdir) / "predictions" / f"{split}.jsonl", docs, settings)


def test_re_refuses_dev_and_test_entities_decoded_differently(tmp_path, caplog):
    from lai_jax.config_base import base_config
    from lai_jax.evaluate import ensure_predictions
    ner = base_config("scierc", "ner")
    (tmp_path / "config.json").write_text(json.dumps(ner.to_dict()))
    settings = predictions.prediction_settings(ner, 120)
    assert settings == {"phase": "ner", "checkpoint_step": 120, "model.use_filter": True,
                        "ner.filter_threshold": 0.5, "ner.overlap": "plmarker"}
    _write_ner_predictions(tmp_path, "dev", settings)
    _write_ner_predictions(tmp_path, "test", settings)
    assert json.loads((tmp_path / "predictions" / "test.settings.json").read_text()) == settings
    assert ensure_predictions(tmp_path, "test") == tmp_path / "predictions" / "test.jsonl"
    # test rewritten with another threshold (evaluate --set=ner.filter_threshold=0.3 on test only)
    ner.ner.filter_threshold = 0.3
    _write_ner_predictions(tmp_path, "test", predictions.prediction_settings(ner, 120))
    for split in ("dev", "test"):
        with pytest.raises(ValueError) as e:
            ensure_predictions(tmp_path, split)
        msg = str(e.value)
        for name in ("dev.jsonl", "test.jsonl"):
            assert str(tmp_path / "predictions" / name) in msg
        assert "ner.filter_threshold: 0.5 in dev.jsonl, 0.3 in test.jsonl" in msg
        assert "ner.overlap" not in msg and "checkpoint_step" not in msg
    # the RE run reads them through predicted_entities: refused there too
    re_config = base_config("scierc", "re")
    re_config.re.entities_from = str(tmp_path)
    with pytest.raises(ValueError, match="different settings"):
        evaluate.predicted_entities(re_config, "dev", [])
    # same settings again -> accepted; a different checkpoint step is a mismatch as well
    _write_ner_predictions(tmp_path, "test", settings)
    ensure_predictions(tmp_path, "dev")
    _write_ner_predictions(tmp_path, "dev", predictions.prediction_settings(base_config("scierc", "ner"), 90))
    with pytest.raises(ValueError, match="checkpoint_step: 90 in dev.jsonl, 120 in test.jsonl"):
        ensure_predictions(tmp_path, "test")
    # a file written before settings were recorded cannot be checked: a warning, not a refusal
    _write_ner_predictions(tmp_path, "dev", None)
    assert not (tmp_path / "predictions" / "dev.settings.json").exists()
    with caplog.at_level("WARNING", logger="lai_jax"):
        ensure_predictions(tmp_path, "test")
    assert "dev.settings.json" in caplog.text


def test_unknown_config_field_is_an_error(tmp_path):
    out = run(["-m", "lai_jax.main", "--config=configs/quick.py:ner", "--config.model.no_such_field=1",
               f"--workdir={tmp_path}"], check=False)
    assert out.returncode != 0 and "no_such_field" in out.stderr


def test_missing_paper_encoder_is_one_clear_error(tmp_path):
    env = {**ENV, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf_cache")}
    out = run(["-m", "lai_jax.main", "--config=configs/scierc.py:ner", f"--workdir={tmp_path / 'run'}"], env=env,
              check=False)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "allenai/scibert_scivocab_uncased" in out.stderr and "--config.encoder=default" in out.stderr


def test_nonfinite_loss_names_the_step():
    import jax.numpy as jnp
    from lai_jax.train import NonFiniteLoss, _check_finite
    pending = [(7, {"loss": jnp.float32(1.0)}), (8, {"loss": jnp.float32(jnp.nan)}), (9, {"loss": jnp.float32(2.0)})]
    with pytest.raises(NonFiniteLoss, match="at step 8"):
        _check_finite(pending)
    assert _check_finite([(1, {"loss": jnp.float32(0.5)})])["loss"] == 0.5


def test_configs_load_for_every_dataset_and_phase():
    import importlib
    for name in ("scierc", "ade", "conll04", "ace05", "quick"):
        mod = importlib.import_module(f"configs.{name}")
        for phase in ("ner", "re"):
            c = mod.get_config(phase)
            assert c.phase == phase and c.max_candidates > 0
    with pytest.raises(ValueError, match="phase"):
        importlib.import_module("configs.scierc").get_config("xx")


def test_parse_assignment_types_and_errors():
    from lai_jax.config_base import base_config, parse_assignment
    from lai_jax.evaluate import parse_overrides
    c = base_config("scierc", "ner")
    assert parse_assignment(c, "model.dropout_bits=32") == ("model.dropout_bits", 32)
    assert parse_assignment(c, "model.attention_dropout=0") == ("model.attention_dropout", 0.0)
    assert parse_assignment(c, "model.use_filter=false") == ("model.use_filter", False)
    for bad, match in [("model.nope=1", "config field"), ("model=3", "ConfigDict"), ("model.dropout_bits=x", "not a int"),
                       ("model.use_filter=maybe", "not a bool"), ("seed", "FIELD=VALUE")]:
        with pytest.raises(ValueError, match=match):
            parse_assignment(c, bad)
    assert parse_overrides(["re.re_decode=sum", "ner.filter_threshold=0.25"]) == {"re.re_decode": "sum",
                                                                                  "ner.filter_threshold": 0.25}
    assert parse_overrides(["ner.overlap=flat", "eval.symmetric_count=once"]) == {"ner.overlap": "flat",
                                                                                   "eval.symmetric_count": "once"}
    with pytest.raises(ValueError, match="fix the trained model"):
        parse_overrides(["model.gcn_layers=1"])


def test_g4cn_biases_and_layer_norms_get_no_weight_decay(tiny_bert):
    from lai_jax.steps import _decay_mask
    config = tiny_config("ner", tiny_bert)
    setup = build_lib.build(config)
    inst = input_pipeline.make_instances(setup.featurizer, "ner", input_pipeline.load_splits(config, setup.labels)["train"])
    state = jax.eval_shape(lambda: build_lib.init_state(setup, input_pipeline.stack(inst[:1]), total_steps=1))
    decayed = {jax.tree_util.keystr(path): keep for path, keep in
               jax.tree_util.tree_flatten_with_path(_decay_mask(state.params))[0]}
    g4cn = {k: v for k, v in decayed.items() if "g4cn" in k}
    assert any("'bias_0'" in k for k in g4cn) and any("'kernel_0'" in k for k in g4cn)
    for name, keep in decayed.items():
        leaf = name.rsplit("'", 2)[-2]
        assert keep == (leaf in ("kernel", "embedding") or leaf.startswith("kernel_")), name


def test_a_nan_gradient_with_a_finite_loss_never_reaches_a_checkpoint(tiny_bert, tmp_path, monkeypatch):
    """The loss is computed before the update: a step whose gradients are NaN reports a finite loss. The step's
    finiteness flag stops the run before its evaluation saves anything."""
    import jax
    from lai_jax import models, train

    @jax.custom_vjp
    def nan_gradient(x):
        return x

    nan_gradient.defvjp(lambda x: (x, None), lambda _, g: (g * jnp.nan,))
    real = models.LOSSES["ner"]

    def poisoned(*args):
        sums, counts = real(*args)
        return {k: nan_gradient(v) for k, v in sums.items()}, counts

    monkeypatch.setitem(models.LOSSES, "ner", poisoned)
    config = tiny_config("ner", tiny_bert, **{"max_steps": 2, "eval_every_steps": 1, "checkpoint_every_evals": 1})
    with pytest.raises(train.NonFiniteLoss, match=r"gradients or parameters became NaN/inf .*loss \d.* at step 1"):
        train.train_and_evaluate(config, str(tmp_path))
    from lai_jax.checkpoints import has_checkpoint
    assert not has_checkpoint(tmp_path / "checkpoints")


def test_a_second_identical_run_compiles_nothing_new(tiny_bert, tmp_path, monkeypatch):
    """The persistent compilation cache: the second run loads every executable the first one compiled."""
    import jax
    from jax import monitoring
    from lai_jax import compile_cache, train
    events: list[str] = []
    monitoring.register_event_listener(lambda event, **_: events.append(event))
    monkeypatch.setenv("LAI_JAX_COMPILE_CACHE", str(tmp_path / "jax_cache"))
    threshold = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # the tiny model compiles in < 1 s
    try:
        config = tiny_config("ner", tiny_bert, **{"max_steps": 2, "eval_every_steps": 2, "data.eval_limit": 4})
        seen = []
        for run in ("first", "second"):
            jax.clear_caches()  # as a new process: nothing compiled in memory
            events.clear()
            train.train_and_evaluate(config, str(tmp_path / run))
            seen.append((events.count("/jax/compilation_cache/cache_misses"),
                         events.count("/jax/compilation_cache/cache_hits"),
                         len(list((tmp_path / "jax_cache").iterdir()))))
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", threshold)
        compile_cache.enable(compile_cache.OFF)
    (misses1, _, files1), (misses2, hits2, files2) = seen
    assert misses1 >= 2 and files1 >= 2  # at least the train and eval steps were written
    assert misses2 == 0 and files2 == files1 and hits2 >= misses1, seen
