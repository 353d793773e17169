"""The paper configs carry the paper's settings (LAI-Net Appendix A.1, Table 2); quick/CoNLL04 stay CPU-sized."""
from lai_jax import build as build_lib
from lai_jax.data.labels import load_labels
from lai_jax.input_pipeline import DATA_ROOT
from lai_jax.models import HeadConfig
import importlib

import pytest

# Appendix A.1: encoder, per-GPU batch (NER, RE) on 3 GPUs, NER cold-start epochs. Table 2: G4CN (layers, heads).
PAPER = {
    "scierc": dict(encoder="allenai/scibert_scivocab_uncased", per_gpu=(16, 40), cold_start=40,
                   gcn={"ner": (1, 4), "re": (2, 4)}),
    "ace05": dict(encoder="bert-base-uncased", per_gpu=(20, 50), cold_start=15, gcn={"ner": (2, 4), "re": (2, 2)}),
    "ade": dict(encoder="bert-base-uncased", per_gpu=(14, 64), cold_start=40, gcn={"ner": (1, 3), "re": (1, 3)}),
}


@pytest.mark.parametrize("dataset", sorted(PAPER))
@pytest.mark.parametrize("phase", ["ner", "re"])
def test_paper_configs_match_the_paper(dataset, phase):
    paper = PAPER[dataset]
    c = importlib.import_module(f"configs.{dataset}").get_config(phase)
    assert c.dataset == dataset and c.phase == phase
    assert c.encoder == paper["encoder"]
    assert c.optim.learning_rate == 4e-4  # "4e-4 for both NER and RE"
    assert c.optim.encoder_learning_rate == 4e-4  # paper A.1: one rate for all layers
    assert c.batch_size == 3 * paper["per_gpu"][phase == "re"]  # three RTX 3090s
    assert c.grad_accum_steps == 1
    assert c.num_epochs == (80 if phase == "ner" else 60)
    assert c.cold_start_epochs == (paper["cold_start"] if phase == "ner" else 0)
    assert (c.model.gcn_layers, c.model.gcn_heads) == paper["gcn"][phase]
    assert c.max_text_len == (100 if dataset == "ade" else 150) and c.max_span_len == 8 and c.max_candidates == 220
    # Training sees every candidate span and every subject, as the paper's training does (sampling is off).
    assert c.ner.train_negatives == 0 and c.ner.hard_negatives == 0 and c.re.negative_subject_rate == 1.0
    # The paper's loss and decoding: L_filter + L_span, and both directions must agree on a relation.
    assert c.model.span_loss_weight == 1.0 and c.re.re_decode == "both" and c.ner.overlap == "plmarker"
    assert not c.re.type_constraints  # every class between any two entities, as the paper decodes
    assert not c.re.typed_markers  # one marker pair for every entity, as in the paper
    assert c.model.marker_init == "unused"  # markers are the reserved vocabulary rows, as in the paper
    assert c.model.span_pool == "none" and c.model.width_dim == 0  # spans as the paper represents them
    assert c.optim.ema_decay == 0  # the trained parameters themselves are evaluated, as in the paper
    assert c.attention_mask == "invisible" and not c.visibility  # the paper's best partial attention (Table 4)
    assert c.model.gcn_edges == "all"  # the G4CN's dense graph over candidates and annotations
    # Every head count divides the packaged encoder's hidden size (384) and BERT-base's (768).
    assert 384 % c.model.gcn_heads == 0 and 768 % c.model.gcn_heads == 0


def test_quick_and_conll04_keep_their_one_device_batches():
    quick = importlib.import_module("configs.quick")
    conll04 = importlib.import_module("configs.conll04")
    assert (quick.get_config("ner").batch_size, quick.get_config("re").batch_size) == (8, 16)
    assert (conll04.get_config("ner").batch_size, conll04.get_config("re").batch_size) == (16, 40)
    for mod in (quick, conll04):
        assert mod.get_config("ner").encoder == "default" and mod.get_config("ner").grad_accum_steps == 1


