"""Prediction on raw text / PURE / SpERT input: tokenisation, windows, offsets, CLI and its errors."""
from __future__ import annotations

import io
import json
import random
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import jax
import numpy as np
import pytest

from tests.conftest import REPO, tiny_config
from lai_jax import predict, predict_input
from lai_jax.data.documents import DataError, Document
from lai_jax.data import windows
from lai_jax.data.slots import enumerate_spans
from lai_jax.text import split_sentences, tokenize
from lai_jax import build as build_lib
from lai_jax import evaluation
from lai_jax import input_pipeline

VOCAB = ["Paris", "Mary", "the", "company", "of", "Internationalization", "in", "Chicago", "said", ",",
         "Zürich", "Renée", "acquisitions", "Smith", "and", "IBM"]


def _squash(s: str) -> str:
    return re.sub(r"\s+", "", s)


def _long_line(n_words: int = 300, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(VOCAB) for _ in range(n_words))


# ------------------------------------------------------------------------------------------- text.py
def test_tokenize_offsets_and_punctuation():
    text = 'Dr. Smith (CEO) said: "Don\'t sell state-of-the-art U.S. chips for $3.14 or 1,000!" ok?!'
    words = tokenize(text)
    assert [w.text for w in words] == [
        "Dr.", "Smith", "(", "CEO", ")", "said", ":", '"', "Do", "n't", "sell", "state-of-the-art", "U.S.",
        "chips", "for", "$", "3.14", "or", "1,000", "!", '"', "ok", "?", "!"]
    for w in words:
        assert text[w.start:w.end] == w.text
    assert [w.text for w in tokenize("-leading trailing- it's' 'quoted'")] == [
        "-", "leading", "trailing", "-", "it", "'s", "'", "'", "quoted", "'"]


def test_tokenize_like_the_training_data():
    """Penn Treebank conventions, as the bundled data are tokenised: clitics apart, abbreviations keep their '.'."""
    text = "Kennedy's aides can't say -- J. Smith of Acme Corp. said, etc... y'all rock'n'roll I'm"
    assert [w.text for w in tokenize(text)] == [
        "Kennedy", "'s", "aides", "ca", "n't", "say", "--", "J.", "Smith", "of", "Acme", "Corp.", "said", ",", "etc",
        ".", ".", ".", "y'all", "rock'n'roll", "I", "'m"]
    assert all(text[w.start:w.end] == w.text for w in tokenize(text))


def test_tokenize_non_ascii():
    text = "Renée Müller (naïve, cafe\u0301) visited 北京大学 👍🏽 👨\u200d👩\u200d👧 🇫🇷 — «Zürich» \u00a0x\u200by"
    words = tokenize(text)
    assert [w.text for w in words] == [
        "Renée", "Müller", "(", "naïve", ",", "cafe\u0301", ")", "visited", "北", "京", "大", "学", "👍🏽",
        "👨\u200d👩\u200d👧", "🇫🇷", "—", "«", "Zürich", "»", "x", "y"]
    for w in words:
        assert text[w.start:w.end] == w.text


def test_tokenize_random_unicode_never_crashes_and_covers_text():
    rng = random.Random(0)
    pool = [chr(c) for c in [*range(0x20, 0x7F), *range(0xA0, 0x250), 0x301, 0x308, 0x200B, 0x200C, 0x200D, 0x2060,
                             0xFE0F, 0x20E3, 0xAD, 0x2028, 0x0B, *range(0x4E00, 0x4E40), *range(0x1F600, 0x1F620),
                             0x1F3FD, 0x1F1EB, 0x1F1F7, *range(0x0900, 0x0940), *range(0x0600, 0x0640)]]
    for _ in range(300):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 60)))
        words = tokenize(text)
        covered = set()
        for a, b in zip(words, words[1:]):
            assert a.end <= b.start
        for w in words:
            assert w.text and text[w.start:w.end] == w.text
            covered.update(range(w.start, w.end))
        for i, ch in enumerate(text):  # letters, digits, marks, punctuation and symbols are never dropped
            if unicodedata.category(ch)[0] in "LMNPS":
                assert i in covered, (text, i, ch)
        sents = split_sentences(text, words)
        assert [w for s in sents for w in s] == words and all(sents)


