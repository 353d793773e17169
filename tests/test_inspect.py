"""`python -m lai_jax.inspect`: instance view (JSON), partial attention mask, RE instances, split statistics."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lai_jax import inspect as lai_inspect, stats as lai_stats
from lai_jax.config_base import load_config_file

REPO = Path(__file__).resolve().parents[1]
CONLL04 = str(REPO / "configs" / "conll04.py")
KEYS = ("tokens", "input_ids", "position_ids", "token_groups", "candidate_spans", "marker_slots", "attention_mask")


@pytest.fixture(scope="module")
def config():
    return load_config_file(CONLL04, "ner")


@pytest.fixture(scope="module")
def ner(config):
    return lai_inspect.inspect_instance(config, "dev", 0)


@pytest.fixture(scope="module")
def re_info(config):
    return lai_inspect.inspect_instance(config, "dev", 3, phase="re")


@pytest.fixture(scope="module")
def tok(config):
    return lai_stats.make_featurizer(config)[0].tok


def word_token_bounds(tok, words, first_token=1):
    """[first, last] token index of each word, tokenising word by word (independent of the featurizer)."""
    out, t = [], first_token
    for w in words:
        n = len(tok(w, add_special_tokens=False)["input_ids"]) or 1
        out.append((t, t + n - 1))
        t += n
    return out


def check_shapes(info):
    T = info["seq_len"]
    assert T % 8 == 0
    for key in KEYS[:4]:
        assert len(info[key]) == T, key
    assert set(info["token_groups"]) <= {"text", "anno", "marker", "pad"}
    assert all(isinstance(x, int) for x in info["input_ids"] + info["position_ids"])
    K = info["num_slots"]
    assert len(info["candidate_spans"]) == len(info["marker_slots"]) == K
    k = info["filled_slots"]
    assert 0 < k <= K
    spans = info["candidate_spans"]
    assert all(s is not None for s in spans[:k]) and all(s is None for s in spans[k:])
    assert all(m is not None for m in info["marker_slots"][:k]) and all(m is None for m in info["marker_slots"][k:])
    n = len(info["words"])
    for (a, b), (ms, me) in zip(info["candidate_spans"][:k], info["marker_slots"][:k]):
        assert 0 <= a <= b < n
        assert info["token_groups"][ms] == info["token_groups"][me] == "marker"
        assert ms < me
    mask = info["attention_mask"]
    assert len(mask) == T and all(len(row) == T for row in mask)
    assert {v for row in mask for v in row} <= {0, 1}


def test_ner_json_keys_and_shapes(ner):
    assert ner["phase"] == "ner" and ner["split"] == "dev" and ner["index"] == 0
    for key in KEYS:
        assert key in ner
    check_shapes(ner)
    assert ner["num_slots"] == 220 and "subject" not in ner
    json.dumps(ner)  # plain JSON types only


def test_ner_marker_positions_equal_span_wordpiece_positions(ner, tok):
    words, toks, pos = ner["words"], ner["tokens"], ner["position_ids"]
    bounds = word_token_bounds(tok, words)  # CoNLL04 sentences have no document context: text = the sentence
    assert [tuple(b) for b in ner["word_tokens"]] == bounds
    assert toks[0] == "[CLS]" and toks[bounds[-1][1] + 1] == "[SEP]"
    k = ner["filled_slots"]
    for (a, b), (ms, me) in zip(ner["candidate_spans"][:k], ner["marker_slots"][:k]):
        assert (toks[ms], toks[me]) == ("[unused0]", "[unused1]")
        assert pos[ms] == pos[bounds[a][0]] and pos[me] == pos[bounds[b][1]]
    # every span of <= max_span_len words is a candidate, in (start, end) order
    n, L = len(words), 8
    expected = [[i, j] for i in range(n) for j in range(i, min(n, i + L))][:ner["num_slots"]]
    assert ner["candidate_spans"][:ner["filled_slots"]] == expected


def test_attention_mask_pad_rows_and_preset(ner, config):
    mask = np.array(ner["attention_mask"], dtype=bool)
    groups = np.array(ner["token_groups"])
    pads = np.flatnonzero(groups == "pad")
    assert len(pads)
    for p in pads:
        assert mask[p].sum() == 1 and mask[p, p]
        assert mask[:, p].sum() == 1
    # invisible preset (SPEC §4): text and annotations do not see each other; markers see both
    text, anno, marker = (groups == g for g in ("text", "anno", "marker"))
    assert not mask[np.ix_(text, anno)].any() and not mask[np.ix_(anno, text)].any()
    assert mask[np.ix_(marker, text)].all() and mask[np.ix_(marker, anno)].all() and mask[np.ix_(text, marker)].all()
    # the config's preset is what the mask follows
    full = config.copy_and_resolve_references()
    full.attention_mask = "full"
    full.data.eval_limit = 5
    m2 = np.array(lai_inspect.inspect_instance(full, "dev", 0)["attention_mask"], dtype=bool)
    real = groups != "pad"
    assert m2[np.ix_(real, real)].all()


def test_re_instance_subject_and_objects(re_info, tok, config):
    check_shapes(re_info)
    assert re_info["phase"] == "re" and re_info["num_slots"] == config.max_objects
    subj = re_info["subject"]
    toks, pos, words = re_info["tokens"], re_info["position_ids"], re_info["words"]
    sm, em = re_info["subject_markers"]
    assert (toks[sm], toks[em]) == ("[unused2]", "[unused3]")
    assert re_info["token_groups"][sm] == re_info["token_groups"][em] == "text"
    bounds = re_info["word_tokens"]
    assert bounds[subj[0]][0] == sm + 1 and bounds[subj[1]][1] == em - 1
    objects = [s for s in re_info["candidate_spans"] if s is not None]
    assert objects and subj not in objects
    # object markers copy the position ids of the object's first / last wordpiece
    for (a, b), (ms, me) in zip(objects, re_info["marker_slots"][:len(objects)]):
        assert (toks[ms], toks[me]) == ("[unused4]", "[unused5]")
        assert pos[ms] == pos[bounds[a][0]] and pos[me] == pos[bounds[b][1]]
    # the wordpieces between the solid markers spell the subject
    pieces = "".join(t[2:] if t.startswith("##") else t for t in toks[sm + 1:em])
    assert pieces == "".join(words[subj[0]:subj[1] + 1]).lower().replace(" ", "")
    # the same instance through a config loaded with the :re phase
    cfg_re = load_config_file(CONLL04, "re")
    assert lai_inspect.inspect_instance(cfg_re, "dev", 3)["subject"] == subj


def test_format_instance_and_errors(ner, re_info, config):
    text = lai_inspect.format_instance(ner)
    assert f"doc_key: {ner['doc_key']}" in text and "start of slot 0 [0, 0]" in text
    assert f"filled slots: {ner['filled_slots']}/220" in text
    assert "subject start" in lai_inspect.format_instance(re_info)
    small = config.copy_and_resolve_references()
    small.data.eval_limit = 3
    with pytest.raises(IndexError, match=r"has \d+ NER instances"):
        lai_inspect.inspect_instance(small, "dev", 10_000)
    with pytest.raises(ValueError, match="unknown split"):
        lai_inspect.inspect_instance(small, "validation", 0)
    ade = load_config_file(str(REPO / "configs" / "ade.py"))
    with pytest.raises(ValueError, match="hold-out"):
        lai_stats.canonical_split(ade, "validation")


def test_split_stats_sane(config):
    small = config.copy_and_resolve_references()
    small.data.train_limit = 150
    stats = lai_stats.split_stats(small)
    assert list(stats) == ["train", "dev", "test"]
    for split, s in stats.items():
        assert s["sentences"] > 0 and s["instances"] >= s["sentences"], split
        buckets = s["buckets"]
        assert buckets[-1]["shape"][0] == small.max_candidates and len(buckets) == small.num_buckets
        assert sum(b["instances"] for b in buckets) == s["instances"] and sum(b["slots"] for b in buckets) == s["slots"]
        assert all(b["slots"] == b["shape"][0] * b["instances"] and b["filled"] <= b["slots"] for b in buckets)
        assert sum(b["filled"] for b in buckets) == s["filled"]
        assert 0 < s["filled"] <= s["slots"] and 0 < s["filled_pct"] <= 100
        assert 0 < s["reachable"] <= s["gold"] and 0 < s["reachable_pct"] <= 100
        assert 0 <= s["windowed"] <= s["sentences"] and 0 <= s["windowed_pct"] <= 100
        assert s["gold"] - s["reachable"] == s["too_long"] and s["long_words"] == 0
        assert s["relations"] > 0 and s["relations_unreachable"] == s["relations_unrepresented"] == 0
    assert stats["train"]["sentences"] == 150
    assert all(s["overlapping_pairs"] == s["overlapping_same_type"] == 0 for s in stats.values())  # CoNLL04 is flat
    table = lai_stats.format_stats(small, stats)
    assert all(split in table for split in stats) and "reachable" in table and "overlapping gold" in table
    json.dumps(stats)


def test_overlap_stats_counts_nested_and_crossing_pairs():
    from lai_jax.data.documents import Document, Entity, Sentence
    ents = [Entity(0, 3, "A"), Entity(1, 1, "B"), Entity(2, 4, "A"), Entity(6, 6, "A"), Entity(6, 6, "B"),
            Entity(0, 3, "A")]  # (0,3) A listed twice counts once
    # pairs: (0,3)A-(1,1)B nested, (0,3)A-(2,4)A crossing same type, (6,6)A-(6,6)B same span; (1,1)-(2,4) apart
    docs = [Document("d", [Sentence([f"w{i}" for i in range(8)], ents), Sentence(["x"], [Entity(0, 0, "A")])])]
    assert lai_stats.overlap_stats(docs) == {"overlapping_pairs": 3, "overlapping_same_type": 1}
    # the bundled SciERC test split has 20 overlapping gold pairs (3 of the same type)
    from lai_jax.data.labels import load_labels
    from lai_jax.data.readers import read_documents
    data = REPO / "data" / "scierc"
    scierc = read_documents(data / "test.json", load_labels(data / "labels.json"))
    assert lai_stats.overlap_stats(scierc) == {"overlapping_pairs": 20, "overlapping_same_type": 3}


def test_cli_json_end_to_end():
    cmd = [sys.executable, "-m", "lai_jax.inspect", f"--config={CONLL04}", "--split=dev", "--index=1", "--json",
           "--config.max_candidates=64"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads(res.stdout)  # exactly one JSON object on stdout
    for key in KEYS:
        assert key in info
    assert info["num_slots"] == 64 and info["index"] == 1  # --config.x=y overrides reach the featurizer
    check_shapes(info)


def test_paper_encoder_offline_falls_back_to_the_packaged_tokenizer(monkeypatch, tmp_path, caplog):
    """configs/scierc.py names SciBERT; offline, inspect still works, with the packaged tokenizer and a warning."""
    import huggingface_hub.constants as hub_constants
    from lai_jax.pretrained import load_tokenizer
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    scierc = load_config_file(str(REPO / "configs" / "scierc.py"))
    assert scierc.encoder == "allenai/scibert_scivocab_uncased"
    monkeypatch.setattr(__import__("logging").getLogger("lai_jax"), "propagate", True)  # cli.setup_logging stops it
    lai_stats._tokenizer.cache_clear()
    with caplog.at_level("WARNING", logger="lai_jax"):
        featurizer, _ = lai_stats.make_featurizer(scierc)
    lai_stats._tokenizer.cache_clear()
    assert "packaged MiniLM-L6 tokenizer" in caplog.text and "allenai/scibert_scivocab_uncased" in caplog.text
    assert featurizer.tok.get_vocab() == load_tokenizer("default").get_vocab()


@pytest.mark.parametrize("dataset", ["scierc", "ade", "conll04"])
def test_bundled_datasets_fill_85_percent_of_candidate_slots(dataset):
    """With the default 3 batch shapes at least 85% of the NER candidate slots are real (one 220-slot shape: 56-63%)."""
    config = load_config_file(str(REPO / "configs" / f"{dataset}.py"))
    config.encoder = "default"  # the packaged tokenizer (offline); the paper's own vocabularies split alike
    train = lai_stats.split_stats(config, ["train"])["train"]
    assert train["filled_pct"] >= 85.0, train["buckets"]
    assert [b["shape"][0] for b in train["buckets"]][-1] == 220 and len(train["buckets"]) <= 3
