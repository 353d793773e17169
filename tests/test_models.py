"""LAI-Net heads on a tiny random BERT: padding invariance, loss masking, ablation switches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lai_jax import pretrained
from lai_jax.data import features, masks
from lai_jax.data.documents import Document, Entity, Relation, Sentence
from lai_jax.data.labels import load_labels
from lai_jax.models import HeadConfig, LAINet, ner_loss, pair_means, re_loss, span_mean
from lai_jax.input_pipeline import DATA_ROOT
from lai_jax import input_pipeline


# The span count as the gate decides it (the paper's normalisation makes it L_span's denominator).
KEPT = HeadConfig("ner", 2, span_loss_norm="kept")


@pytest.fixture(scope="module")
def env(tiny_bert):
    enc, params, tok = pretrained.load(tiny_bert)
    labels = load_labels(DATA_ROOT / "conll04" / "labels.json")
    return enc.config, params, tok, labels


def doc():
    words = "John Smith , who lives in Boston , works for the Acme Corporation .".split()
    ents = [Entity(0, 1, "Peop"), Entity(6, 6, "Loc"), Entity(11, 12, "Org")]
    rels = [Relation((0, 1), (6, 6), "Live_In"), Relation((0, 1), (11, 12), "Work_For")]
    return Document("d", [Sentence(words, ents, rels)])


def model_and_batch(env, phase, slots, text_len=24, **head_kw):
    bert, enc_params, tok, labels = env
    f = features.Featurizer(tok, labels, features.FeatureConfig(
        max_text_len=text_len, max_span_len=3, max_candidates=slots, max_objects=slots,
        use_annotations=head_kw.get("use_annotations", True)))
    insts = f.ner_instances([doc()])[0] if phase == "ner" else f.re_instances([doc()])
    n_cls = 1 + len(labels.entity_types) if phase == "ner" else f.rel_space.num_classes
    head = HeadConfig(phase=phase, num_classes=n_cls, gcn_layers=head_kw.pop("gcn_layers", 2), gcn_heads=2,
                      visibility=tuple(map(tuple, masks.visibility_table("invisible").tolist())), **head_kw)
    return LAINet(bert, head), input_pipeline.stack(insts[:1]), insts[0]


def init(model, batch, enc_params):
    params = model.init_params(jax.random.PRNGKey(0), batch, enc_params)
    assert jax.tree.structure(params) == jax.tree.structure(
        jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch)["params"]))
    return params


@pytest.mark.parametrize("phase,span_kw", [("ner", {}), ("re", {}), ("ner", {"span_pool": "mean", "width_dim": 5}),
                                           ("re", {"span_pool": "mean"})])
def test_padding_slots_and_tokens_change_no_real_logit(env, phase, span_kw):
    small_model, small, inst = model_and_batch(env, phase, slots=40, **span_kw)
    big_model, big, inst_big = model_and_batch(env, phase, slots=64, **span_kw)
    assert big["input_ids"].shape[1] > small["input_ids"].shape[1]  # more padding tokens too
    assert inst.spans == inst_big.spans
    params = init(small_model, small, env[1])
    k = len(inst.spans)
    a = jax.jit(small_model.apply)({"params": params}, small)
    b = jax.jit(big_model.apply)({"params": params}, big)
    for key in a:
        np.testing.assert_allclose(a[key][0, :k], b[key][0, :k], atol=1e-5)


def test_loss_ignores_padded_slots_and_zero_weight_instances(env):
    model, batch, inst = model_and_batch(env, "ner", slots=40)
    params = init(model, batch, env[1])
    out = jax.jit(model.apply)({"params": params}, batch)
    sums, counts = ner_loss(out, batch, jnp.asarray(True), KEPT)
    k = len(inst.spans)
    poisoned = {key: v.at[:, k:].set(1e6) for key, v in out.items()}
    sums2, counts2 = ner_loss(poisoned, batch, jnp.asarray(True), KEPT)
    assert counts == counts2 and all(np.isclose(sums[x], sums2[x]) for x in sums)
    assert int(counts["filter"]) == k and int(counts["span"]) == int((batch["labels"] > 0).sum())
    padded = input_pipeline.stack([inst], 3)
    out3 = jax.jit(model.apply)({"params": params}, padded)
    sums3, counts3 = ner_loss(out3, padded, jnp.asarray(True), KEPT)
    assert counts3 == counts and all(np.isclose(sums[x], sums3[x], rtol=1e-5) for x in sums)


def test_filter_off_and_cold_start_switch(env):
    model, batch, inst = model_and_batch(env, "ner", slots=40)
    params = init(model, batch, env[1])
    out = jax.jit(model.apply)({"params": params}, batch)
    gold = ner_loss(out, batch, jnp.asarray(True), KEPT)[1]["span"]
    own = ner_loss(out, batch, jnp.asarray(False), KEPT)[1]["span"]
    predicted = int((np.argmax(out["filter_logits"][0, :len(inst.spans)], -1) == 1).sum())
    assert int(gold) == int((batch["labels"] > 0).sum()) and int(own) == predicted
    no_filter, _, _ = model_and_batch(env, "ner", slots=40, use_filter=False)
    p2 = init(no_filter, batch, env[1])
    out2 = jax.jit(no_filter.apply)({"params": p2}, batch)
    assert "filter_logits" not in out2
    assert int(ner_loss(out2, batch, jnp.asarray(True), KEPT)[1]["span"]) == len(inst.spans)


def test_span_mean_matches_a_loop_over_each_span():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(2, 12, 6)).astype(np.float32)
    start = rng.integers(0, 12, size=(2, 7))
    end = np.minimum(start + rng.integers(0, 5, size=(2, 7)), 11)
    want = np.array([[h[b, s:e + 1].mean(0) for s, e in zip(start[b], end[b])] for b in range(2)])
    np.testing.assert_allclose(span_mean(jnp.asarray(h), jnp.asarray(start), jnp.asarray(end)), want, atol=1e-5)
    bf16 = span_mean(jnp.asarray(h, jnp.bfloat16), jnp.asarray(start), jnp.asarray(end))
    assert bf16.dtype == jnp.float32  # the prefix sum runs in float32 whatever the encoder's dtype
    np.testing.assert_allclose(bf16, want, atol=2e-2)


def test_pair_means_pool_subject_object_and_the_text_between(env):
    """RE's span_pool="mean" features against a loop over the instance's tokens: the subject inside its solid
    markers, each object from its levitated markers' position ids, and the text strictly between the two
    (subject markers excluded; zero when nothing lies between)."""
    _, batch, inst = model_and_batch(env, "re", slots=8)
    T, d = batch["input_ids"].shape[1], 6
    h = np.random.default_rng(0).normal(size=(1, T, d)).astype(np.float32)
    subj, obj, between = (np.asarray(x)[0] for x in pair_means(jnp.asarray(h), batch))
    ms, me = int(batch["subj_marker_start"][0]), int(batch["subj_marker_end"][0])
    ids, tok = batch["input_ids"][0], env[2]
    assert tok.convert_ids_to_tokens([int(t) for t in ids[ms + 1:me]]) == ["john", "smith"]  # doc(): subject 0
    pos = batch["position_ids"][0]
    for k in range(len(inst.spans)):
        a, b = int(pos[batch["cand_marker_start"][0, k]]), int(pos[batch["cand_marker_end"][0, k]])
        np.testing.assert_allclose(subj[k], h[0, ms + 1:me].mean(0), atol=1e-5)
        np.testing.assert_allclose(obj[k], h[0, a:b + 1].mean(0), atol=1e-5)
        lo, hi = (me + 1, a - 1) if a > me else (b + 1, ms - 1)
        want = h[0, lo:hi + 1].mean(0) if hi >= lo else np.zeros(d)
        np.testing.assert_allclose(between[k], want, atol=1e-5)
    assert len(inst.spans) == 2  # Boston and Acme Corporation, both after the subject


def test_span_features_add_their_inputs_to_the_span_projection(env):
    """span_pool="mean" adds one hidden-size block and width_dim one embedding to span_proj's input; the logits
    then depend on the tokens inside a span, which the paper's start / end / marker features ignore."""
    d = env[0].hidden_size
    plain, batch, inst = model_and_batch(env, "ner", slots=40)
    pooled, _, _ = model_and_batch(env, "ner", slots=40, span_pool="mean", width_dim=5)
    p_plain, p_pooled = init(plain, batch, env[1]), init(pooled, batch, env[1])
    assert p_plain["heads"]["span_proj"]["kernel"].shape[0] == 4 * d
    assert p_pooled["heads"]["span_proj"]["kernel"].shape[0] == 5 * d + 5
    assert p_pooled["heads"]["width_embed"]["embedding"].shape == (32, 5)
    # Zero every span_proj input row but the pooled block: a candidate's logits then follow its mean alone.
    kernel = np.zeros_like(p_pooled["heads"]["span_proj"]["kernel"])
    kernel[2 * d:3 * d] = np.asarray(p_pooled["heads"]["span_proj"]["kernel"])[2 * d:3 * d]
    p_mean = jax.tree.map(lambda x: x, p_pooled)
    p_mean["heads"]["span_proj"]["kernel"] = jnp.asarray(kernel)
    out = jax.jit(pooled.apply)({"params": p_mean}, batch)["logits"][0]
    widths = batch["cand_text_end"][0] - batch["cand_text_start"][0]
    one = [int(i) for i in np.flatnonzero(widths[:len(inst.spans)] == 0)[:2]]
    assert len(one) == 2 and not np.allclose(out[one[0]], out[one[1]])


