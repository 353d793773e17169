"""Instance construction (SPEC §3, §8) and partial attention masks (SPEC §4)."""
import numpy as np
import pytest

from lai_jax.data import features, masks, slots
from lai_jax.data.documents import Document, Entity, Relation, Sentence
from lai_jax.data.labels import load_labels, pair_labels
from lai_jax.stats import relation_stats
from lai_jax.data.readers import read_documents
from lai_jax.pretrained import default_encoder_path, load_tokenizer
from lai_jax.input_pipeline import DATA_ROOT
from lai_jax import input_pipeline


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(default_encoder_path())


@pytest.fixture(scope="module")
def labels():
    return load_labels(DATA_ROOT / "conll04" / "labels.json")


def make_featurizer(tok, labels, **kw):
    return features.Featurizer(tok, labels, features.FeatureConfig(**{"max_text_len": 100, **kw}))


def long_doc(m=30):
    words = [f"w{i}" if i % 3 else "unbelievably" for i in range(m)]  # some multi-piece words
    ents = [Entity(0, 1, "Peop"), Entity(5, 5, "Loc"), Entity(10, 17, "Org"), Entity(20, 29, "Other")]
    rels = [Relation((0, 1), (5, 5), "Live_In"), Relation((10, 17), (5, 5), "OrgBased_In")]
    return Document("d", [Sentence(["Before", "."]), Sentence(words, ents, rels), Sentence(["After", "it", "."])])