def test_cpu_configs_choose_their_re_markers_on_dev():
    """Typed RE markers: on for all of CoNLL04 (with the `both` rule, dev RE+ +2.1 over two runs), off for the quick
    job (dev -4.4); NER unaffected."""
    quick = importlib.import_module("configs.quick")
    cpu = importlib.import_module("configs.conll04_cpu")
    assert cpu.get_config("re").re.typed_markers and not quick.get_config("re").re.typed_markers
    assert cpu.get_config("re").re.re_decode == "both" and quick.get_config("re").re.re_decode == "either"
    assert not build_lib.feature_config(cpu.get_config("ner")).typed_markers
    # RE markers start as brackets + type annotation on all of CoNLL04 only (dev evidence there).
    assert cpu.get_config("re").model.marker_init == "brackets" and cpu.get_config("ner").model.marker_init == "unused"
    assert quick.get_config("re").model.marker_init == "unused"
    # SpERT-style span features for the quick job's short schedules (dev NER +4.6 / +2.8, then RE+ +3.4 / +4.4).
    assert (quick.get_config("ner").model.span_pool, quick.get_config("ner").model.width_dim) == ("mean", 25)
    assert quick.get_config("re").model.span_pool == "mean"
    assert (cpu.get_config("ner").model.span_pool, cpu.get_config("ner").model.width_dim) == ("none", 0)
    assert cpu.get_config("re").model.span_pool == "mean"  # RE pair means: dev RE+ +4.0 / +2.5 on all of CoNLL04
    assert build_lib.feature_config(cpu.get_config("re")).typed_markers


def test_cpu_configs_isolate_ner_candidates_only():
    """The CPU configs' sampled NER isolates its candidates (dev NER 82.37 against 79.36 on all of CoNLL04, 76.82
    against 75.53 on the quick slice); their RE, which samples whole subject instances, keeps the paper's mask and
    graph."""
    for name in ("quick", "conll04_cpu"):
        mod = importlib.import_module(f"configs.{name}")
        ner, rel = mod.get_config("ner"), mod.get_config("re")
        assert (ner.attention_mask, ner.model.gcn_edges) == ("isolated", "labels")
        assert (rel.attention_mask, rel.model.gcn_edges) == ("invisible", "all")
        head = HeadConfig.from_config(ner, load_labels(DATA_ROOT / "conll04" / "labels.json"))
        assert head.partner_only and head.gcn_edges == "labels"


def test_paper_encoder_fails_offline_with_one_clear_message(monkeypatch, tmp_path):
    """Without the named model locally, building the paper config says how to pass a folder or the packaged one."""
    import huggingface_hub.constants as hub_constants
    from lai_jax import pretrained
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    c = importlib.import_module("configs.scierc").get_config("ner")
    with pytest.raises(pretrained.EncoderNotFoundError) as err:
        build_lib.build(c)
    msg = str(err.value)
    assert "allenai/scibert_scivocab_uncased" in msg and "--config.encoder=/path/to/hf_dir" in msg
    assert "--config.encoder=default" in msg and "\n" not in msg


def test_without_sampling_every_epoch_trains_on_every_candidate(tiny_bert):
    """With the paper's settings (no sampling) each epoch's training instances are the full enumeration,
    weights 1, in the batch shapes evaluation uses."""
    import numpy as np
    from lai_jax import input_pipeline
    from tests.conftest import tiny_config
    config = tiny_config("ner", tiny_bert, num_buckets=3)
    setup = build_lib.build(config)
    train = input_pipeline.load_splits(config, setup.labels)["train"]
    featurizer, inst, shapes = input_pipeline.plan_buckets(setup.featurizer, "ner", train, config.num_buckets)
    ts = input_pipeline.TrainingSet(featurizer, "ner", train, inst, shapes, config)
    assert ts.epoch(0) is ts.epoch(5) and ts.epoch(5) == inst and ts.shapes == shapes and not ts.sampling
    assert all(np.array_equal(i.arrays["cand_weight"], i.arrays["cand_mask"].astype(np.float32)) for i in inst)
    assert ts.groups == input_pipeline.assign(inst, shapes)