def test_ablations_run_and_gcn_zero_has_no_graph(env):
    model, batch, _ = model_and_batch(env, "re", slots=8, gcn_layers=0)
    params = init(model, batch, env[1])
    assert "g4cn" not in params["heads"] and "anno_proj" not in params["heads"]
    out = jax.jit(model.apply)({"params": params}, batch)
    s, c = re_loss(out, batch)
    assert np.isfinite(float(s["pair"])) and int(c["pair"]) == 2  # subject John Smith: two objects
    model2, batch2, _ = model_and_batch(env, "ner", slots=40, use_annotations=False)
    assert not (batch2["token_groups"] == masks.ANNO).any()
    assert "g4cn" not in init(model2, batch2, env[1])["heads"]


def _np_xent(logits, labels):
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, labels[..., None], -1)[..., 0]


@pytest.mark.parametrize("norm,span_weight", [("kept", 1.0), ("candidates", 1.0), ("candidates", 4.0)])
@pytest.mark.parametrize("keeps_gold", [False, True])
def test_ner_loss_options_against_numpy(norm, span_weight, keeps_gold):
    """Gate threshold, gold teacher forcing, positive weight, span normalisation and weight, hand-computed in
    numpy."""
    rng = np.random.default_rng(0)
    B, K, C = 2, 6, 4
    filt = rng.normal(size=(B, K, 2)).astype(np.float32)
    logits = rng.normal(size=(B, K, C)).astype(np.float32)
    labels = np.array([[1, 0, 0, 2, 0, 0], [0, 3, 0, 0, 0, 0]], np.int32)
    cand_mask = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], bool)
    weight = np.array([1.0, 1.0], np.float32)
    head = HeadConfig("ner", C, filter_gate_threshold=0.4, classifier_keeps_gold=keeps_gold, filter_pos_weight=5.0,
                      span_loss_norm=norm, span_loss_weight=span_weight)
    batch = {"labels": labels, "cand_mask": cand_mask, "weight": weight}
    out = {"filter_logits": jnp.asarray(filt), "logits": jnp.asarray(logits)}
    p = np.exp(filt[..., 1]) / np.exp(filt).sum(-1)
    ent = labels > 0
    w = cand_mask * np.where(ent, 5.0, 1.0)
    for cold in (True, False):
        sums, counts = ner_loss(out, batch, jnp.asarray(cold), head)
        np.testing.assert_allclose(float(sums["filter"]), (_np_xent(filt, ent.astype(np.int32)) * w).sum(), rtol=1e-5)
        np.testing.assert_allclose(float(counts["filter"]), w.sum())
        keep = cand_mask & (ent if cold else ((p >= 0.4) | (ent & keeps_gold)))
        np.testing.assert_allclose(float(sums["span"]), span_weight * (_np_xent(logits, labels) * keep).sum(),
                                   rtol=1e-5)
        assert float(counts["span"]) == (cand_mask.sum() if norm == "candidates" else keep.sum())


