"""GPU defaults without a GPU: the dtype and attention dropout "auto" choices, and the launchers' shared settings."""

import jax.numpy as jnp
import pytest

from tests.conftest import REPO, tiny_config


def test_auto_dtype_is_bf16_on_accelerators_and_float32_on_cpus(monkeypatch):
    from lai_jax import build
    assert build.compute_dtype("auto") == jnp.float32  # the tests run on CPUs
    for backend, want in (("gpu", jnp.bfloat16), ("tpu", jnp.bfloat16), ("cpu", jnp.float32)):
        monkeypatch.setattr(build.jax, "default_backend", lambda: backend)
        assert build.compute_dtype("auto") == want, backend
    assert build.compute_dtype("float32") == jnp.float32 and build.compute_dtype("bfloat16") == jnp.bfloat16
    with pytest.raises(ValueError, match="model.dtype='fp16'"):
        build.compute_dtype("fp16")


@pytest.mark.parametrize("platform,dtype,setting,want", [
    ("cuda", "bfloat16", -1.0, 0.0),  # auto on a GPU in bf16: no attention dropout, so the fused kernel trains
    ("cuda", "float32", -1.0, 0.1),  # no fused kernel in float32: the encoder's own value
    ("cpu", "bfloat16", -1.0, 0.1),
    ("cuda", "bfloat16", 0.1, 0.1),  # set explicitly: kept (XLA attention with dropout)
])
def test_auto_attention_dropout_is_off_only_where_the_fused_kernel_trains(tiny_bert, monkeypatch, platform, dtype,
                                                                         setting, want):
    from lai_jax import build, encoder
    monkeypatch.setattr(encoder, "backend_platform", lambda: platform)
    config = tiny_config("ner", tiny_bert, **{"model.dtype": dtype, "model.attention_dropout": setting})
    bert = build.build(config).model.bert
    assert bert.attention_probs_dropout_prob == pytest.approx(want) and bert.hidden_dropout_prob == pytest.approx(0.1)


def test_gpu_launchers_share_one_environment():
    env = (REPO / "launch" / "gpu_env.sh").read_text()
    assert "--xla_gpu_enable_latency_hiding_scheduler=true" in env and "PREALLOCATE=false" not in env
    for name in ("multi_gpu.sh", "slurm.sbatch"):
        text = (REPO / "launch" / name).read_text()
        assert "gpu_env.sh" in text, name
        assert "XLA_FLAGS=" not in text and "model.dtype" not in text and "PREALLOCATE" not in text, name
