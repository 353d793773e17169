"""README "Training on your own data": its worked example, read from the README, trains and predicts."""
from __future__ import annotations

import json
import re
import shlex

import pytest

from tests.conftest import REPO, tiny_config

SECTION = "## Training on your own data"


def _section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return text[start:end]


def _blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def _commands(section: str, tmp, module: str) -> list[list[str]]:
    """The README's `python -m <module>` command lines, split into arguments, my_data and runs/ under tmp."""
    out = []
    for line in _blocks(section, "bash")[0].splitlines():
        line = line.split("|")[-1].strip()
        if line.startswith(f"python -m {module} "):
            line = line.replace("my_data", str(tmp / "my_data")).replace("runs/", f"{tmp}/runs/")
            out.append(shlex.split(line)[3:])
    return out


def _flags(args: list[str], prefix: str) -> dict[str, str]:
    return dict(a[len(prefix):].split("=", 1) for a in args if a.startswith(prefix))


def _config(args: list[str], tiny_bert: str):
    """The config the README's main command builds, with a tiny encoder and two steps instead of a real run."""
    from lai_jax.config_base import load_config_file, parse_assignment, set_fields
    file, phase = _flags(args, "--")["config"].split(":")
    config = load_config_file(REPO / file, phase)
    for item in (f"{k}={v}" for k, v in _flags(args, "--config.").items()):
        set_fields(config, **dict([parse_assignment(config, item)]))
    tiny = tiny_config(phase, tiny_bert, max_steps=2, eval_every_steps=2, max_candidates=16, max_text_len=24,
                       **{"model.gcn_layers": 0})
    keep = ("dataset", "data.dir", "data.labels", "re.entities_from")
    return set_fields(tiny, **{k: _get(config, k) for k in keep}), _flags(args, "--")["workdir"]


def _get(config, key: str):
    for part in key.split("."):
        config = config[part]
    return config


def test_readme_custom_dataset_example_trains_and_predicts(tmp_path, tiny_bert):
    from lai_jax import Extractor, train
    section = _section()
    labels_json, doc_line = _blocks(section, "json")
    data = tmp_path / "my_data"
    data.mkdir()
    (data / "labels.json").write_text(labels_json)
    doc = json.loads(doc_line)
    for split, n in (("train", 8), ("dev", 2), ("test", 2)):
        lines = [json.dumps({**doc, "doc_key": f"{split}{i}"}) for i in range(n)]
        (data / f"{split}.json").write_text("\n".join(lines) + "\n")

    mains = _commands(section, tmp_path, "lai_jax.main")
    assert [_flags(a, "--")["config"].split(":")[1] for a in mains] == ["ner", "re"]
    for args in mains:
        config, workdir = _config(args, tiny_bert)
        assert config.dataset == "custom" and config.data.labels.endswith("my_data/labels.json")
        results = train.train_and_evaluate(config, workdir)
        assert results["steps"] == 2 and results["test"]["ner"]["micro"]["f1"] >= 0

    predict_args = _flags(_commands(section, tmp_path, "lai_jax.predict")[0], "--")
    ex = Extractor.load(ner=predict_args["ner"], re=predict_args["re"])
    out = ex.predict(["Aspirin caused a rash."])
    assert out[0]["tokens"] == [["Aspirin", "caused", "a", "rash", "."]]
    assert {e["type"] for e in out[0]["entities"]} <= {"Drug", "Effect"} and "relations" in out[0]
    # The example's documents have two sentences: the runs record that they were trained with context.
    assert ex.ner.document_context and ex.re.document_context


def test_custom_dataset_without_labels_says_to_pass_them(tmp_path, tiny_bert):
    from lai_jax import input_pipeline
    config = tiny_config("ner", tiny_bert, dataset="custom", **{"data.dir": str(tmp_path)})
    with pytest.raises(ValueError, match=r"--config.data.labels="):
        input_pipeline.labels_path(config)