def test_marker_init_brackets_starts_marker_rows_as_their_sources(tiny_bert):
    """model.marker_init="brackets" changes the phase's marker rows of the word embeddings (to the mean of their
    source rows) and nothing else; "unused" (the default) keeps the pretrained table as it is."""
    import jax
    from lai_jax import build as build_lib, input_pipeline
    from lai_jax.data import features
    from tests.conftest import tiny_config
    sample = None
    tables = {}
    for init in ("unused", "brackets"):
        setup = build_lib.build(tiny_config("ner", tiny_bert, **{"model.marker_init": init}))
        if sample is None:
            doc = input_pipeline.dummy_document(setup.labels.entity_types[0])
            sample = input_pipeline.stack(input_pipeline.make_instances(setup.featurizer, "ner", [doc])[:1])
        state = build_lib.init_state(setup, sample, total_steps=1)
        tables[init] = np.asarray(state.params["encoder"]["embeddings"]["word_embeddings"]["embedding"])
        pretrained = np.asarray(setup.encoder_params["embeddings"]["word_embeddings"]["embedding"])
        others = [(a, b) for a, b in zip(jax.tree.leaves(state.params["encoder"]), jax.tree.leaves(setup.encoder_params))
                  if a.shape != pretrained.shape]
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in others)
    vocab = setup.tokenizer.get_vocab()
    start, end = vocab[features.NER_START], vocab[features.NER_END]
    np.testing.assert_array_equal(tables["unused"], pretrained)  # the default leaves every row as loaded
    np.testing.assert_array_equal(tables["brackets"][start], pretrained[vocab["["]])
    np.testing.assert_array_equal(tables["brackets"][end], pretrained[vocab["]"]])
    changed = np.flatnonzero((tables["brackets"] != pretrained).any(axis=1))
    assert sorted(changed) == sorted({start, end})


