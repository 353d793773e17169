"""tfds builders: build into tmp dirs, read back through tfds data sources, caching and rebuilds."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from lai_jax.data import tfds_builders as tb  # noqa: E402
from lai_jax.data.documents import DataError  # noqa: E402
from lai_jax.data.labels import load_labels  # noqa: E402
from lai_jax.data.readers import document_from_pure, read_documents, read_pure  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> Path:
    # One cache for the module: each bundled dataset is built once and reused by the tests below.
    return tmp_path_factory.mktemp("tfds")


def _direct(dataset: str, file: str):
    return read_documents(DATA / dataset / file, load_labels(DATA / dataset / "labels.json"))


def test_builds_without_tensorflow(tfds_dir):
    tb.load_split("conll04", "dev", data_dir=tfds_dir)
    if importlib.util.find_spec("tensorflow") is None:
        assert "tensorflow" not in sys.modules
    info = tfds_dir / "lai_conll04" / "1.0.0"
    assert sorted(p.name for p in info.glob("*.array_record*")) == [
        f"lai_conll04-{s}.array_record-00000-of-00001" for s in ("dev", "test", "train")]


@pytest.mark.parametrize("dataset,split,file", [("conll04", "dev", "conll04_dev.json"),
                                                ("scierc", "dev", "dev.json")])
def test_split_equals_direct_reader(tfds_dir, dataset, split, file):
    docs = tb.load_split(dataset, split, data_dir=tfds_dir)
    assert docs == _direct(dataset, file)

    # Also through tfds' public reader, independent of load_split: order and content preserved.
    source = tfds.data_source(tb.builder_name(dataset), split=split, data_dir=str(tfds_dir), download=False)
    assert len(source) == len(docs)
    for i in (0, len(docs) // 2, len(docs) - 1):
        rec = source[i]
        assert rec["doc_key"].decode() == docs[i].doc_key
        assert document_from_pure(json.loads(rec["document"])) == docs[i]


def test_split_arithmetic_and_unknown_split(tfds_dir):
    both = tb.load_split("conll04", "train+dev", data_dir=tfds_dir)
    assert both == _direct("conll04", "conll04_train.json") + _direct("conll04", "conll04_dev.json")
    with pytest.raises(ValueError, match="no split 'validation'"):
        tb.load_split("conll04", "validation", data_dir=tfds_dir)


def test_ade_fold_config(tfds_dir):
    assert tb.builder_name("ade", 3) == "lai_ade/fold3"
    docs = tb.load_split("ade", "test", data_dir=tfds_dir, fold=3)
    assert docs == _direct("ade", "ade_split_3_test.json")
    train = tfds.data_source("lai_ade/fold3", split="train", data_dir=str(tfds_dir), download=False)
    assert len(train) + len(docs) == 4272
    assert (tfds_dir / "lai_ade" / "fold3" / "1.0.0" / "dataset_info.json").is_file()
    assert not (tfds_dir / "lai_ade" / "fold0").exists()  # folds are built on demand, independently


def test_second_load_does_not_rebuild(tfds_dir, monkeypatch):
    first = tb.load_split("scierc", "dev", data_dir=tfds_dir)
    info = tfds_dir / "lai_scierc" / "1.0.0" / "dataset_info.json"
    stamp = info.stat().st_mtime_ns

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt although the cache is current")

    monkeypatch.setattr(tb._LaiBuilder, "_split_generators", no_build)
    assert tb.load_split("scierc", "dev", data_dir=tfds_dir) == first
    assert info.stat().st_mtime_ns == stamp


_SLOW_BUILD = """
import sys, time
from lai_jax.data import tfds_builders as tb
generate = tb._LaiBuilder._split_generators
def slow(self, *args, **kwargs):
    time.sleep(2)  # every process is inside its build at once unless builds are serialised
    return generate(self, *args, **kwargs)