def test_split_sentences():
    text = ('Dr. J. Smith joined Acme Inc. in 1990. He left in 2001! "Why?" she asked. It costs 3.5 dollars... '
            'really. 北京是首都。我爱北京！ The end')
    sents = [" ".join(w.text for w in s) for s in split_sentences(text)]
    assert sents == ["Dr. J. Smith joined Acme Inc. in 1990 .", "He left in 2001 !", '" Why ? " she asked .',
                     "It costs 3.5 dollars . . . really .", "北 京 是 首 都 。", "我 爱 北 京 ！",
                     "The end"]
    assert split_sentences("") == [] and split_sentences("  \u200b ") == []
    assert len(split_sentences("One.\n\ntwo")) == 2 and len(split_sentences("a. b")) == 1


def test_text_document_char_spans():
    line = "  Renée works for 北京 Corp.  "
    doc = predict_input.text_document(line, "line1")
    assert doc.text == line and doc.sentences[0].words == ["Renée", "works", "for", "北", "京", "Corp."]
    for s in doc.sentences:
        assert [line[a:b] for a, b in s.char_spans] == s.words


# ------------------------------------------------------------------------------------------- windows
@pytest.mark.parametrize("seed", range(5))
def test_plan_windows_cover_every_word_and_fit(seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 6, size=300).tolist()
    counts[17] = 40  # a word longer than the whole budget (the featurizer shortens it)
    budget, L = 32, 5
    wins = windows.plan_windows(counts, budget, L)
    assert wins[0][0] == 0 and wins[-1][1] == 300
    covered = set()
    for (lo, hi), nxt in zip(wins, wins[1:] + [None]):
        assert lo < hi and sum(min(c, budget) for c in counts[lo:hi]) <= budget
        covered.update(range(lo, hi))
        if nxt is not None:
            assert nxt[0] > lo and nxt[1] > hi and nxt[0] <= hi
    assert covered == set(range(300))
    # Every span of <= L words whose pieces fit the budget lies inside some window.
    for a, b in enumerate_spans(300, L):
        if sum(counts[a:b + 1]) <= budget:
            assert any(lo <= a and b < hi for lo, hi in wins), (a, b)
    assert windows.plan_windows([1, 2, 3], 32, 5) == [(0, 3)] and windows.plan_windows([], 32, 5) == []


@pytest.fixture(scope="module")
def ner_setup(tiny_bert):
    return build_lib.build(tiny_config("ner", tiny_bert, max_text_len=32, max_candidates=32, max_span_len=3))


@pytest.fixture(scope="module")
def re_setup(tiny_bert):
    return build_lib.build(tiny_config("re", tiny_bert, max_text_len=32, max_objects=4, **{"re.re_decode": "both"}))


def _long_doc(n_words: int = 300) -> Document:
    return predict_input.text_document(_long_line(n_words), "long")