def test_candidate_count_formula_no_duplicates_none_lost(tok, labels):
    m, L = 30, 8
    f = make_featurizer(tok, labels, max_candidates=50)
    insts, _ = f.ner_instances([long_doc(m)])
    mine = [i for i in insts if i.sent == 1]
    spans = [sp for inst in mine for sp in inst.spans]
    assert len(spans) == m * L + (L - L * L) // 2 == slots.num_candidates(m, L)
    assert len(set(spans)) == len(spans)
    assert set(spans) == {(i, j) for i in range(m) for j in range(i, min(m, i + L))}
    assert len(mine) == -(-len(spans) // 50)
    # neighbouring spans share an instance: each instance holds a contiguous run of the sorted order
    assert spans == sorted(spans)


def test_marker_positions_match_span_wordpieces_and_text_positions_unchanged(tok, labels):
    f = make_featurizer(tok, labels, max_candidates=64)
    insts, _ = f.ner_instances([long_doc()])
    plain = f.sentence_pieces(f.word_pieces(long_doc()), 1, 100)
    for inst in insts:
        a = inst.arrays
        text = a["token_groups"] == masks.TEXT
        # text keeps 0,1,2,... whatever the markers do
        assert np.array_equal(a["position_ids"][text], np.arange(text.sum()))
        assert np.array_equal(a["input_ids"][1:1 + len(plain.ids)], plain.ids) or inst.sent != 1
        for slot, (i, j) in enumerate(inst.spans):
            ms, me = a["cand_marker_start"][slot], a["cand_marker_end"][slot]
            assert a["token_groups"][ms] == a["token_groups"][me] == masks.MARKER
            assert a["position_ids"][ms] == a["position_ids"][a["cand_text_start"][slot]]
            assert a["position_ids"][me] == a["position_ids"][a["cand_text_end"][slot]]
            if inst.sent == 1:
                assert a["cand_text_start"][slot] == 1 + plain.word_first[i]
                assert a["cand_text_end"][slot] == 1 + plain.word_last[j]
            assert a["marker_partner"][ms] == me and a["marker_partner"][me] == ms
        assert a["input_ids"][a["cand_marker_start"][:len(inst.spans)]].tolist() == \
            [tok.convert_tokens_to_ids("[unused0]")] * len(inst.spans)


def test_annotations_continue_positions_after_sep(tok, labels):
    f = make_featurizer(tok, labels)
    a = f.ner_instances([long_doc()])[0][0].arrays
    anno = np.flatnonzero(a["token_groups"] == masks.ANNO)
    n_text = int((a["token_groups"] == masks.TEXT).sum())
    assert np.array_equal(a["position_ids"][anno], np.arange(n_text, n_text + len(anno)))
    assert a["input_ids"][anno[-1]] == tok.sep_token_id
    for k, ann in enumerate(labels.entity_annotations):
        pieces = tok(ann, add_special_tokens=False)["input_ids"]
        assert a["input_ids"][a["anno_start"][k]] == pieces[0]
        assert a["input_ids"][a["anno_end"][k]] == pieces[-1]


def test_static_shapes_for_all_instances_of_a_split(tok, labels):
    docs = read_documents(DATA_ROOT / "conll04" / "conll04_dev.json", labels)[:60]
    f = make_featurizer(tok, labels)
    for phase, insts in (("ner", f.ner_instances(docs)[0]), ("re", f.re_instances(docs))):
        shapes = {k: np.shape(v) for k, v in insts[0].arrays.items()}
        assert all({k: np.shape(v) for k, v in i.arrays.items()} == shapes for i in insts)
        assert shapes["input_ids"] == (f.seq_len(phase),) and f.seq_len(phase) % 8 == 0


def test_round_trip_keeps_every_gold_entity_up_to_span_cap(tok, labels):
    docs = read_documents(DATA_ROOT / "conll04" / "conll04_dev.json", labels)
    f = make_featurizer(tok, labels)
    insts, stats = f.ner_instances(docs)
    found = {(i.doc, i.sent, sp, int(i.arrays["labels"][k])) for i in insts for k, sp in enumerate(i.spans)
             if i.arrays["labels"][k] > 0}
    want = {(d, s, e.span, f.entity_index[e.type]) for d, doc in enumerate(docs) for s, sent in enumerate(doc.sentences)
            for e in sent.entities if e.end - e.start < 8}
    assert found == want
    assert stats["reachable"] == len(want) and stats["gold"] >= len(want)


def test_use_annotations_false_drops_segment(tok, labels):
    f = make_featurizer(tok, labels, use_annotations=False)
    a = f.ner_instances([long_doc()])[0][0].arrays
    assert not (a["token_groups"] == masks.ANNO).any()
    assert f.seq_len("ner") < make_featurizer(tok, labels).seq_len("ner")


def test_context_fills_budget_and_sentence_truncation(tok, labels):
    f = make_featurizer(tok, labels, max_text_len=12)
    sp = f.sentence_pieces(f.word_pieces(long_doc()), 1, 12)
    assert sp.truncated and len(sp.ids) <= 12 and -1 in sp.word_first
    roomy = f.sentence_pieces(f.word_pieces(long_doc()), 0, 6)
    assert len(roomy.ids) == 6 and roomy.word_first[0] == 0  # no left context, right context fills


def test_re_instance_solid_and_levitated_markers(tok, labels):
    f = make_featurizer(tok, labels, max_objects=2)
    insts = f.re_instances([long_doc()])
    subj = [i for i in insts if i.subject == (0, 1)]
    assert [o for i in subj for o in i.spans] == [(5, 5), (10, 17), (20, 29)]  # 3 objects, 2 slots -> 2 instances
    a = subj[0].arrays
    ids = a["input_ids"].tolist()
    s0, s1 = ids.index(tok.convert_tokens_to_ids("[unused2]")), ids.index(tok.convert_tokens_to_ids("[unused3]"))
    assert (a["subj_marker_start"], a["subj_marker_end"]) == (s0, s1)
    assert a["token_groups"][s0] == masks.TEXT  # solid markers are text tokens
    # levitated object markers copy the shifted position ids of the object's wordpieces
    for slot in range(2):
        ms, me = a["cand_marker_start"][slot], a["cand_marker_end"][slot]
        assert ids[ms] == tok.convert_tokens_to_ids("[unused4]") and a["token_groups"][ms] == masks.MARKER
    space = f.rel_space
    assert a["labels"][0] == space.forward_id("Live_In")
    org = [i for i in insts if i.subject == (10, 17)][0]
    assert org.arrays["labels"][org.spans.index((5, 5))] == space.forward_id("OrgBased_In")
    loc = [i for i in insts if i.subject == (5, 5)][0]
    assert loc.arrays["labels"][loc.spans.index((0, 1))] == space.inverse_id("Live_In")


def test_typed_re_markers_name_each_entity_type(tok, labels):
    """re.typed_markers: the subject's solid markers and each object's levitated markers are its type's tokens
    (gold types in training, the given entities' types end to end); everything else matches the untyped instance."""
    plain = make_featurizer(tok, labels, max_objects=4)
    typed = make_featurizer(tok, labels, max_objects=4, typed_markers=True)
    names = dict(zip(labels.entity_types, features.typed_marker_tokens(len(labels.entity_types))))
    ids_of = lambda four: [tok.convert_tokens_to_ids(t) for t in four]  # noqa: E731
    assert len({i for four in names.values() for i in ids_of(four)} | {tok.convert_tokens_to_ids(f"[unused{i}]")
                                                                        for i in range(6)}) == 6 + 4 * len(names)
    gold_types = {e.span: e.type for e in long_doc().sentences[1].entities}
    for p_inst, t_inst in zip(plain.re_instances([long_doc()]), typed.re_instances([long_doc()])):
        a, b = p_inst.arrays, t_inst.arrays
        subj_start, subj_end = ids_of(names[gold_types[t_inst.subject]])[:2]
        assert (b["input_ids"][b["subj_marker_start"]], b["input_ids"][b["subj_marker_end"]]) == (subj_start, subj_end)
        for slot, o in enumerate(t_inst.spans):
            assert [b["input_ids"][b["cand_marker_start"][slot]], b["input_ids"][b["cand_marker_end"][slot]]] == \
                ids_of(names[gold_types[o]])[2:]
        differs = a["input_ids"] != b["input_ids"]
        assert differs.sum() == 2 + 2 * len(t_inst.spans)  # the markers, and nothing else
        for k in a:
            if k != "input_ids":
                assert np.array_equal(a[k], b[k]), k
    # End to end the markers follow the predicted types, right or wrong.
    retyped = [[[], [Entity(0, 1, "Org"), Entity(5, 5, "Peop")], []]]  # one document, its three sentences
    inst = [i for i in typed.re_instances([long_doc()], retyped) if i.subject == (0, 1)][0]
    a = inst.arrays
    assert a["input_ids"][a["subj_marker_start"]] == ids_of(names["Org"])[0]
    assert a["input_ids"][a["cand_marker_start"][0]] == ids_of(names["Peop"])[2]


def test_typed_markers_need_the_reserved_tokens(labels):
    class Tok:
        cls_token_id, sep_token_id, pad_token_id, unk_token_id = 1, 2, 0, 3

        def get_vocab(self):
            return {f"[unused{i}]": 10 + i for i in range(8)}

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [5]}
    features.Featurizer(Tok(), labels, features.FeatureConfig())  # untyped: [unused0..5] suffice
    with pytest.raises(ValueError, match=r"re.typed_markers: .*lacks the reserved tokens \['\[unused8\]'"):
        features.Featurizer(Tok(), labels, features.FeatureConfig(typed_markers=True))


