"""The torch reference computes the lai-jax NER model (so the benchmark compares like with like); bench smoke."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from benchmarks import step as bench
from benchmarks import torch_reference as tr
from benchmarks.workload import REPO, load_batch, make_setup
from lai_jax import pretrained
from lai_jax.models import ner_loss
from lai_jax import input_pipeline
from tests.conftest import subprocess_xla_flags

LAYERS = 2  # the packaged encoder's first layers: real weight scales, quick compiles


@pytest.fixture(scope="module")
def pair():
    """(setup, batch, flax params, torch model with those params) on tiny SciERC shapes."""
    # Two G4CN blocks (SciERC's NER config has one), so the wiring between blocks is compared too.
    config, setup = make_setup("default", max_text_len=24, max_candidates=12, layers=LAYERS,
                               overrides=("model.gcn_layers=2",))
    _, instances = load_batch(config, setup, 1)
    # Two real instances with entities among their K slots, and a zero-weight all-PAD padding row (fully
    # padded mask rows, no candidates).
    chosen = [i for i in instances if (i.arrays["labels"] > 0).any()][:2]
    batch = input_pipeline.stack(chosen, 3)
    assert batch["cand_mask"][:2].any() and batch["weight"][2] == 0 and not batch["cand_mask"][2].any()
    # Head parameters drawn without compiling `init`: kernels ~ N(0, 1/fan_in), biases ~ N(0, 0.05) (init would
    # leave them 0 and so untested); the encoder is the packaged one with a perturbed first query layer.
    shapes = jax.eval_shape(lambda b: setup.model.init(jax.random.PRNGKey(0), b)["params"], batch)
    rng = np.random.default_rng(0)

    def fill(path, a):
        std = 0.05 if len(a.shape) < 2 else a.shape[-2] ** -0.5
        return rng.normal(0.0, std, a.shape).astype(np.float32)

    params = jax.tree_util.tree_map_with_path(fill, {k: v for k, v in shapes.items() if k != "encoder"})
    params["encoder"] = jax.tree.map(np.array, setup.encoder_params)
    query = params["encoder"]["layer_0"]["query"]
    query["kernel"] = query["kernel"] + rng.normal(0.0, 0.02, query["kernel"].shape).astype(np.float32)
    tmodel = tr.TorchLAINet.from_pretrained(pretrained.default_encoder_path(), setup.head, num_hidden_layers=LAYERS)
    tr.copy_flax_params(tmodel, params)
    return setup, batch, params, tmodel.eval()


def test_batch_is_real_scierc(pair):
    setup, batch, _, _ = pair
    assert setup.head.phase == "ner" and setup.head.gcn_layers > 0 and setup.head.use_annotations
    assert batch["input_ids"].shape[1] == setup.featurizer.seq_len("ner")
    assert batch["anno_start"].shape[1] == len(setup.labels.entity_types)


@pytest.fixture(scope="module")
def jax_value_and_grad(pair):
    """One compiled (loss, aux), grads function for both filter modes (the mode is an argument)."""
    setup, batch, _, _ = pair

    def objective(params, gold):
        out = setup.model.apply({"params": params}, batch, deterministic=True)
        sums, counts = ner_loss(out, batch, gold)
        return sum(sums[k] / jnp.maximum(counts[k], 1) for k in sums), (out, sums, counts)

    return jax.jit(jax.value_and_grad(objective, has_aux=True))


@pytest.mark.parametrize("gold", [True, False])
def test_torch_reference_matches_lai_jax(pair, jax_value_and_grad, gold):
    """Same logits, loss terms, counts and gradients (float32, deterministic) on the same weights."""
    setup, batch, params, tmodel = pair
    (loss, (out, sums, counts)), grads = jax_value_and_grad(params, jnp.asarray(gold))

    tb = tr.to_torch(batch)
    tmodel.zero_grad(set_to_none=True)
    tout = tmodel(tb)
    tsums, tcounts = tr.ner_loss(tout, tb, gold)
    tloss, _ = tr.ner_objective(tout, tb, gold)
    tloss.backward()

    for k in ("logits", "filter_logits"):
        np.testing.assert_allclose(tout[k].detach().numpy(), np.asarray(out[k]), atol=1e-4, rtol=0)
    assert {k: int(v) for k, v in tcounts.items()} == {k: int(v) for k, v in counts.items()}
    for k in sums:
        np.testing.assert_allclose(float(tsums[k].detach()), float(sums[k]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(float(tloss.detach()), float(loss), rtol=1e-4, atol=1e-5)

    # Gradients (what the benchmark's backward computes), as relative errors of whole tensors.
    hg = tr.head_params(grads)
    g4 = hg["g4cn"]
    pairs = {
        "span_proj": (tmodel.span_proj.weight.grad.T, hg["span_proj"]["kernel"]),
        "anno_proj.bias": (tmodel.anno_proj.bias.grad, hg["anno_proj"]["bias"]),
        "classifier": (tmodel.classifier.weight.grad.T, hg["classifier"]["kernel"]),
        "filter": (tmodel.filter.weight.grad.T, hg["filter"]["kernel"]),
        "gauss": (tmodel.g4cn.gauss.weight.grad.T, g4["gauss"]["kernel"]),
        "block_1.kernel_1": (tmodel.g4cn.blocks[1].kernels[1].grad, g4["block_1"]["kernel_1"]),
        "block_0.out": (tmodel.g4cn.blocks[0].out.weight.grad.T, g4["block_0"]["out"]["kernel"]),
        "query_0": (tmodel.bert.encoder.layer[0].attention.self.query.weight.grad.T,
                    grads["encoder"]["layer_0"]["query"]["kernel"]),
        "word_embeddings": (tmodel.bert.embeddings.word_embeddings.weight.grad,
                            grads["encoder"]["embeddings"]["word_embeddings"]["embedding"]),
    }
    for name, (t, j) in pairs.items():
        t, j = t.numpy(), np.asarray(j)
        assert np.linalg.norm(j) > 0, name
        assert np.linalg.norm(t - j) <= 1e-3 * np.linalg.norm(j), name


def test_kl_matrix_port_matches():
    from lai_jax.g4cn import gaussian_kl_matrix

    rng = np.random.default_rng(1)
    mu = rng.normal(3.0, 1.0, (2, 3, 7, 2)).astype(np.float32)
    sigma = rng.uniform(0.3, 2.0, (2, 3, 7, 2)).astype(np.float32)
    mask = rng.random((2, 1, 7)) < 0.7
    want = np.asarray(gaussian_kl_matrix(mu, sigma, mask=mask))
    got = tr.gaussian_kl_matrix(torch.from_numpy(mu), torch.from_numpy(sigma), torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bench_smoke():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.step", "--smoke"], capture_output=True, text=True,
                          timeout=600, cwd=REPO, env={**os.environ, "XLA_FLAGS": subprocess_xla_flags()})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    assert len(lines) == 1, proc.stdout
    r = json.loads(lines[0])
    for k in ("jax_steps_per_s", "torch_steps_per_s", "ratio", "encoder_jax_steps_per_s",
              "encoder_torch_steps_per_s", "encoder_ratio", "compile_s"):
        assert isinstance(r[k], float) and r[k] > 0, k
    assert r["batch"] == 1 and r["K"] == bench.SMOKE["max_candidates"] and r["layers"] == bench.SMOKE["layers"]
    assert 0 < r["real_token_fraction"] <= 1 and 0 < r["real_candidate_fraction"] <= 1
    assert r["jax_compiled_temp_mb"] is None or r["jax_compiled_temp_mb"] > 0
    assert r["mfu"] is None  # CPU
    assert r["threads"] >= 1 and r["device"].startswith("cpu")


def test_compile_bench_smoke():
    """Each repeat really compiles (a cache hit takes ~0.01 s; the smallest train step takes far longer)."""
    from benchmarks import compile as compile_bench

    proc = subprocess.run([sys.executable, "-m", "benchmarks.compile", "--smoke"], capture_output=True, text=True,
                          timeout=600, cwd=REPO, env={**os.environ, "XLA_FLAGS": subprocess_xla_flags()})
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["batch"] == 1 and r["K"] == compile_bench.SMOKE["max_candidates"] and r["backend"] == "cpu"
    for kind in ("train", "eval"):
        assert len(r[f"{kind}_compile_s"]) == compile_bench.SMOKE["repeats"]
        assert all(t > 0.1 for t in r[f"{kind}_compile_s"]), r
    assert min(r["train_compile_s"]) > max(r["eval_compile_s"])  # forward + backward + AdamW vs a forward


def test_epoch_bench_smoke(capsys):
    """One tiny epoch on both frameworks: every batch hits a precompiled bucket, both sides train on all instances."""
    from benchmarks import epoch

    r = epoch.main(["--smoke"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == r
    assert r["instances"] == epoch.SMOKE["limit"] and r["batch"] == epoch.SMOKE["batch"]
    assert len(r["buckets"]) >= 2 and r["buckets"][-1] == [r["K"], r["T"]] and len(r["compile_s_per_bucket"]) >= 2
    assert sum(r["batches_per_bucket"]) == r["batches"] >= r["instances"] / r["batch"]
    assert r["jax_recompiles"] == 0
    assert 0 < r["jax_host_ms_per_step"] < r["jax_step_ms"]  # building a batch costs less than a step
    for k in ("jax_instances_per_s", "torch_instances_per_s", "ratio", "cpu_ratio", "compile_s"):
        assert isinstance(r[k], float) and r[k] > 0, k
    assert abs(r["ratio"] - r["jax_instances_per_s"] / r["torch_instances_per_s"]) < 0.01 * r["ratio"] + 1e-3
    # Dynamic padding computes no more padding than buckets do (it cuts every batch to its own longest row).
    assert 0 < r["jax_token_fraction"] <= r["torch_token_fraction"] <= 1
    # Same data and initial weights: the losses agree roughly (different dropout streams).
    assert abs(r["jax_mean_loss"] - r["torch_mean_loss"]) < 0.25 * r["torch_mean_loss"]