def test_long_sentence_every_span_reachable_and_decoded(ner_setup, re_setup):
    doc = _long_doc()
    words = doc.sentences[0].words
    assert len(words) == 300
    budget, L = 32, 3
    tok = ner_setup.tokenizer
    instances, stats = ner_setup.featurizer.ner_instances([doc], with_labels=False)
    assert stats["windowed"] == 1 and len({inst.window for inst in instances}) > 5
    spans = []
    for inst in instances:
        lo, hi = inst.window
        n_pieces = len(tok(words[lo:hi], is_split_into_words=True, add_special_tokens=False)["input_ids"])
        assert n_pieces <= budget
        spans.extend(inst.spans)
    assert sorted(spans) == enumerate_spans(300, L)  # nothing cut off by max_text_len, each span once

    # Fake model outputs: two entities far beyond max_text_len, one near the start.
    targets = {(5, 5): 1, (250, 251): 2, (258, 258): 3}
    E = len(ner_setup.labels.entity_types)
    probs = []
    for inst in instances:
        K = len(inst.arrays["cand_mask"])
        tp = np.tile(np.eye(1 + E, dtype=np.float32)[0], (K, 1))
        fp = np.zeros(K, np.float32)
        for slot, span in enumerate(inst.spans):
            t = targets.get(span)
            if t is not None:
                tp[slot] = 0.05 / E
                tp[slot, t] = 0.95
                fp[slot] = 0.9
        probs.append({"type_probs": tp, "filter_prob": fp})
    ents = evaluation.decode_documents(ner_setup, [doc], instances, probs)[0].sentences[0].entities
    types = ner_setup.labels.entity_types
    assert [(e.start, e.end, e.type) for e in ents] == [(a, b, types[t - 1]) for (a, b), t in sorted(targets.items())]
    assert all(abs(e.score - 0.95) < 1e-6 for e in ents)

    # RE on the windows: the close pair far into the sentence is classified, the far pair never is.
    space = re_setup.featurizer.rel_space
    r_inst = re_setup.featurizer.re_instances([doc], [[ents]])
    fwd, inv = space.forward_id(space.relation_types[0]), space.inverse_id(space.relation_types[0])
    r_probs, pairs = [], []
    for inst in r_inst:
        p = np.tile(np.eye(space.num_classes, dtype=np.float32)[0], (len(inst.arrays["labels"]), 1))
        for slot, obj in enumerate(inst.spans):
            pairs.append((inst.subject, obj))
            if (inst.subject, obj) == ((250, 251), (258, 258)):
                p[slot] = np.eye(space.num_classes)[fwd] * 0.8 + 0.2 / space.num_classes
            if (inst.subject, obj) == ((258, 258), (250, 251)):
                p[slot] = np.eye(space.num_classes)[inv] * 0.8 + 0.2 / space.num_classes
        r_probs.append({"type_probs": p})
    assert ((5, 5), (250, 251)) not in pairs and ((250, 251), (258, 258)) in pairs
    assert len(pairs) == len(set(pairs)) == 2
    rels = evaluation.decode_documents(re_setup, [doc], r_inst, r_probs, [[ents]])[0].sentences[0].relations
    assert [(r.head, r.tail, r.type) for r in rels] == [((250, 251), (258, 258), space.relation_types[0])]

    inp = predict_input.InputDoc({"line": 1}, doc)
    out = predict.document_json(inp, [[(e.start, e.end, e.type, e.score) for e in ents]],
                                [[(r.head, r.tail, r.type, r.score) for r in rels]])
    assert out["relations"] == [{"sentence": 0, "head": 1, "tail": 2, "type": space.relation_types[0],
                                 "score": pytest.approx(0.8 + 0.2 / space.num_classes, abs=1e-5)}]


def test_overlong_word_is_shortened_not_dropped(ner_setup):
    tok = ner_setup.tokenizer
    doc = predict_input.text_document("short " + "x7q" * 30 + " words here", "d")
    long_pieces = tok("x7q" * 30, add_special_tokens=False)["input_ids"]
    assert len(long_pieces) > 32
    instances, stats = ner_setup.featurizer.ner_instances([doc], with_labels=False)
    assert stats["long_words"] == 1 and stats["spans_unreachable"] == 4  # (0, 1), (0, 2), (1, 2), (1, 3)
    alone = [(a, b) for a, b in enumerate_spans(4, 3) if not a <= 1 <= b or a == b]
    assert sorted(sp for inst in instances for sp in inst.spans) == alone
    inst = next(i for i in instances if (1, 1) in i.spans)
    a, slot = inst.arrays, inst.spans.index((1, 1))
    shown = a["input_ids"][a["cand_text_start"][slot]:a["cand_text_end"][slot] + 1].tolist()
    assert shown == long_pieces[:32]  # its first max_text_len pieces


# ------------------------------------------------------------------------------------------- offsets
def _check_entity_offsets(obj: dict, line: str) -> None:
    for e in obj["entities"]:
        words = obj["tokens"][e["sentence"]][e["start"]:e["end"] + 1]
        assert line[e["char_start"]:e["char_end"]] == e["text"]
        assert _squash(e["text"]) == _squash("".join(words))


def test_char_offsets_of_hand_made_entities():
    line = '\t«Renée Müller» of 北京 Corp. met 👨\u200d👩\u200d👧 at state-of-the-art café\u0301 — "IBM".  '
    inp = predict_input.parse_input(line + "\n", "<test>", "text")[0]
    sents = inp.doc.sentences
    ents = [[(a, b, "Peop", 0.5) for a, b in enumerate_spans(len(s.words), 4)] for s in sents]
    obj = predict.document_json(inp, ents)
    assert "relations" not in obj and obj["line"] == 1
    assert len(obj["entities"]) == sum(len(e) for e in ents)
    _check_entity_offsets(obj, line)
    by_text = {e["text"] for e in obj["entities"]}
    assert {"Renée Müller", "北京 Corp.", "👨\u200d👩\u200d👧", "state-of-the-art café\u0301"} <= by_text


