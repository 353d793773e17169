"""benchmarks.plan: the FLOPs of the compiled step against a hand count of the encoder's matmuls, and its memory."""
from __future__ import annotations

import pytest

from benchmarks import plan
from lai_jax.pretrained import RANDOM_SIZES

# BERT-Mini (4 layers, 256 wide, 4 heads, 1024 intermediate): wide enough that the encoder's matmuls dominate.
# In a 32-wide encoder the per-element work (LayerNorm, GELU's erf, biases, softmax) and AdamW over the 30522-row
# embedding come within a few percent of the matmuls, since they grow with the width and the matmuls with its
# square. Short text and few slots keep the heads small next to the encoder; one batch shape, one compile.
ARGS = ["--config=configs/scierc.py:ner", "--encoder=random:bert-mini", "--devices=2", "--tflops=100", "--json",
        "--set", "data.use_tfds=False", "--set", "data.train_limit=16", "--set", "num_buckets=1",
        "--set", "max_text_len=128", "--set", "max_candidates=16", "--set", "batch_size=32"]


def hand_count(batch: int, tokens: int, hidden: int, layers: int, intermediate: int) -> float:
    """Training FLOPs of the encoder's matmuls, written out.

    A matmul of [m, k] by [k, n] is 2mkn FLOPs (a multiply and an add per term). Per layer and token (N = B T
    tokens, d wide): the query, key and value projections and the attention output are four d x d matmuls,
    4 * 2d^2; the feed-forward is d x f and f x d, 2 * 2df. Attention: Q K^T is [T, d] by [d, T] per sequence
    (summed over heads the widths add up to d), 2 T^2 d, and P V the same: 4 B T^2 d per layer. Training is 3x
    the forward pass: the backward pass computes two matmuls (the input's and the weight's gradients) for each
    forward one. Everything else (embeddings gather, LayerNorm, GELU, softmax, dropout, the NER heads and G4CN,
    AdamW) is left out: the plan's FLOPs may exceed this count by that much, hence the 10 %.
    """
    n = batch * tokens
    forward = layers * (n * (8 * hidden ** 2 + 4 * hidden * intermediate) + 4 * batch * tokens ** 2 * hidden)
    return 3.0 * forward


@pytest.fixture(scope="module")
def result():
    return plan.main(ARGS)


def test_flops_match_a_hand_count_of_the_encoder_matmuls(result):
    size = RANDOM_SIZES["bert-mini"]
    (shape,) = result["shapes"]
    assert result["per_device_batch"] == 16 and (result["layers"], result["hidden"]) == (4, 256)
    expected = hand_count(16, shape["tokens"], size["hidden_size"], size["num_hidden_layers"],
                          size["intermediate_size"])
    assert 1.0 <= shape["flop_per_step"] / expected < 1.10, (shape["flop_per_step"], expected)
    # The attention part of that count is what the GPU check adds for cuDNN's kernel (a custom call XLA counts as 0).
    bert = type("Bert", (), {"hidden_size": 256, "num_hidden_layers": 4})
    assert plan.attention_matmul_flops(bert, 16, shape["tokens"]) == 3 * 4 * 4 * 16 * shape["tokens"] ** 2 * 256


def test_epoch_totals_and_memory(result):
    (shape,) = result["shapes"]
    assert result["steps_per_epoch"] == shape["steps_per_epoch"] == -(-result["train_instances"] // 32)
    assert result["flop_per_epoch_per_device"] == pytest.approx(shape["flop_per_step"] * result["steps_per_epoch"])
    assert result["flop_per_epoch_all_devices"] == pytest.approx(2 * result["flop_per_epoch_per_device"])
    assert result["epoch_s"] == pytest.approx(result["flop_per_epoch_per_device"] / 100e12)
    mem = result["memory_mib_per_device"]
    params = result["parameter_count"]
    assert mem["parameters"] == pytest.approx(params * 4 / 2**20, abs=0.1)  # float32
    assert mem["optimiser"] == pytest.approx(2 * mem["parameters"], rel=0.01)  # AdamW's two moments
    assert 0 < mem["activations"] and mem["peak"] >= mem["parameters"] + mem["optimiser"] + mem["activations"]


def test_bad_batch_split_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as e:
        plan.main(["--config=configs/scierc.py:ner", "--encoder=random:tiny", "--devices=5"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: batch_size=48 must be a positive multiple")
