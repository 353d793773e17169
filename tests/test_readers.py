"""Readers and label files: round trips, every malformed-input error, counts on the bundled data."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lai_jax.data.documents import DataError, Document, Entity, Relation, Sentence
from lai_jax.data.labels import LabelSet, load_labels
from lai_jax.data.readers import detect_format, document_from_pure, read_documents, read_pure, read_spert

DATA = Path(__file__).resolve().parents[1] / "data"

LABELS = LabelSet(entity_types=("PER", "ORG"), entity_annotations=("person", "organization"),
                  relation_types=("WORK", "SOC"), relation_annotations=("works for", "social"),
                  symmetric=(False, True))


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(tmp_path: Path, docs: list, name: str = "docs.json") -> Path:
    return _write(tmp_path, name, "\n".join(json.dumps(d) for d in docs) + "\n")


def _check(err: pytest.ExceptionInfo, path: Path, *parts: str) -> None:
    """The message names the file and every given part (line/document, field, reason)."""
    msg = str(err.value)
    assert path.name in msg, msg
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"


def _pure_doc(**over) -> dict:
    # Two sentences: "Ann works at Acme ." (0-4) and "Bob met Ann ." (5-8); doc-level offsets.
    doc = {"doc_key": "d1",
           "sentences": [["Ann", "works", "at", "Acme", "."], ["Bob", "met", "Ann", "."]],
           "ner": [[[0, 0, "PER"], [3, 3, "ORG"]], [[5, 5, "PER"], [7, 7, "PER"]]],
           "relations": [[[0, 0, 3, 3, "WORK"]], [[5, 5, 7, 7, "SOC"]]],
           "clusters": [[[0, 0], [7, 7]]]}
    doc.update(over)
    return doc


def _spert_sents() -> list:
    return [{"tokens": ["Ann", "Lee", "works", "at", "Acme", "Corp", "."],
             "entities": [{"type": "PER", "start": 0, "end": 2}, {"type": "ORG", "start": 4, "end": 6}],
             "relations": [{"type": "WORK", "head": 0, "tail": 1}], "orig_id": 7},
            {"tokens": ["Hello", "."], "entities": [], "relations": [], "orig_id": 8}]


# ------------------------------------------------------------------------------------------- round trips

def test_pure_round_trip_doc_level_to_sentence_level(tmp_path):
    path = _jsonl(tmp_path, [_pure_doc()])
    docs = read_pure(path, LABELS)
    assert docs == [Document("d1", [
        Sentence(["Ann", "works", "at", "Acme", "."], [Entity(0, 0, "PER"), Entity(3, 3, "ORG")],
                 [Relation((0, 0), (3, 3), "WORK")]),
        Sentence(["Bob", "met", "Ann", "."], [Entity(0, 0, "PER"), Entity(2, 2, "PER")],
                 [Relation((0, 0), (2, 2), "SOC")]),
    ])]
    expected = _pure_doc()
    del expected["clusters"]  # ignored by the reader
    assert docs[0].to_pure() == expected
    assert document_from_pure(docs[0].to_pure()) == docs[0]


def test_pure_scores_ride_alongside_and_do_not_affect_equality(tmp_path):
    doc = Document("d", [Sentence(["a", "b"], [Entity(0, 0, "PER", 0.912345), Entity(1, 1, "ORG")],
                                  [Relation((0, 0), (1, 1), "WORK", 0.5)]),
                         Sentence(["c"], [Entity(0, 0, "PER", 0.25)])])
    out = doc.to_pure()
    assert out["ner"] == [[[0, 0, "PER"], [1, 1, "ORG"]], [[2, 2, "PER"]]]
    assert out["ner_scores"] == [[0.9123, None], [0.25]]
    assert out["relation_scores"] == [[0.5], []]
    assert Entity(0, 0, "PER", 0.1) == Entity(0, 0, "PER") and len({Entity(0, 0, "PER", 0.1), Entity(0, 0, "PER")}) == 1
    back = document_from_pure(json.loads(json.dumps(out)), LABELS)
    assert back == doc  # scores do not take part in equality; spans and types survive
    assert back.to_pure() == out  # and the scores are read back (an RE run's entities_from keeps them)


def test_pure_multiword_entities_and_blank_lines(tmp_path):
    doc = {"doc_key": 5, "sentences": [["a", "b"], ["c", "d", "e", "f"]],
           "ner": [[], [[3, 5, "ORG"], [2, 2, "PER"]]], "relations": [[], [[3, 5, 2, 2, "WORK"]]]}
    path = _write(tmp_path, "x.jsonl", "\n" + json.dumps(doc) + "\n\n")
    [d] = read_documents(path)
    assert d.doc_key == "5"
    assert d.sentences[1].entities == [Entity(1, 3, "ORG"), Entity(0, 0, "PER")]
    assert d.sentences[1].relations == [Relation((1, 3), (0, 0), "WORK")]


def test_spert_round_trip_end_exclusive_to_inclusive(tmp_path):
    path = _write(tmp_path, "conll_dev.json", json.dumps(_spert_sents()))
    docs = read_spert(path, LABELS)
    assert docs == [
        Document("conll_dev:7", [Sentence(["Ann", "Lee", "works", "at", "Acme", "Corp", "."],
                                          [Entity(0, 1, "PER"), Entity(4, 5, "ORG")],
                                          [Relation((0, 1), (4, 5), "WORK")])]),
        Document("conll_dev:8", [Sentence(["Hello", "."], [], [])]),
    ]
    assert docs[0].to_pure()["ner"] == [[[0, 1, "PER"], [4, 5, "ORG"]]]


def test_spert_without_orig_id_uses_index(tmp_path):
    sents = _spert_sents()
    for s in sents:
        del s["orig_id"]
    docs = read_spert(_write(tmp_path, "a.json", json.dumps(sents)))
    assert [d.doc_key for d in docs] == ["a:0", "a:1"]


def test_format_detection(tmp_path):
    spert = _write(tmp_path, "s.json", "\n  " + json.dumps(_spert_sents()))
    pure = _jsonl(tmp_path, [_pure_doc()], "p.json")
    assert detect_format(spert) == "spert" and detect_format(pure) == "pure"
    assert read_documents(spert) == read_spert(spert)
    assert read_documents(pure, format="pure") == read_pure(pure)
    bad = _write(tmp_path, "b.json", "hello")
    with pytest.raises(DataError) as err:
        read_documents(bad)
    _check(err, bad, "format")


def test_require_annotations_false_allows_raw_documents(tmp_path):
    path = _jsonl(tmp_path, [{"doc_key": "r", "sentences": [["x", "y"]]}])
    [d] = read_pure(path, require_annotations=False)
    assert d.sentences == [Sentence(["x", "y"])]
    with pytest.raises(DataError) as err:
        read_pure(path)
    _check(err, path, "line 1", "'ner'", "missing required key")


# ------------------------------------------------------------------------------------------- PURE errors

def test_pure_missing_file(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(DataError) as err:
        read_pure(path)
    _check(err, path, "file not found")
    with pytest.raises(DataError, match="file not found"):
        read_documents(path)


def test_pure_empty_file(tmp_path):
    path = _write(tmp_path, "empty.json", "\n  \n")
    with pytest.raises(DataError) as err:
        read_pure(path)
    _check(err, path, "empty")


def test_pure_invalid_json_names_line(tmp_path):
    path = _write(tmp_path, "bad.json", json.dumps(_pure_doc()) + "\n" + '{"doc_key": "d2", "sentences": [\n')
    with pytest.raises(DataError) as err:
        read_pure(path)
    _check(err, path, "line 2", "json", "invalid JSON")


@pytest.mark.parametrize("key", ["doc_key", "sentences", "ner", "relations"])
def test_pure_missing_required_key(tmp_path, key):
    doc = _pure_doc()
    del doc[key]
    path = _jsonl(tmp_path, [_pure_doc(doc_key="ok"), doc])
    with pytest.raises(DataError) as err:
        read_pure(path)
    _check(err, path, "line 2", f"'{key}'", "missing required key")


def test_pure_entity_out_of_range(tmp_path):
    path = _jsonl(tmp_path, [_pure_doc(ner=[[[0, 0, "PER"]], [[7, 9, "PER"]]], relations=[[], []])])
    with pytest.raises(DataError) as err:
        read_pure(path)
    _check(err, path, "line 1", "doc_key 'd1'", "ner[1][0]", "out of range")


def test_pure_entity_negative_offset(tmp_path):
    path = _jsonl(tmp_path, [_pure_doc(ner=[[[-1, 0, "PER"]], []], relations=[[], []])])
    with pytest.raises(DataError) as err:
        read_pure(path)
    _check(err, path, "line 1", "ner[0][0]", "out of range")


def test_pure_entity_reversed(tmp_path):
    path = _jsonl(tmp_path, [_pure_doc(ner=[[[3, 1, "ORG"]], []], relations=[[], []])])
    with pytest.raises(DataError) as err:
        read_pure(path)
    _check(err, path, "line 1", "ner[0][0]", "reversed")


def test_pure_entity_spans_sentence_boundary(tmp_path):
    path = _jsonl(tmp_path, [_pure_doc(ner=[[[3, 5, "ORG"]], []], relations=[[], []])])
    with pytest.raises(DataError) as err:
        read_pure(path)
    _check(err, path, "line 1", "ner[0][0]", "sentence boundary")


def test_pure_entity_listed_under_wrong_sentence(tmp_path):
    path = _jsonl(tmp_path, [_pure_doc(ner=[[[6, 6, "PER"]], []], relations=[[], []])])
    with pytest.raises(DataError) as err:
        read_pure(path)
    _check(err, path, "line 1", "ner[0][0]", "outside its sentence")


def test_pure_bad_entity_shape(tmp_path):
    path = _jsonl(tmp_path, [_pure_doc(ner=[[[0, "PER"]], []], relations=[[], []])])
    with pytest.raises(DataError) as err:
        read_pure(path)
    _check(err, path, "line 1", "ner[0][0]", "[start, end, type]")


def test_pure_unknown_entity_type(tmp_path):
    path = _jsonl(tmp_path, [_pure_doc(ner=[[[0, 0, "PER"], [3, 3, "COMPANY"]], [[5, 5, "PER"], [7, 7, "PER"]]])])
    read_pure(path)  # without labels any type passes
    with pytest.raises(DataError) as err:
        read_pure(path, LABELS)
    _check(err, path, "line 1", "ner[0][1]", "unknown entity type 'COMPANY'")


def test_pure_unknown_relation_type(tmp_path):
    path = _jsonl(tmp_path, [_pure_doc(relations=[[[0, 0, 3, 3, "EMPLOYS"]], []])])
    with pytest.raises(DataError) as err:
        read_pure(path, LABELS)
    _check(err, path, "line 1", "relations[0][0]", "unknown relation type 'EMPLOYS'")


def test_pure_relation_argument_not_an_entity(tmp_path):
    path = _jsonl(tmp_path, [_pure_doc(relations=[[[0, 0, 2, 3, "WORK"]], []])])
    with pytest.raises(DataError) as err:
        read_pure(path)
    _check(err, path, "line 1", "relations[0][0]", "tail", "not an annotated entity")


def test_pure_relation_argument_in_other_sentence(tmp_path):
    # (7, 7) is an entity, but of sentence 1: relations must stay within their sentence.
    path = _jsonl(tmp_path, [_pure_doc(relations=[[[0, 0, 7, 7, "SOC"]], []])])
    with pytest.raises(DataError) as err:
        read_pure(path)
    _check(err, path, "line 1", "relations[0][0]", "not an annotated entity of sentence 0")


def test_pure_empty_sentence(tmp_path):
    path = _jsonl(tmp_path, [_pure_doc(sentences=[["Ann", "works", "at", "Acme", "."], []])])
    with pytest.raises(DataError) as err:
        read_pure(path)
    _check(err, path, "line 1", "sentences[1]", "empty sentence")


def test_pure_empty_word(tmp_path):
    path = _jsonl(tmp_path, [_pure_doc(sentences=[["Ann", "", "at", "Acme", "."], ["Bob", "met", "Ann", "."]])])
    with pytest.raises(DataError) as err:
        read_pure(path)
    _check(err, path, "line 1", "sentences[0][1]")


def test_pure_sentence_count_mismatch(tmp_path):
    path = _jsonl(tmp_path, [_pure_doc(ner=[[[0, 0, "PER"]]])])
    with pytest.raises(DataError) as err:
        read_pure(path)
    _check(err, path, "line 1", "'ner'", "has 1 sentence lists")


def test_pure_duplicate_doc_key(tmp_path):
    path = _jsonl(tmp_path, [_pure_doc(), _pure_doc()])
    with pytest.raises(DataError) as err:
        read_pure(path)
    _check(err, path, "line 2", "doc_key", "duplicate")


# ------------------------------------------------------------------------------------------- SpERT errors

def _spert_error(tmp_path: Path, sents: list, labels=None, name: str = "sp.json") -> tuple:
    path = _write(tmp_path, name, json.dumps(sents, indent=1))
    with pytest.raises(DataError) as err:
        read_spert(path, labels)
    return err, path


def test_spert_missing_file(tmp_path):
    path = tmp_path / "missing_spert.json"
    with pytest.raises(DataError) as err:
        read_spert(path)
    _check(err, path, "file not found")


def test_spert_empty_list(tmp_path):
    err, path = _spert_error(tmp_path, [])
    _check(err, path, "no sentences")


def test_spert_invalid_json_names_line(tmp_path):
    text = json.dumps(_spert_sents(), indent=1)
    path = _write(tmp_path, "broken.json", text.replace('"Hello"', '"Hello" "x"'))
    with pytest.raises(DataError) as err:
        read_spert(path)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if '"Hello"' in l)
    _check(err, path, f"line {line}", "json", "invalid JSON")


@pytest.mark.parametrize("key", ["tokens", "entities", "relations"])
def test_spert_missing_required_key(tmp_path, key):
    sents = _spert_sents()
    del sents[1][key]
    err, path = _spert_error(tmp_path, sents)
    _check(err, path, "sentence 1", "orig_id 8", f"'{key}'", "missing required key")


def test_spert_missing_entity_key(tmp_path):
    sents = _spert_sents()
    del sents[0]["entities"][1]["end"]
    err, path = _spert_error(tmp_path, sents)
    _check(err, path, "sentence 0", "orig_id 7", "entities[1].end", "missing required key")


def test_spert_entity_out_of_range(tmp_path):
    sents = _spert_sents()
    sents[0]["entities"][1]["end"] = 8  # 7 tokens; end is exclusive so 7 would still be fine
    err, path = _spert_error(tmp_path, sents)
    _check(err, path, "sentence 0", "orig_id 7", "entities[1]", "out of range")


def test_spert_entity_reversed(tmp_path):
    sents = _spert_sents()
    sents[0]["entities"][0].update(start=2, end=1)
    err, path = _spert_error(tmp_path, sents)
    _check(err, path, "sentence 0", "orig_id 7", "entities[0]", "reversed")


def test_spert_entity_empty_span(tmp_path):
    sents = _spert_sents()
    sents[0]["entities"][0].update(start=2, end=2)  # exclusive end: zero words
    err, path = _spert_error(tmp_path, sents)
    _check(err, path, "sentence 0", "entities[0]", "empty span")


def test_spert_offset_must_be_int(tmp_path):
    sents = _spert_sents()
    sents[0]["entities"][0]["start"] = True
    err, path = _spert_error(tmp_path, sents)
    _check(err, path, "sentence 0", "entities[0].start", "expected int")


def test_spert_unknown_entity_type(tmp_path):
    sents = _spert_sents()
    sents[0]["entities"][1]["type"] = "Company"
    read_spert(_write(tmp_path, "ok.json", json.dumps(sents)))  # no labels: accepted
    err, path = _spert_error(tmp_path, sents, LABELS)
    _check(err, path, "sentence 0", "orig_id 7", "entities[1].type", "unknown entity type 'Company'")


def test_spert_unknown_relation_type(tmp_path):
    sents = _spert_sents()
    sents[0]["relations"][0]["type"] = "Kill"
    err, path = _spert_error(tmp_path, sents, LABELS)
    _check(err, path, "sentence 0", "orig_id 7", "relations[0].type", "unknown relation type 'Kill'")


@pytest.mark.parametrize("role,value", [("tail", 2), ("head", -1)])
def test_spert_relation_index_out_of_range(tmp_path, role, value):
    sents = _spert_sents()
    sents[0]["relations"][0][role] = value
    err, path = _spert_error(tmp_path, sents)
    _check(err, path, "sentence 0", "orig_id 7", f"relations[0].{role}", "out of range")


def test_spert_empty_sentence(tmp_path):
    sents = _spert_sents()
    sents[1]["tokens"] = []
    err, path = _spert_error(tmp_path, sents)
    _check(err, path, "sentence 1", "orig_id 8", "tokens", "empty sentence")


def test_spert_duplicate_orig_id(tmp_path):
    sents = _spert_sents()
    sents[1]["orig_id"] = 7
    err, path = _spert_error(tmp_path, sents)
    _check(err, path, "sentence 1", "orig_id", "duplicate")


def test_spert_sentence_not_an_object(tmp_path):
    path = _write(tmp_path, "obj.json", "[1, 2]")
    with pytest.raises(DataError) as err:
        read_spert(path)
    _check(err, path, "sentence 0", "expected a JSON object")


# ------------------------------------------------------------------------------------------- labels

def _labels_file(tmp_path: Path, obj) -> Path:
    return _write(tmp_path, "labels.json", obj if isinstance(obj, str) else json.dumps(obj))


def test_labels_order_and_fields(tmp_path):
    path = _labels_file(tmp_path, {"_comment": "x", "entities": {"ORG": "organization", "PER": "person"},
                                   "relations": {"SOC": {"annotation": "social", "symmetric": True},
                                                 "WORK": {"annotation": "works for", "symmetric": False}}})
    ls = load_labels(path)
    assert ls == LabelSet(("ORG", "PER"), ("organization", "person"), ("SOC", "WORK"), ("social", "works for"),
                          (True, False))
    assert ls.entity_index() == {"ORG": 0, "PER": 1} and ls.is_symmetric("SOC")
    assert load_labels(_write(tmp_path, "again.json", json.dumps(ls.to_json()))) == ls


@pytest.mark.parametrize("dataset", ["scierc", "ade", "conll04", "ace05"])
def test_bundled_labels(dataset):
    ls = load_labels(DATA / dataset / "labels.json")
    assert ls.num_entity_types >= 2 and ls.num_relation_types >= 1
    if dataset == "scierc":
        assert ls.entity_annotations[ls.entity_types.index("OtherScientificTerm")] == "other scientific term"
        assert ls.is_symmetric("COMPARE") and not ls.is_symmetric("USED-FOR")


@pytest.mark.parametrize("obj,field,reason", [
    ({"relations": {}}, "'entities'", "missing required key"),
    ({"entities": {"A": "a"}}, "'relations'", "missing required key"),
    ({"entities": {"A": ""}, "relations": {}}, "'A'", "annotation is empty"),
    ({"entities": {"A": 3}, "relations": {}}, "'A'", "must be a string"),
    ({"entities": ["A"], "relations": {}}, "'entities'", "must be an object"),
    ({"entities": {}, "relations": {}}, "'entities'", "no entity types"),
    ({"entities": {"A": "a"}, "relations": {"R": "r"}}, "'R'", "expected"),
    ({"entities": {"A": "a"}, "relations": {"R": {"annotation": "r"}}}, "'symmetric'", "missing required key"),
    ({"entities": {"A": "a"}, "relations": {"R": {"annotation": " ", "symmetric": False}}}, "'annotation'",
     "annotation is empty"),
    ({"entities": {"A": "a"}, "relations": {"R": {"annotation": "r", "symmetric": "yes"}}}, "'symmetric'",
     "true or false"),
    ({"entities": {"A": "a"}, "relations": {}, "entites": {}}, "'entites'", "unknown key"),
    ('{"entities": {"A": "a", "A": "again"}, "relations": {}}', "'A'", "duplicate"),
    ('{"entities": {"A": "a"}, "relations": {\n}', "line 2", "invalid JSON"),
    ("[]", "<top level>", "JSON object"),
])
def test_labels_errors(tmp_path, obj, field, reason):
    path = _labels_file(tmp_path, obj)
    with pytest.raises(DataError) as err:
        load_labels(path)
    _check(err, path, field, reason)


def test_labels_missing_file(tmp_path):
    path = tmp_path / "no_labels.json"
    with pytest.raises(DataError) as err:
        load_labels(path)
    _check(err, path, "file not found")


# ------------------------------------------------------------------------------------------- bundled data

def _counts(docs: list[Document]) -> tuple[int, int, int, int]:
    sents = [s for d in docs for s in d.sentences]
    return len(docs), len(sents), sum(len(s.entities) for s in sents), sum(len(s.relations) for s in sents)


@pytest.mark.parametrize("dataset,file,expected", [
    # (docs, sentences, entities, relations) from data/README.md
    ("scierc", "train.json", (350, 1861, 5598, 3219)),
    ("scierc", "dev.json", (50, 275, 811, 455)),
    ("scierc", "test.json", (100, 551, 1685, 974)),
    ("conll04", "conll04_train.json", (922, 922, 3377, 1283)),
    ("conll04", "conll04_dev.json", (231, 231, 893, 343)),
    ("conll04", "conll04_test.json", (288, 288, 1079, 422)),
    ("ade", "ade_split_0_train.json", (3845, 3845, 9769, 6155)),
    ("ade", "ade_split_0_test.json", (427, 427, 1070, 666)),
    ("ade", "ade_full.json", (4272, 4272, 10839, 6821)),
])
def test_bundled_counts(dataset, file, expected):
    docs = read_documents(DATA / dataset / file, load_labels(DATA / dataset / "labels.json"))
    assert _counts(docs) == expected


def test_bundled_spert_offsets_are_inclusive():
    # CoNLL04 dev, first sentence: "John Wilkes Booth" is tokens [0, 3) in the file.
    doc = read_spert(DATA / "conll04" / "conll04_dev.json")[0]
    assert doc.doc_key == "conll04_dev:5178"
    assert doc.sentences[0].entities[0] == Entity(0, 2, "Peop")
    assert doc.sentences[0].relations[0] == Relation((0, 2), (6, 7), "Kill")


# ------------------------------------------------------------------------------ label file, encodings

def test_unknown_type_names_the_label_file(tmp_path):
    labels = load_labels(_labels_file(tmp_path, {"entities": {"PER": "person", "ORG": "organization"},
                                                  "relations": {"WORK": {"annotation": "works for",
                                                                         "symmetric": False}}}))
    assert labels.source == str(tmp_path / "labels.json") and labels == load_labels(tmp_path / "labels.json")
    # SOC is a gold relation type the label file does not list: an error, never mapped to "none"
    path = _jsonl(tmp_path, [_pure_doc()])
    with pytest.raises(DataError) as err:
        read_pure(path, labels)
    _check(err, path, "doc_key 'd1'", "relations[1][0]", "unknown relation type 'SOC'", str(tmp_path / "labels.json"))
    sents = _spert_sents()
    sents[0]["entities"][0]["type"] = "Person"
    path = _write(tmp_path, "sp.json", json.dumps(sents))
    with pytest.raises(DataError) as err:
        read_spert(path, labels)
    _check(err, path, "orig_id 7", "entities[0].type", "unknown entity type 'Person'", "labels.json")


def _bom_crlf(tmp_path: Path, name: str, text: str) -> Path:
    """`text` saved as Windows editors do: UTF-8 with a byte-order mark, CRLF line ends."""
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    return path


def test_bom_and_crlf_files_load(tmp_path):
    (tmp_path / "unix").mkdir()
    # PURE JSONL: two documents, CRLF after each (and a blank CRLF line at the end); a word with a non-ASCII
    # character and one with U+2028 written raw (JSON allows it unescaped; it is no line end).
    doc2 = _pure_doc(doc_key="d2", sentences=[["Zoë", "works", "at", "Acme", "."], ["Bob", "met", "A\u2028n", "."]])
    text = "\n".join(json.dumps(d, ensure_ascii=False) for d in (_pure_doc(), doc2)) + "\n\n"
    path = _bom_crlf(tmp_path, "win.json", text)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf{") and b"\r\n" in path.read_bytes()
    plain = read_pure(_jsonl(tmp_path, [_pure_doc(), doc2], "unix.json"), LABELS)
    assert read_pure(path, LABELS) == plain and read_documents(path, LABELS) == plain
    assert plain[1].sentences[0].words[0] == "Zoë" and detect_format(path) == "pure"
    # SpERT JSON, pretty-printed over many CRLF lines
    path = _bom_crlf(tmp_path, "win_spert.json", json.dumps(_spert_sents(), indent=2))
    assert detect_format(path) == "spert"
    windows = read_documents(path, LABELS)
    plain_path = _write(tmp_path / "unix", "win_spert.json", json.dumps(_spert_sents()))  # same stem, same doc keys
    assert windows == read_spert(plain_path, LABELS) and len(windows) == 2
    # labels.json
    obj = {"entities": {"PER": "person", "ORG": "organization"},
           "relations": {"WORK": {"annotation": "works for", "symmetric": False},
                         "SOC": {"annotation": "social", "symmetric": True}}}
    assert load_labels(_bom_crlf(tmp_path, "labels.json", json.dumps(obj, indent=2))) == LABELS


def test_pure_scores_are_read_back():
    """Predictions files carry ner_scores / relation_scores: reading one back (RE's entities_from) keeps them."""
    obj = {"doc_key": "d", "sentences": [["Ann", "met", "Bob"], ["Ulm"]],
           "ner": [[[0, 0, "Peop"], [2, 2, "Peop"]], [[3, 3, "Loc"]]], "relations": [[[0, 0, 2, 2, "Kill"]], []],
           "ner_scores": [[0.9, 0.25], [None]], "relation_scores": [[0.5], []]}
    doc = document_from_pure(obj)
    assert [e.score for s in doc.sentences for e in s.entities] == [0.9, 0.25, None]
    assert doc.sentences[0].relations[0].score == 0.5
    assert doc.to_pure()["ner_scores"] == obj["ner_scores"]
    for bad, field in (({"ner_scores": [[0.9], [None]]}, "'ner_scores'"), ({"ner_scores": [[0.9, "x"], [1]]},
                                                                              "'ner_scores[0][1]'")):
        with pytest.raises(DataError, match=re.escape(field)):
            document_from_pure({**obj, **bad})