def test_json_input_formats_ignore_gold():
    pure = [{"doc_key": "a", "sentences": [["John", "lives"], ["in", "Ulm", "."]],
             "ner": [[[0, 0, "Bogus"]], [[9, 9, "Loc"]]], "relations": "not even a list"},
            {"doc_key": 7, "sentences": [["x"]]}]
    text = "\n".join(json.dumps(d) for d in pure) + "\n\n"
    docs = predict_input.parse_input(text, "f.jsonl")
    assert [d.key for d in docs] == [{"doc_key": "a"}, {"doc_key": "7"}]
    assert docs[0].doc.sentences[1].words == ["in", "Ulm", "."] and docs[0].doc.text is None
    assert predict_input.parse_input(json.dumps(pure), "f.json")[1].key == {"doc_key": "7"}  # a list of PURE documents
    spert = [{"tokens": ["A", "b"], "entities": [{"start": 5, "end": 1, "type": "?"}], "orig_id": 3},
             {"tokens": ["c"]}]
    docs = predict_input.parse_input(json.dumps(spert), "dir/dev.json")
    assert [d.key for d in docs] == [{"doc_key": "dev:3"}, {"doc_key": "dev:1"}]
    obj = predict.document_json(docs[0], [[(0, 1, "Org", 0.25)]])
    assert obj["entities"] == [{"sentence": 0, "start": 0, "end": 1, "type": "Org", "score": 0.25, "text": "A b"}]
    # Text whose first character is a bracket needs --format=text.
    assert predict_input.parse_input("[1] Intro.\n", "t.txt", "text")[0].doc.sentences[0].words[:3] == ["[", "1", "]"]


def test_bom_and_crlf_input_files_load(tmp_path):
    # Files as Windows editors save them (UTF-8 byte-order mark, CRLF line ends) read like their plain twins.
    pure = [{"doc_key": "a", "sentences": [["John", "lives"], ["in", "Zürich", "."]]},
            {"doc_key": "b", "sentences": [["x"]]}]
    spert = [{"tokens": ["A", "b"], "orig_id": 3}, {"tokens": ["c"]}]
    cases = {"text.txt": "John lives in Zürich.\n\nMary left.\n",
             "pure.jsonl": "\n".join(json.dumps(d, ensure_ascii=False) for d in pure) + "\n",
             "spert.json": json.dumps(spert, indent=2)}
    for name, text in cases.items():
        (tmp_path / "unix").mkdir(exist_ok=True)
        (tmp_path / "unix" / name).write_text(text, encoding="utf-8")
        win = tmp_path / name
        win.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
        got, want = predict_input.read_input(str(win)), predict_input.read_input(str(tmp_path / "unix" / name))
        assert [(d.key, d.doc) for d in got] == [(d.key, d.doc) for d in want] and got, name
    text_docs = predict_input.read_input(str(tmp_path / "text.txt"))
    assert [d.key for d in text_docs] == [{"line": 1}, {"line": 3}]
    assert text_docs[0].doc.text == "John lives in Zürich." and text_docs[1].doc.text == "Mary left."  # no BOM, no CR


@pytest.mark.parametrize("content,fmt,where", [
    ("plain text\n", "pure", "line 1"),
    ('{"doc_key": "a", "sentences": [["x"]]}\n\n{"doc_key": "b", "sentences": [["y"]\n', "auto", "line 3"),
    ('{"doc_key": "a", "sentences": [["x"]]}\n{"doc_key": "b"}\n', "auto", "line 2"),
    ('{"doc_key": "a", "sentences": [["x", ""]]}\n', "pure", "line 1"),
    ('[{"tokens": ["a"]}, {"tokens": "ab"}]', "auto", "sentence 1"),
    ('{"doc_key": "a", "sentences": [["x"]]}', "spert", "line 1"),
])
def test_wrong_format_names_file_and_line(content, fmt, where):
    with pytest.raises(DataError) as e:
        predict_input.parse_input(content, "in.jsonl", fmt)
    assert str(e.value).startswith(f"in.jsonl: {where}")