def _expected(preset, gq, gk, q, k, partner):
    if gq == masks.PAD or gk == masks.PAD:
        return q == k
    if preset in ("plmarker", "isolated") and gq == gk == masks.MARKER:
        return q == k or partner[q] == k
    table = {"invisible": {(1, 1): 1, (1, 2): 0, (1, 3): 1, (2, 1): 0, (2, 2): 1, (2, 3): 1, (3, 1): 1, (3, 2): 1, (3, 3): 1},
             "visible": {(1, 1): 1, (1, 2): 1, (1, 3): 1, (2, 1): 1, (2, 2): 1, (2, 3): 0, (3, 1): 1, (3, 2): 0, (3, 3): 1},
             "full": {(a, b): 1 for a in (1, 2, 3) for b in (1, 2, 3)},
             "plmarker": {(1, 1): 1, (1, 2): 0, (1, 3): 0, (2, 1): 0, (2, 2): 1, (2, 3): 0, (3, 1): 1, (3, 2): 0},
             "isolated": {(1, 1): 1, (1, 2): 0, (1, 3): 0, (2, 1): 1, (2, 2): 1, (2, 3): 0, (3, 1): 1, (3, 2): 1}}
    return bool(table[preset][(gq, gk)])


@pytest.mark.parametrize("preset", ["invisible", "visible", "full", "plmarker", "isolated"])
def test_mask_presets_cell_by_cell(tok, labels, preset):
    f = make_featurizer(tok, labels, max_candidates=6)
    a = f.ner_instances([long_doc(6)])[0][0].arrays
    g, partner = a["token_groups"].astype(int), a["marker_partner"]
    m = masks.attention_mask(g, partner, masks.visibility_table(preset), preset in masks.PARTNER_ONLY)
    T = len(g)
    assert m.shape == (T, T)
    want = np.array([[_expected(preset, g[q], g[k], q, k, partner) for k in range(T)] for q in range(T)])
    assert np.array_equal(m, want)
    pad = g == masks.PAD
    assert pad.any() and not m[pad][:, ~pad].any() and not m[~pad][:, pad].any()


