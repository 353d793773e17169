"""Learning check (issue: model heads): NER and RE on the packaged encoder overfit 8 CoNLL04 sentences."""
import json

import pytest

from lai_jax.config_base import set_fields
from lai_jax.input_pipeline import DATA_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def eight(tmp_path_factory):
    """8 short training sentences with relations, served as train, dev and test of a tiny dataset.

    Short sentences and entities of <= 3 words keep the static shapes small (one instance per sentence,
    T = 136), so the check fits a CPU test budget with the full 6-layer packaged encoder."""
    data = json.loads((DATA_ROOT / "conll04" / "conll04_train.json").read_text())
    pick = [s for s in data if len(s["tokens"]) <= 16 and s["relations"]
            and max(e["end"] - e["start"] for e in s["entities"]) <= 3][:8]
    assert len(pick) == 8
    root = tmp_path_factory.mktemp("conll04_8")
    for split in ("train", "dev", "test"):
        (root / f"conll04_{split}.json").write_text(json.dumps(pick))
    return root


def overfit(phase, data_dir, workdir, epochs, **overrides):
    from configs.quick import get_config
    from lai_jax import train
    c = set_fields(get_config(phase), **{
        "data.dir": str(data_dir), "data.train_limit": 0, "data.eval_limit": 0, "max_text_len": 28,
        "max_span_len": 3, "max_candidates": 48, "max_objects": 8, "num_epochs": epochs,
        "batch_size": 4 if phase == "ner" else 8, "optim.learning_rate": 3e-3,
        "optim.encoder_learning_rate": 2e-4, "optim.warmup_ratio": 0.05, "model.dropout": 0.0,
        "model.encoder_dropout": 0.0, "eval_every_epochs": 10_000, "log_every_steps": 1,
        # Every candidate and subject, one shape, as these overfitting checks were calibrated (quick.py samples).
        "ner.train_negatives": 0, "re.negative_subject_rate": 1.0, "num_buckets": 1, "re.re_decode": "sum",
        "model.span_loss_weight": 1.0, "ner.overlap": "plmarker", **overrides})
    result = train.train_and_evaluate(c, str(workdir))
    losses = [json.loads(line)["loss"] for line in open(workdir / "metrics.jsonl") if '"loss"' in line]
    per_epoch = len(losses) // epochs
    # One batch's loss is noisy (batches differ in how many real candidates they hold): compare the mean
    # loss of the first and the last epoch.
    return result, [sum(losses[:per_epoch]) / per_epoch, sum(losses[-per_epoch:]) / per_epoch]


def test_ner_overfits_with_cold_start(eight, tmp_path):
    epochs, cold = 24, 8  # 2 steps an epoch: 16 cold-start steps, then 32 on the filter's own decisions
    result, losses = overfit("ner", eight, tmp_path, epochs, cold_start_epochs=cold)
    f1 = result["dev"]["ner"]["micro"]["f1"]
    print(f"NER overfit: loss {losses[0]:.4f} -> {losses[-1]:.4f} ({1 - losses[-1] / losses[0]:.1%} lower), F1 {f1:.3f}")
    assert result["steps"] == 2 * epochs  # so the cold-start switch turned off after step 16
    assert losses[-1] <= 0.1 * losses[0]
    assert f1 >= 0.9


def test_re_overfits_on_gold_entities(eight, tmp_path):
    result, losses = overfit("re", eight, tmp_path, 20)
    f1 = result["dev"]["re"]["micro"]["f1"]
    print(f"RE overfit: loss {losses[0]:.4f} -> {losses[-1]:.4f} ({1 - losses[-1] / losses[0]:.1%} lower), F1 {f1:.3f}")
    assert losses[-1] <= 0.1 * losses[0]
    assert f1 >= 0.9