def test_cli_errors_exit_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"doc_key": "a", "sentences": [["x"]]}\n{"doc_key": "b", "sentences": [["y"]\n')
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("ok\ncaf\xe9\n".encode("latin-1"))
    cases = [([f"--input={bad}"], [str(bad), "line 2", "--format=text"]),
             ([f"--input={tmp_path / 'missing.txt'}"], ["missing.txt", "file not found"]),
             ([f"--input={latin}"], [str(latin), "line 2", "not UTF-8"])]
    for args, needles in cases:
        proc = subprocess.run([sys.executable, "-m", "lai_jax.predict", f"--ner={tmp_path}", "--output=-", *args],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        for needle in needles:
            assert needle in proc.stderr
    # A workdir that is not a training run: input is fine, the workdir is reported.
    ok = tmp_path / "ok.txt"
    ok.write_text("Hello world.\n")
    assert predict.run(str(tmp_path / "nowhere"), None, str(ok), "-") == 2
    assert predict.run(str(tmp_path / "nowhere"), None, str(ok), str(tmp_path)) == 2  # output is a folder


# ------------------------------------------------------------------------------- end to end (trained)
@pytest.fixture(scope="module")
def workdirs(tmp_path_factory, tiny_bert):
    """A tiny NER and RE run (two steps each) of configs/quick.py; the RE run is end to end (NER's entities)."""
    from lai_jax import train
    root = tmp_path_factory.mktemp("predict_runs")
    overrides = {"max_steps": 2, "data.train_limit": 16, "data.eval_limit": 8, "batch_size": 4,
                 "eval_every_steps": 2, "num_epochs": 1, "max_candidates": 32, "max_text_len": 32,
                 "model.gcn_layers": 0, "data.use_tfds": False}
    out = []
    for phase in ("ner", "re"):
        extra = {"re.entities_from": str(root / "ner")} if phase == "re" else {}
        train.train_and_evaluate(tiny_config(phase, tiny_bert, **overrides, **extra), str(root / phase))
        out.append(str(root / phase))
    settings = json.loads((root / "ner" / "predictions" / "test.settings.json").read_text())
    assert settings["phase"] == "ner" and settings["ner.overlap"] == "plmarker" and settings["checkpoint_step"] == 2
    return tuple(out)


def test_predict_text_end_to_end(workdirs, tmp_path):
    ner, re_dir = workdirs
    lines = ["John Smith works for Acme Corp. in Boston. He met Mary there.", "",
             _long_line(300, seed=1) + " .", "Renée Müller visited 北京 and Zürich 👍🏽 with IBM.", "   ",
             "😀"]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "sub" / "out.jsonl"
    proc = subprocess.run([sys.executable, "-m", "lai_jax.predict", f"--ner={ner}", f"--re={re_dir}", f"--input={src}",
                           f"--output={out}", "--batch-size=3"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "split into windows" in proc.stderr and proc.stdout == ""
    objs = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [o["line"] for o in objs] == [1, 3, 4, 6]  # one object per non-blank line
    assert [len(t) for t in objs[0]["tokens"]] == [9, 5]  # "Corp." keeps its period (Penn Treebank)
    assert [len(t) for t in objs[1]["tokens"]] == [301]
    assert [w for s in objs[1]["tokens"] for w in s] == lines[2].split()
    assert objs[3]["tokens"] == [["😀"]]
    for o in objs:
        line = lines[o["line"] - 1]
        _check_entity_offsets(o, line)
        for e in o["entities"]:
            assert 0 <= e["start"] <= e["end"] < len(o["tokens"][e["sentence"]]) and 0 <= e["score"] <= 1
        for r in o["relations"]:
            assert o["entities"][r["head"]]["sentence"] == o["entities"][r["tail"]]["sentence"] == r["sentence"]
            assert r["head"] != r["tail"]


def test_predict_pure_stdin_to_stdout_entities_only(workdirs, monkeypatch, capsysbinary):
    ner, _ = workdirs
    docs = [{"doc_key": "d1", "sentences": [["Mary", "lives", "in", "Ulm", "."], ["She", "works", "."]],
             "ner": [[[0, 0, "Unknown"]], []]},
            {"doc_key": "d2", "sentences": [["IBM"]]}]
    stdin = "".join(json.dumps(d) + "\n" for d in docs).encode("utf-8")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    assert predict.run(ner, None, "-", "-") == 0
    objs = [json.loads(x) for x in capsysbinary.readouterr().out.decode("utf-8").splitlines()]
    assert [o["doc_key"] for o in objs] == ["d1", "d2"]
    assert objs[0]["tokens"] == docs[0]["sentences"]
    for o in objs:
        assert "relations" not in o
        for e in o["entities"]:
            assert "char_start" not in e
            assert e["text"] == " ".join(o["tokens"][e["sentence"]][e["start"]:e["end"] + 1])


def test_re_encoder_can_start_from_the_ner_run(workdirs, tiny_bert):
    """re.init_from_ner: the RE run's initial encoder is the NER run's best encoder, not the pretrained one."""
    import jax
    from lai_jax import evaluate, train
    ner, _ = workdirs
    config = tiny_config("re", tiny_bert, max_text_len=32, max_objects=4,
                         **{"re.entities_from": ner, "re.init_from_ner": True})
    setup = build_lib.build(config)
    sample = input_pipeline.stack(input_pipeline.make_instances(setup.featurizer, setup.config.phase, [input_pipeline.dummy_document('Peop')])[:1])
    started = build_lib.init_state(setup, sample, 1, train.initial_encoder(config)).params["encoder"]
    nsetup, runner, nparams = evaluate.restore_run(ner)  # the best checkpoint's parameters only
    trained = runner.get_state(nparams)["encoder"]
    pretrained = setup.encoder_params
    leaves = zip(jax.tree.leaves(started), jax.tree.leaves(trained), jax.tree.leaves(pretrained))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b, _ in leaves)
    assert any(not np.array_equal(np.asarray(b), np.asarray(c)) for _, b, c in
               zip(jax.tree.leaves(started), jax.tree.leaves(trained), jax.tree.leaves(pretrained)))
    with config.unlocked():
        config.re.entities_from = ""  # RE on gold entities: no NER run, the pretrained encoder
    assert train.initial_encoder(config) is None
    gold_start = build_lib.init_state(build_lib.build(config), sample, 1, train.initial_encoder(config)).params["encoder"]
    assert all(np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(gold_start), jax.tree.leaves(pretrained)))


# ------------------------------------------------------------------------------------- the Python API
TEN = ["John Smith works for Acme Corp in Boston .", "Mary Jones lives in Paris .",
       "IBM is based in Armonk , New York .", "Peter Brown killed Tom Green in Chicago .",
       "Anna Lee , a lawyer , joined Google last year .", "The mayor of Berlin met Angela Merkel .",
       "Bob Marley was born in Jamaica .", "Microsoft hired Sara Kim in Seattle .",
       "Renée Müller visited Zürich with Paul Klee .", "Apple opened an office in London ."]


def _eager(ex) -> None:
    """Keep every candidate span and pair (filter threshold 0, class "none" out of reach): the two-step fixture
    models predict next to nothing, so the comparisons below would otherwise compare empty lists."""
    ex.ner.setup.config.ner.filter_threshold = 0.0
    for phase in (ex.ner, ex.re):
        params = jax.tree.map(np.array, phase.runner.get_state(phase.params))
        params["heads"]["classifier"]["bias"][0] -= 30.0
        phase.params = phase.runner.put_state(params)


def _per_sentence(objs: list[dict]) -> list[tuple]:
    """(entities, relations) of every sentence of the outputs, scores rounded, in order."""
    out = []
    for o in objs:
        for s, words in enumerate(o["tokens"]):
            ents = [e for e in o["entities"] if e["sentence"] == s]
            span = {id(e): (e["start"], e["end"]) for e in ents}
            rels = [(span[id(o["entities"][r["head"]])], span[id(o["entities"][r["tail"]])], r["type"],
                     round(r["score"], 4)) for r in o["relations"] if r["sentence"] == s]
            out.append((tuple(words), [(e["start"], e["end"], e["type"], round(e["score"], 4)) for e in ents], rels))
    return out


@pytest.fixture(scope="module")
def extractor(workdirs):
    from lai_jax import Extractor
    ex = Extractor.load(ner=workdirs[0], re=workdirs[1])
    _eager(ex)
    return ex


def test_extractor_predicts_offsets_and_scores_and_compiles_once(extractor):
    out = extractor.predict(["John Smith works for Acme Corp.", "Mary lives in Paris. She works for IBM."])
    assert [len(o["tokens"]) for o in out] == [1, 2]
    assert all(o["entities"] and o["relations"] for o in out)
    _check_entity_offsets(out[0], "John Smith works for Acme Corp.")
    for o in out:
        for e in o["entities"]:
            assert set(e) >= {"char_start", "char_end", "text", "type", "score"} and 0 <= e["score"] <= 1
        for r in o["relations"]:
            assert set(r) == {"sentence", "head", "tail", "type", "score"} and r["head"] != r["tail"]
    compiles = {p: dict(ph.runner.compiles) for p, ph in (("ner", extractor.ner), ("re", extractor.re))}
    many = extractor.predict(["John Smith works for Acme Corp."] * 40)  # several batches of the same shapes
    assert {p: dict(ph.runner.compiles) for p, ph in (("ner", extractor.ner), ("re", extractor.re))} == compiles
    assert all(_per_sentence([o]) == _per_sentence(out[:1]) for o in many)
    assert extractor.predict("Mary lives in Paris.")[0]["tokens"] == [["Mary", "lives", "in", "Paris", "."]]


def test_a_line_of_sentences_predicts_like_one_sentence_a_line(extractor, workdirs):
    """CoNLL04 documents are single sentences, so the runs were trained without neighbouring sentences: a line
    of ten sentences must give what the ten sentences give one per line (not what a window of them gives)."""
    from lai_jax import run_record
    assert not extractor.ner.document_context and not extractor.re.document_context
    assert run_record.read(workdirs[0])["training_data"]["document_context"] is False
    one_line = extractor.predict([" ".join(TEN)])
    assert len(one_line[0]["tokens"]) == 10
    per_line = extractor.predict(TEN)
    assert _per_sentence(one_line) == _per_sentence(per_line)
    assert sum(len(r) for _, _, r in _per_sentence(one_line)) >= 10
    # With neighbouring sentences as context (what predict did before), the same line is predicted differently.
    extractor.ner.document_context = extractor.re.document_context = True
    try:
        assert _per_sentence(extractor.predict([" ".join(TEN)])) != _per_sentence(per_line)
    finally:
        extractor.ner.document_context = extractor.re.document_context = False


def test_document_context_of_runs_without_a_record(tmp_path, tiny_bert):
    """Runs made before run.json: worked out from the training data (CoNLL04 single sentences, SciERC abstracts)."""
    from lai_jax import run_record
    conll = tiny_config("ner", tiny_bert, **{"data.use_tfds": False})
    assert run_record.document_context(tmp_path, conll) is False
    from lai_jax.config_base import base_config, set_fields
    scierc = set_fields(base_config("scierc", "ner"), **{"data.use_tfds": False, "data.train_limit": 20})
    assert run_record.document_context(tmp_path, scierc) is True
    broken = set_fields(base_config("scierc", "ner"), **{"data.use_tfds": False, "data.dir": str(tmp_path / "none")})
    assert run_record.document_context(tmp_path, broken) is True  # unreadable: the training windows, warned


def test_run_folder_records_command_commit_packages_and_log(workdirs):
    from lai_jax import run_record
    for workdir in workdirs:
        record = run_record.read(workdir)
        start = record["starts"][-1]
        assert start["command"] and start["cwd"] and start["packages"]["jax"] == jax.__version__
        assert start.get("git_commit", "x" * 40) and len(start.get("git_commit", "x" * 40)) == 40
        assert record["training_data"]["documents"] == record["training_data"]["sentences"] > 0
        log_text = (Path(workdir) / "log.txt").read_text()
        assert "train instances" in log_text


def test_re_run_predictions_keep_the_ner_scores(workdirs):
    ner, re_dir = workdirs
    ner_pred = [json.loads(x) for x in (Path(ner) / "predictions" / "test.jsonl").read_text().splitlines()]
    re_pred = [json.loads(x) for x in (Path(re_dir) / "predictions" / "test.jsonl").read_text().splitlines()]
    assert any(any(s) for d in ner_pred for s in d["ner"])
    assert [d["ner"] for d in re_pred] == [d["ner"] for d in ner_pred]
    # A document without predicted entities carries no "ner_scores" (Document.to_pure); one with some must.
    assert any("ner_scores" in d for d in ner_pred)
    assert [d.get("ner_scores") for d in re_pred] == [d.get("ner_scores") for d in ner_pred]


def test_no_length_warning_for_long_sentences():
    """Windows handle sentences past the encoder's 512 positions: transformers must not warn about them."""
    import logging
    from lai_jax.pretrained import load_tokenizer
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        tok = load_tokenizer("default")
        tok(["word"] * 700, is_split_into_words=True, add_special_tokens=False)
    finally:
        logger.removeHandler(handler)
    assert not [r for r in records if "sequence length is longer" in r.getMessage()]