tb._LaiBuilder._split_generators = slow
print(len(tb.load_split("conll04", "dev", data_dir=sys.argv[1])))
"""


def test_runs_started_together_share_one_build(tmp_path):
    # Two jobs launched at once on a fresh machine raced to rename the same build folder (FileExistsError).
    procs = [subprocess.Popen([sys.executable, "-c", _SLOW_BUILD, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outs]
    assert [out.split()[-1] for out, _ in outs] == [str(len(_direct("conll04", "conll04_dev.json")))] * 3


def test_changed_source_is_rebuilt_and_bad_source_fails(tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(DATA / "conll04", data / "conll04")
    monkeypatch.setenv("LAI_JAX_DATA", str(data))
    cache = tmp_path / "tfds"
    dev = data / "conll04" / "conll04_dev.json"
    assert len(tb.load_split("conll04", "dev", data_dir=cache)) == 231

    sents = json.loads(dev.read_text())[:5]
    dev.write_text(json.dumps(sents))
    assert len(tb.load_split("conll04", "dev", data_dir=cache)) == 5

    sents[2]["entities"][0]["type"] = "Bogus"
    dev.write_text(json.dumps(sents))
    with pytest.raises(DataError) as err:
        tb.load_split("conll04", "dev", data_dir=cache)
    msg = str(err.value)
    assert "conll04_dev.json" in msg and "sentence 2" in msg and "entities[0].type" in msg


def _fake_ace(root: Path, n_dev: int = 2) -> Path:
    # Tiny invented documents in ACE05's PURE layout (never real ACE data).
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 3), ("dev", n_dev), ("test", 1)):
        lines = []
        for i in range(n):
            lines.append(json.dumps({
                "doc_key": f"{split}_{i}",
                "sentences": [["Kim", "visited", "Oslo", "."], ["She", "met", "her", "brother", "."]],
                "ner": [[[0, 0, "PER"], [2, 2, "GPE"]], [[4, 4, "PER"], [6, 7, "PER"]]],
                "relations": [[[0, 0, 2, 2, "PHYS"]], [[4, 4, 6, 7, "PER-SOC"]]],
            }))
        (root / f"{split}.json").write_text("\n".join(lines) + "\n")
    return root


def test_ace05_from_manual_dir(tmp_path):
    cache = tmp_path / "tfds"
    with pytest.raises(DataError, match="manual_dir"):
        tb.load_split("ace05", "dev", data_dir=cache)  # nothing built, nothing given

    manual = _fake_ace(tmp_path / "ace")
    labels = load_labels(DATA / "ace05" / "labels.json")
    docs = tb.load_split("ace05", "dev", data_dir=cache, manual_dir=manual)
    assert docs == read_pure(manual / "dev.json", labels) and len(docs) == 2
    assert docs[0].sentences[1].relations[0].head == (0, 0)  # doc-level 4 -> sentence-level 0

    # Once built, the cache serves without the manual directory ...
    assert tb.load_split("ace05", "dev", data_dir=cache) == docs
    # ... and a changed manual directory triggers a rebuild.
    _fake_ace(manual, n_dev=4)
    assert len(tb.load_split("ace05", "dev", data_dir=cache, manual_dir=manual)) == 4


def test_ace05_unknown_type_fails_build(tmp_path):
    manual = _fake_ace(tmp_path / "ace")
    (manual / "test.json").write_text(json.dumps({"doc_key": "x", "sentences": [["a"]], "ner": [[[0, 0, "ANIMAL"]]],
                                                  "relations": [[]]}) + "\n")
    with pytest.raises(DataError) as err:
        tb.load_split("ace05", "train", data_dir=tmp_path / "tfds", manual_dir=manual)
    msg = str(err.value)
    assert "test.json" in msg and "line 1" in msg and "ner[0][0]" in msg and "ANIMAL" in msg


def test_builder_names_and_errors(tmp_path, monkeypatch):
    assert tb.builder_name("scierc") == "lai_scierc"
    assert tb.builder_name("conll04") == "lai_conll04"
    assert tb.builder_name("ace05") == "lai_ace05"
    assert tb.builder_name("ade", None) == "lai_ade"
    with pytest.raises(ValueError, match="unknown dataset"):
        tb.builder_name("ace04")
    with pytest.raises(ValueError, match="no folds"):
        tb.builder_name("scierc", 1)
    with pytest.raises(ValueError, match="0..9"):
        tb.load_split("ade", "test", data_dir=tmp_path, fold=10)
    with pytest.raises(ValueError, match="no folds"):
        tb.load_split("conll04", "test", data_dir=tmp_path, fold=2)
    # tfds resolves our names to our classes (a clash with a tfds dataset would have failed at import).
    for dataset, cls in tb.DATASETS.items():
        assert tfds.builder_cls(tb.builder_name(dataset)) is cls
    monkeypatch.setenv("LAI_JAX_TFDS_DIR", str(tmp_path / "cache"))
    assert tb.default_tfds_dir() == tmp_path / "cache"


def test_data_checked_against_the_configs_label_file(tmp_path):
    # Training's config.data.labels reaches the builder: a label file that lacks a gold type fails the
    # build (naming the source file, the record and the field, and the label file) instead of mapping it.
    cache = tmp_path / "tfds"
    bundled = json.loads((DATA / "conll04" / "labels.json").read_text())
    custom = dict(bundled, entities={k: v for k, v in bundled["entities"].items() if k != "Other"})
    path = tmp_path / "no_other.json"
    path.write_text(json.dumps(custom))
    with pytest.raises(DataError) as err:
        tb.load_split("conll04", "dev", data_dir=cache, labels_path=path)
    msg = str(err.value)
    # every split is read before anything is written, train first
    assert "conll04_train.json" in msg and "sentence" in msg and "entities[" in msg and "'Other'" in msg
    assert str(path) in msg
    # A label file that knows every type (here: other annotations) builds, and the default is the staged one.
    renamed = dict(bundled, entities={k: f"{v} (edited)" for k, v in bundled["entities"].items()})
    path.write_text(json.dumps(renamed))
    docs = tb.load_split("conll04", "dev", data_dir=cache, labels_path=path)
    assert docs == _direct("conll04", "conll04_dev.json")
    assert tb.load_split("conll04", "dev", data_dir=cache) == docs
    assert tb.get_builder("conll04", data_dir=cache, labels_path=path).labels_path() == path
