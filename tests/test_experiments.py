import json

from lai_jax.experiments import collect, format_summary, parse_range, run_dir


def test_parse_range():
    assert parse_range("0-3") == [0, 1, 2, 3] and parse_range("1,4,6-7") == [1, 4, 6, 7]


def test_collect_mean_std_over_finished_runs(tmp_path):
    scores = [(0.80, 0.50, 0.40), (0.90, 0.70, 0.60)]
    for seed, (ner, re_, rep) in enumerate(scores):
        d = run_dir(tmp_path, 3, seed)
        for phase, res in (("ner", {"ner": ner}), ("re", {"re": re_, "re+": rep})):
            (d / phase).mkdir(parents=True)
            test = {k: {"micro": {"f1": v}, "macro": {"f1": v / 2}} for k, v in res.items()}
            (d / phase / "results.json").write_text(json.dumps({"test": test}))
    unfinished = run_dir(tmp_path, 3, 9)
    out = collect(tmp_path, [run_dir(tmp_path, 3, 0), run_dir(tmp_path, 3, 1), unfinished], "micro")
    assert out["summary"]["ner"]["n"] == 2
    assert abs(out["summary"]["ner"]["mean"] - 85.0) < 1e-9
    assert abs(out["summary"]["re"]["std"] - 14.142135623730951) < 1e-9  # stdev(50, 70)
    macro = collect(tmp_path, [run_dir(tmp_path, 3, 0)], "macro")
    assert abs(macro["summary"]["re+"]["mean"] - 20.0) < 1e-9
    assert "85.00 ± 7.07" in format_summary(out)


def test_run_one_goes_through_the_chain_script_which_skips_finished_phases(tmp_path, capfd):
    """experiments.run_one calls launch/ner_re.sh (the one NER -> RE chain); finished phases are not rerun."""
    from lai_jax.experiments import run_one
    d = run_dir(tmp_path, None, 0)
    f1 = {"micro": {"f1": 0.5}, "macro": {"f1": 0.25}}
    for phase in ("ner", "re"):
        (d / phase).mkdir(parents=True)
        split = {"ner": f1, "re": f1, "re+": f1}
        (d / phase / "results.json").write_text(json.dumps({"dataset": "conll04", "wall_s": 6, "dev": split,
                                                             "test": split}))
    run_one("configs/quick.py", tmp_path, None, 0, [])
    out, err = capfd.readouterr()
    assert "skipping the ner phase" in err and "skipping the re phase" in err
    assert "NER 50.00 (25.00)" in out  # lai_jax.summary ran on the run's folder


def test_chain_passes_prefixed_arguments_to_one_phase(tmp_path):
    """launch/ner_re.sh: plain extra arguments reach both phases, `ner:` / `re:` ones only their phase."""
    import os
    import subprocess
    from lai_jax.experiments import CHAIN
    fake = tmp_path / "python"  # records each command line instead of training
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {tmp_path / "calls"}\n')
    fake.chmod(0o755)
    subprocess.run(["bash", str(CHAIN), "configs/quick.py", str(tmp_path / "out"), "--config.seed=3",
                    "ner:--config.num_epochs=7", "re:--config.optim.learning_rate=3e-3"],
                   check=True, env={**os.environ, "PYTHON": str(fake)})
    ner, re_, summary = (tmp_path / "calls").read_text().splitlines()
    out = tmp_path / "out"
    assert ner.split() == ["-m", "lai_jax.main", "--config=configs/quick.py:ner", f"--workdir={out / 'ner'}",
                           "--config.seed=3", "--config.num_epochs=7"]
    assert re_.split() == ["-m", "lai_jax.main", "--config=configs/quick.py:re", f"--workdir={out / 're'}",
                           f"--config.re.entities_from={out / 'ner'}", "--config.seed=3",
                           "--config.optim.learning_rate=3e-3"]
    assert summary.split() == ["-m", "lai_jax.summary", str(out)]
