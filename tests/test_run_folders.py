"""Run folders a user can rely on: moved or copied runs still work from any folder, a resume refuses a changed
config, `evaluate` never overwrites a run's predictions unless told to, and user errors are one line."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, tiny_config
from lai_jax import evaluate, train
from lai_jax.cli import UserError

ENV = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
FAST = {"max_steps": 2, "data.train_limit": 16, "data.eval_limit": 8, "batch_size": 4, "eval_every_steps": 2,
        "max_candidates": 32, "max_text_len": 32, "model.gcn_layers": 0, "data.use_tfds": False}


def cli(args, cwd=REPO, env=None, stdin=""):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env or ENV, input=stdin, capture_output=True,
                          text=True, timeout=600)


def assert_one_error_line(proc, *needles):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and lines[-1].startswith("error: "), proc.stderr[-3000:]
    assert sum(line.startswith("error: ") for line in lines) == 1
    for needle in needles:
        assert needle in lines[-1], lines[-1]


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_bert):
    """A tiny NER run and an end-to-end RE run under runs/{ner,re}, trained from their parent folder with the
    cwd-relative `--config.re.entities_from=runs/ner` a user would type."""
    root = tmp_path_factory.mktemp("pair")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        train.train_and_evaluate(tiny_config("ner", tiny_bert, **FAST), "runs/ner")
        train.train_and_evaluate(tiny_config("re", tiny_bert, **FAST, **{"re.entities_from": "runs/ner"}), "runs/re")
    finally:
        os.chdir(cwd)
    return root / "runs"


def test_moved_runs_evaluate_and_predict_from_any_folder(pair, tmp_path, monkeypatch):
    assert json.loads((pair / "re" / "config.json").read_text())["re"]["entities_from"] == "../ner"
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(pair, moved)
    (tmp_path / "third").mkdir()
    monkeypatch.chdir(tmp_path / "third")
    own = json.loads((moved / "re" / "results.json").read_text())["test"]
    assert evaluate.evaluate_split(moved / "re", "test") == own  # the copied NER run's entities, from elsewhere
    sweep = evaluate.sweep_split(moved / "re", "dev", "re.threshold", [0.3, 0.7], {"re.re_decode": "sum"})
    assert "re.re_decode=sum" in sweep["ignored"]  # PL-Marker's sum rule has no threshold
    proc = cli(["-m", "lai_jax.predict", f"--ner={moved / 'ner'}", f"--re={moved / 're'}", "--input=-",
                "--output=-"], cwd=tmp_path / "third", stdin="John Smith works for Acme Corp in Boston .\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "relations" in json.loads(proc.stdout.splitlines()[0])


def test_evaluate_writes_under_eval_unless_told_to_write(pair, tmp_path):
    run = tmp_path / "ner"
    shutil.copytree(pair / "ner", run)
    own = (run / "predictions" / "dev.jsonl").read_bytes()
    result = evaluate.evaluate_split(run, "dev", {"ner.filter_threshold": 1.0})
    assert result["ner"]["micro"]["n_pred"] == 0 and set(result) == {"ner"}  # a NER run has no RE scores
    assert (run / "predictions" / "dev.jsonl").read_bytes() == own  # the run's own predictions are untouched
    assert json.loads((run / "eval" / "dev.json").read_text())["overrides"] == {"ner.filter_threshold": 1.0}
    assert (run / "eval" / "dev.jsonl").exists() and (run / "eval" / "dev.settings.json").exists()
    evaluate.evaluate_split(run, "dev", {"ner.filter_threshold": 1.0}, write=True)
    assert (run / "predictions" / "dev.jsonl").read_bytes() != own
    assert json.loads((run / "predictions" / "dev.settings.json").read_text())["ner.filter_threshold"] == 1.0
    assert not list((run / "predictions").glob("*.tmp"))
    assert "re" not in json.loads((run / "results.json").read_text())["test"]
    assert "a NER run decodes no relations" in evaluate.ignored_because(evaluate.load_run_config(run), "re.threshold")


def test_evaluate_overrides_and_splits_are_checked_before_restoring():
    with pytest.raises(UserError, match=r"ner.filter_threshold=7.0: must be in \[0, 1\]"):
        evaluate.parse_overrides(["ner.filter_threshold=7"])
    with pytest.raises(UserError, match="ner.overlap='bogus': expected one of plmarker, flat, none"):
        evaluate.parse_overrides(["ner.overlap=bogus"])
    with pytest.raises(UserError, match="fix the trained model"):
        evaluate.parse_overrides(["model.gcn_layers=1"])
    assert evaluate.parse_overrides(["re.entities_from=runs/x"]) == {"re.entities_from": os.path.abspath("runs/x")}
    with pytest.raises(UserError, match="--split=validation: unknown split"):
        evaluate._split_key(tiny_config("ner", "default"), "validation")


def test_resume_refuses_a_changed_config_and_keeps_the_log_clean(pair, tmp_path, tiny_bert):
    run = tmp_path / "ner"
    shutil.copytree(pair / "ner", run)
    saved = (run / "config.json").read_text()
    changed = tiny_config("ner", tiny_bert, **FAST, seed=7, **{"optim.learning_rate": 0.1})
    with pytest.raises(UserError) as e:
        train.train_and_evaluate(changed, str(run))
    msg = str(e.value)
    assert "seed 0 -> 7" in msg and "optim.learning_rate 0.003 -> 0.1" in msg and "checkpointed at step 2" in msg
    assert "--resume=force" in msg and "another --workdir" in msg and "max_steps" not in msg
    assert (run / "config.json").read_text() == saved
    # Fields that only change logging may differ; records logged after the checkpoint (before a kill) are dropped.
    def step_records():
        return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "step" in r]
    logged = step_records()
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "loss": 1.0}) + "\n" + '{"step": 4, "lo')
    same = tiny_config("ner", tiny_bert, **FAST, log_every_steps=5, prefetch_batches=0)
    assert train.config_changes(train.load_run_config(run), same) == {}
    train.train_and_evaluate(same, str(run))
    assert step_records() == logged and max(r["step"] for r in logged) == 2
    saved = (run / "config.json").read_text()
    train.train_and_evaluate(changed, str(run), resume="force")
    assert json.loads((run / "config.json").read_text())["seed"] == 7
    assert (run / "config.step2.json").read_text() == saved


@pytest.mark.parametrize("overrides, needle", [
    ({"num_epochs": -1}, "num_epochs=-1: must be >= 1"),
    ({"re.threshold": 1.5}, "re.threshold=1.5: must be in [0, 1]"),
    ({"attention_mask": "partial"}, "attention_mask='partial': expected one of invisible"),
    ({"batch_size": 6, "grad_accum_steps": 4}, "batch_size=6 must be a positive multiple"),
    ({"model.gcn_heads": 3}, "gcn_heads must be one of (1, 2, 3, 4, 6) and divide hidden=32"),
    ({"encoder": "/nonexistent/bert"}, "'/nonexistent/bert' is not a model directory"),
])
def test_bad_values_are_refused_before_anything_is_written(tiny_bert, tmp_path, overrides, needle):
    config = tiny_config("ner", tiny_bert, **{"model.gcn_layers": 1, **overrides})
    with pytest.raises((UserError, FileNotFoundError)) as e:
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert needle in str(e.value)
    assert not (tmp_path / "run").exists()


def test_bad_data_is_refused_before_anything_is_written(tiny_bert, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    good = {"doc_key": "d", "sentences": [["John", "works", "."]], "ner": [[[0, 0, "Peop"]]], "relations": [[]]}
    for split in ("dev", "test"):
        (data / f"{split}.json").write_text(json.dumps(good) + "\n")
    (data / "train.json").write_text(json.dumps(good) + "\n" + json.dumps({**good, "ner": [[[2, 1, "Peop"]]]}) + "\n")
    (tmp_path / "run").mkdir()
    config = tiny_config("ner", tiny_bert, dataset="custom", **{"data.dir": str(data),
                                                              "data.labels": str(REPO / "data/conll04/labels.json")})
    with pytest.raises(UserError, match=r"train.json: line 2 \(doc_key 'd'\): field 'ner\[0\]\[0\]': reversed"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not list((tmp_path / "run").iterdir())


def test_cli_errors_are_one_line_with_status_2(tmp_path):
    """Through the commands themselves: flags (an unknown field, a missing file), a run folder that is not one,
    and the traceback on demand. Each fails before any model is built."""
    main = ["-m", "lai_jax.main", f"--workdir={tmp_path / 'run'}"]
    assert_one_error_line(cli(main + ["--config=configs/quick.py:ner", "--config.model.gcn_head=2"]),
                          "--config.model.gcn_head=2", "did you mean model.gcn_heads or model.gcn_edges?")
    assert_one_error_line(cli(main + ["--config=configs/nope.py:ner"]), "config file 'configs/nope.py' not found")
    assert not (tmp_path / "run").exists()
    assert_one_error_line(cli(["-m", "lai_jax.evaluate", f"--workdir={tmp_path}"]),
                          f"{tmp_path} is not a lai-jax training workdir (no config.json)")
    debug = cli(["-m", "lai_jax.evaluate", f"--workdir={tmp_path}"], env={**ENV, "LAI_JAX_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_flag_errors_name_the_flag():
    """A config file's own error (a bad phase) comes wrapped in its traceback by config_flags: one line is kept."""
    from ml_collections.config_flags import config_flags
    from lai_jax.cli import _flag_message
    argv = ["main", "--config=configs/quick.py:nre"]
    with pytest.raises(ValueError) as e:
        config_flags.ConfigFileFlagParser("config").parse("configs/quick.py:nre")
    assert _flag_message(argv, e.value) == ("--config=configs/quick.py:nre: phase must be one of ('ner', 're') "
                                            "(as in --config=configs/conll04.py:ner), got 'nre'")
    argv = ["main", "--config=configs/quick.py:re", "--config.re.treshold=0.3"]
    assert _flag_message(argv, KeyError("'treshold'")).startswith(
        "--config.re.treshold=0.3: unknown config field 're.treshold' in re; did you mean re.threshold?")


