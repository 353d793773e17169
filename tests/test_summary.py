"""`python -m lai_jax.summary`: the NER -> RE chain's one-screen scores, read from the two results files."""
import json

from lai_jax.summary import summarize


def _prf(f1):
    return {"micro": {"f1": f1}, "macro": {"f1": f1 / 2}}


def test_summary_reads_ner_from_the_ner_run_and_relations_from_the_re_run(tmp_path):
    for phase, split_scores in (("ner", {"dev": 0.5, "test": 0.6}), ("re", {"dev": 0.2, "test": 0.3})):
        (tmp_path / phase).mkdir()
        res = {"dataset": "conll04", "wall_s": 60.0}
        for split, f1 in split_scores.items():
            # The RE run's own NER row would be the given entities' score: it must not be shown. A NER run's
            # results have no relation scores.
            res[split] = ({"ner": _prf(f1)} if phase == "ner" else
                          {"ner": _prf(0.99), "re": _prf(f1), "re+": _prf(f1 - 0.1)})
        (tmp_path / phase / "results.json").write_text(json.dumps(res))
    text = summarize(tmp_path)
    assert "training + evaluation 2.0 min" in text
    assert "test  NER 60.00 (30.00)   RE 30.00 (15.00)   RE+ 20.00 (10.00)" in text
    assert "dev   NER 50.00 (25.00)" in text and "99.00" not in text