@pytest.mark.parametrize("preset,gcn_layers,gcn_edges,independent", [
    ("isolated", 0, "all", True), ("isolated", 2, "labels", True), ("invisible", 0, "all", False),
    ("isolated", 2, "all", False), ("invisible", 2, "labels", False)])
def test_isolated_mask_makes_a_candidate_independent_of_its_instance_mates(env, preset, gcn_layers, gcn_edges,
                                                                           independent):
    # Sampled training keeps every gold span and draws negatives, so where one candidate reaches another (the
    # paper's `invisible` markers, the G4CN's candidate-candidate edges) a training instance is another context
    # than evaluation's, which holds every candidate.
    bert, enc_params, tok, labels = env
    head = HeadConfig(phase="ner", num_classes=1 + len(labels.entity_types), gcn_layers=gcn_layers, gcn_heads=2,
                      gcn_edges=gcn_edges,
                      visibility=tuple(map(tuple, masks.visibility_table(preset).tolist())),
                      partner_only=preset in masks.PARTNER_ONLY)
    model, params, logits = LAINet(bert, head), None, {}
    for slots in (40, 6):  # every candidate in one instance; the same candidates split six per instance
        f = features.Featurizer(tok, labels, features.FeatureConfig(max_text_len=24, max_span_len=3,
                                                                    max_candidates=slots))
        insts = f.ner_instances([doc()])[0]
        batch = input_pipeline.stack(insts)
        params = init(model, batch, enc_params) if params is None else params
        out = jax.jit(model.apply)({"params": params}, batch)
        out = np.concatenate([np.asarray(out["logits"]), np.asarray(out["filter_logits"])], axis=-1)
        logits[slots] = {span: out[i, k] for i, inst in enumerate(insts) for k, span in enumerate(inst.spans)}
        assert len(insts) == (1 if slots == 40 else -(-len(logits[slots]) // 6))
    assert logits[40].keys() == logits[6].keys() and len(logits[6]) > 12
    gap = max(np.abs(logits[40][s] - logits[6][s]).max() for s in logits[6])
    assert (gap < 1e-5) if independent else (gap > 1e-3), gap