def test_damaged_checkpoints_fall_back_or_name_the_folder_from_the_cli(pair, tmp_path):
    """evaluate and predict, as a user runs them, after a file of the best checkpoint is truncated: a warning line
    per unreadable checkpoint, then the result or one `error:` line, and nothing else (orbax's concurrent reads of
    a damaged checkpoint leave tracebacks that lai-jax drops)."""
    from tests.test_checkpoints import truncate
    run = tmp_path / "ner"
    shutil.copytree(pair / "ner", run)
    (best,) = sorted((run / "checkpoints" / "params").iterdir())
    truncate(best)
    proc = cli(["-m", "lai_jax.evaluate", f"--workdir={run}", "--split=dev"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"checkpoint {best} cannot be restored" in proc.stderr  # named; the same step's full state is read
    assert "Traceback" not in proc.stderr and "never retrieved" not in proc.stderr, proc.stderr[-3000:]
    assert json.loads((run / "eval" / "dev.json").read_text()) == json.loads((run / "results.json").read_text())["dev"]
    for state in (run / "checkpoints" / "state").iterdir():
        truncate(state)
    for args, prefix in ((["-m", "lai_jax.evaluate", f"--workdir={run}"], "error: "),
                         (["-m", "lai_jax.predict", f"--ner={run}", "--input=-", "--output=-"], "lai_jax.predict: error: ")):
        proc = cli(args, stdin="John Smith works .\n")
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, proc.stderr[-3000:]
        errors = [line for line in lines if line.startswith(prefix)]
        assert len(errors) == 1 and f"Delete {run / 'checkpoints'} and train again" in errors[0], proc.stderr[-3000:]
        assert lines[-1] == errors[0] and all("cannot be restored" in line for line in lines[:-1]), proc.stderr[-3000:]


def test_type_constraints_decode_with_the_signatures_of_the_training_relations(pair, tmp_path):
    from lai_jax import input_pipeline, run_record
    from lai_jax.config_base import load_run_config
    runs = shutil.copytree(pair, tmp_path / "runs")
    run = runs / "re"
    record = json.loads((run / "run.json").read_text())
    recorded = record["training_data"]["relation_signatures"]
    config = load_run_config(run)
    setup, _, _ = evaluate.restore_run(run)
    train_docs = input_pipeline.load_splits(config, setup.labels)["train"]
    assert recorded and frozenset(map(tuple, recorded)) == run_record.signatures(train_docs)
    assert setup.signatures == frozenset(map(tuple, recorded))
    # A run made before they were recorded: worked out from its training split, the same.
    del record["training_data"]["relation_signatures"]
    (run / "run.json").write_text(json.dumps(record))
    assert evaluate.restore_run(run)[0].signatures == setup.signatures
    sweep = evaluate.sweep_split(run, "dev", "re.type_constraints", [False, True])
    assert sweep["ignored"] is None and [r["value"] for r in sweep["runs"]] == [False, True]
    free, constrained = (r["result"]["re"]["micro"]["n_pred"] for r in sweep["runs"])
    assert constrained <= free
    assert "re.type_constraints is ignored" in evaluate.ignored_because(load_run_config(runs / "ner"),
                                                                         "re.type_constraints")