def test_explicit_visibility_table_and_errors():
    t = masks.visibility_table("invisible", [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert t[1, 3] == 0 and t[3, 3] == 1
    with pytest.raises(ValueError, match="attention_mask"):
        masks.visibility_table("nope")
    with pytest.raises(ValueError, match="visibility"):
        masks.visibility_table("invisible", [[1, 0], [0, 1]])


def test_stack_pads_with_zero_weight(tok, labels):
    f = make_featurizer(tok, labels)
    insts, _ = f.ner_instances([long_doc()])
    b = input_pipeline.stack(insts[:1], 3)
    assert b["weight"].tolist() == [1.0, 0.0, 0.0]
    assert not b["cand_mask"][1:].any() and (b["token_groups"][1:] == masks.PAD).all()


def test_cut_words_leave_no_gap(tok, labels):
    f = make_featurizer(tok, labels)
    sp = f.sentence_pieces([[[1], [2], [3, 4, 5], [6], [7]]], 0, 3)
    assert sp.ids == [1, 2] and sp.word_first == [0, 1, -1, -1, -1] and sp.truncated


def test_unknown_gold_entity_type_is_an_error_not_none(tok, labels):
    f = make_featurizer(tok, labels)
    doc = Document("odd", [Sentence(["Ann", "met", "Bob"], [Entity(0, 0, "Peop"), Entity(2, 2, "Person")])])
    with pytest.raises(ValueError, match=r"document 'odd', sentence 0: gold entity type 'Person' is not in the label "
                                         r"file .*conll04/labels.json"):
        f.ner_instances([doc])
    f.ner_instances([doc], with_labels=False)  # prediction / statistics read no gold types


# ------------------------------------------------------------------------------------------- long sentences
def _long_sentence(n=400, seed=0):
    """n words (some of several wordpieces), entities of 1..8 words everywhere, near and far relations."""
    rng = np.random.default_rng(seed)
    vocab = ["the", "company", "unbelievably", "Internationalization", "Chicago", ",", "said", "w7", "of"]
    words = [vocab[i] for i in rng.integers(0, len(vocab), n)]
    ents, start = [], 0
    while start < n:
        length = int(rng.integers(1, 9))
        if start + length <= n:
            ents.append(Entity(start, start + length - 1, "Peop" if len(ents) % 2 else "Loc"))
        start += length + int(rng.integers(0, 4))
    ents.append(Entity(3, 12, "Org"))  # longer than max_span_len: never a candidate
    rels = [Relation(a.span, b.span, "Live_In") for a, b in zip(ents[:-1], ents[2:-1]) if b.start - a.end < 25]
    rels.append(Relation(ents[0].span, ents[-2].span, "Kill"))  # farther apart than any window holds
    return Document("long", [Sentence(["Before", "."]), Sentence(words, ents, rels), Sentence(["After", "."])])


def test_long_sentence_windows_every_span_once_and_every_near_relation(tok, labels):
    f = make_featurizer(tok, labels)  # max_text_len 100, max_span_len 8
    doc = _long_sentence()
    sent = doc.sentences[1]
    n, L = len(sent.words), 8
    pieces = f.word_pieces(doc)
    assert sum(len(w) for w in pieces[1]) > 3 * 100
    insts, stats = f.ner_instances([doc])
    mine = [i for i in insts if i.sent == 1]
    assert len({i.window for i in mine}) > 3 and stats["windowed"] == 1
    spans = [sp for i in mine for sp in i.spans]
    assert sorted(spans) == enumerate_all(n, L)  # every span of <= L words, exactly once
    for inst in mine:  # markers sit on the span's own wordpieces
        a = inst.arrays
        for slot, (i, j) in enumerate(inst.spans):
            assert a["input_ids"][a["cand_text_start"][slot]] == pieces[1][i][0]
            assert a["input_ids"][a["cand_text_end"][slot]] == pieces[1][j][-1]
            assert a["labels"][slot] == next((f.entity_index[e.type] for e in sent.entities if e.span == (i, j)), 0)
    assert stats["gold"] - stats["reachable"] == stats["too_long"] == 1 and stats["spans_unreachable"] == 0

    r_insts = [i for i in f.re_instances([doc]) if i.sent == 1]
    slots = [(i.subject, o, int(i.arrays["labels"][k])) for i in r_insts for k, o in enumerate(i.spans)]
    pairs = [(s, o) for s, o, _ in slots]
    assert len(pairs) == len(set(pairs))  # every ordered pair at most once
    got = {(s, o): c for s, o, c in slots}
    space = f.rel_space
    near = [r for r in sent.relations if r.type == "Live_In"]
    assert len(near) > 50
    for r in near:
        assert got[(r.head, r.tail)] == space.forward_id("Live_In")
        assert got[(r.tail, r.head)] == space.inverse_id("Live_In")
    far = sent.relations[-1]
    assert (far.head, far.tail) not in got and (far.tail, far.head) not in got
    for inst in r_insts:  # subject and objects inside the instance's window, markers on their wordpieces
        lo, hi = inst.window
        assert all(lo <= a and b < hi for a, b in [inst.subject] + inst.spans)
        a = inst.arrays
        assert a["input_ids"][a["subj_marker_start"] + 1] == pieces[1][inst.subject[0]][0]
    st = relation_stats(f, [doc])
    assert st == dict(relations=len(sent.relations), unreachable=1, unrepresented=0, multi_pairs=0, windowed=1)
    for subj in {i.subject for i in r_insts}:  # its own window, and one reaching either way for far objects
        assert len({i.window for i in r_insts if i.subject == subj}) <= 3


def enumerate_all(n, L):
    return sorted((i, j) for i in range(n) for j in range(i, min(n, i + L)))


def test_re_reach_is_the_text_budget(tok, labels):
    f = make_featurizer(tok, labels, max_text_len=24, max_span_len=2)
    words = [f"w{i}" for i in range(60)]  # two pieces each: 12 words fit the budget
    assert all(len(w) == 2 for w in f.word_pieces(Document("d", [Sentence(words)]))[0])
    # 0 and 11 fit one window only at the very edge of both entities' own windows: a window around the pair
    ents = [Entity(0, 0, "Peop"), Entity(11, 11, "Loc"), Entity(30, 30, "Peop"), Entity(40, 41, "Loc"),
            Entity(45, 45, "Loc")]
    rels = [Relation((0, 0), (11, 11), "Live_In"), Relation((30, 30), (40, 41), "Live_In"),
            Relation((0, 0), (45, 45), "Live_In")]
    doc = Document("d", [Sentence(words, ents, rels)])
    insts = f.re_instances([doc])
    slots = {(i.subject, o): int(i.arrays["labels"][k]) for i in insts for k, o in enumerate(i.spans)}
    assert len(slots) == sum(len(i.spans) for i in insts)  # each ordered pair once
    within = {(a.span, b.span) for a in ents for b in ents if a != b and max(a.end, b.end) - min(a.start, b.start) < 12}
    assert set(slots) == within
    fwd, inv = f.rel_space.forward_id("Live_In"), f.rel_space.inverse_id("Live_In")
    assert slots[((0, 0), (11, 11))] == slots[((30, 30), (40, 41))] == fwd and slots[((11, 11), (0, 0))] == inv
    for inst in insts:
        lo, hi = inst.window
        assert hi - lo <= 12 and all(lo <= a and b < hi for a, b in [inst.subject] + inst.spans)
    assert {i.subject for i in insts} == {e.span for e in ents}
    assert relation_stats(f, [doc]) == dict(relations=3, unreachable=1, unrepresented=0, multi_pairs=0, windowed=1)


def test_word_longer_than_budget_keeps_its_span(tok, labels):
    f = make_featurizer(tok, labels, max_text_len=16)
    doc = Document("d", [Sentence(["short", "x7q" * 30, "words", "here"], [Entity(1, 1, "Other")])])
    pieces = f.word_pieces(doc)
    assert len(pieces[0][1]) > 16
    insts, stats = f.ner_instances([doc])
    spans = [sp for i in insts for sp in i.spans]
    assert (1, 1) in spans and len(spans) == len(set(spans))
    inst = next(i for i in insts if (1, 1) in i.spans)
    a, slot = inst.arrays, inst.spans.index((1, 1))
    assert a["labels"][slot] == f.entity_index["Other"]
    assert a["input_ids"][a["cand_text_end"][slot]] == pieces[0][1][15]  # its first 16 pieces
    assert stats["long_words"] == 1 and stats["reachable"] == 1
    assert f.re_instances([doc])  # the subject fits too


def test_pair_labels_keep_two_relations_per_pair(labels):
    space = features.RelationLabelSpace.from_types(["A", "B", "S"], ["S"])
    x, y = (0, 0), (3, 4)
    one, lost = pair_labels(space, [Relation(x, y, "A")])
    assert one == {(x, y): space.forward_id("A"), (y, x): space.inverse_id("A")} and not lost
    # opposite directions: each slot reads its own relation forward (as RelationLabelSpace.gold_label)
    both, lost = pair_labels(space, [Relation(x, y, "A"), Relation(y, x, "B")])
    assert both == {(x, y): space.forward_id("A"), (y, x): space.forward_id("B")} and not lost
    # two types in one direction: the second is carried by the reverse slot as an inverse class
    two, lost = pair_labels(space, [Relation(x, y, "A"), Relation(x, y, "B")])
    assert two == {(x, y): space.forward_id("A"), (y, x): space.inverse_id("B")} and not lost
    # a symmetric relation listed both ways is one relation; a third relation has no slot left
    three, lost = pair_labels(space, [Relation(x, y, "S"), Relation(y, x, "S"), Relation(y, x, "A"),
                                               Relation(x, y, "B")])
    assert three == {(x, y): space.forward_id("S"), (y, x): space.forward_id("A")}
    assert lost == [Relation(x, y, "B")]
    assert pair_labels(space, [])[0] == {}


def test_marker_sources_name_brackets_and_the_type_annotation(tok, labels):
    """model.marker_init="brackets": NER markers start as "[" / "]"; RE subjects as "<" / ">", objects as "[" / "]",
    and a typed RE marker adds its type's annotation wordpieces (CoNLL04: Peop -> "people")."""
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    ner = make_featurizer(tok, labels).marker_sources("ner")
    vocab = tok.get_vocab()
    assert ner == {vocab[features.NER_START]: ids("["), vocab[features.NER_END]: ids("]")}
    untyped = make_featurizer(tok, labels).marker_sources("re")
    assert untyped == {vocab[features.SUBJ_START]: ids("<"), vocab[features.SUBJ_END]: ids(">"),
                       vocab[features.OBJ_START]: ids("["), vocab[features.OBJ_END]: ids("]")}
    typed = make_featurizer(tok, labels, typed_markers=True)
    sources = typed.marker_sources("re")
    subj_start, subj_end, obj_start, obj_end = typed.re_markers["Peop"]
    assert sources[subj_start] == ids("<") + ids("people") and sources[obj_end] == ids("]") + ids("people")
    assert len(sources) == 4 + 4 * len(labels.entity_types)  # every marker an RE instance can carry, once
