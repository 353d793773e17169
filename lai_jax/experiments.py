"""Multi-seed and cross-validation drivers: run NER then end-to-end RE per (fold, seed), then a mean ± std table.

    python -m lai_jax.experiments --config=configs/ade.py --folds=0-9 --seeds=0 --workdir=runs/ade_cv
    python -m lai_jax.experiments --config=configs/scierc.py --seeds=0,1,2,3,4 --workdir=runs/scierc_seeds \
        --override=encoder=/models/scibert_scivocab_uncased

Each run is a separate `lai_jax.main` process (a crash loses one run, not the sweep) and is skipped when
its results.json already exists, so an interrupted sweep continues where it stopped. Model selection is
on dev inside each run; the table reports test scores of the dev-selected checkpoints.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Sequence

from absl import app, flags

from lai_jax.config_base import load_config_file

FLAGS = flags.FLAGS
TASKS = ("ner", "re", "re+")
CHAIN = Path(__file__).resolve().parents[1] / "launch" / "ner_re.sh"


def parse_range(text: str) -> list[int]:
    """'0-9' -> [0..9]; '0,2,5' -> [0, 2, 5]."""
    out: list[int] = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def run_dir(root: Path, fold: int | None, seed: int) -> Path:
    return root / (f"fold{fold}_seed{seed}" if fold is not None else f"seed{seed}")


def run_one(config: str, root: Path, fold: int | None, seed: int, overrides: Sequence[str]) -> None:
    """NER then RE (on the NER run's predictions) for one fold and seed through `launch/ner_re.sh`, the one NER -> RE
    chain (it skips a phase whose results.json exists)."""
    extra = [f"--config.seed={seed}"] + ([f"--config.data.fold={fold}"] if fold is not None else [])
    extra += [f"--config.{o}" for o in overrides]
    cmd = ["bash", str(CHAIN), config, str(run_dir(root, fold, seed)), *extra]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHON": sys.executable})


def collect(root: Path, runs: Iterable[Path], average: str) -> dict:
    """Test P/R/F1 of every finished run and their mean ± std (NER from the NER run, RE/RE+ end to end)."""
    rows = []
    for d in runs:
        ner, re_ = d / "ner" / "results.json", d / "re" / "results.json"
        if not (ner.exists() and re_.exists()):
            continue
        ner_res, re_res = json.loads(ner.read_text())["test"], json.loads(re_.read_text())["test"]
        rows.append({"run": d.name, "ner": ner_res["ner"][average]["f1"], "re": re_res["re"][average]["f1"],
                     "re+": re_res["re+"][average]["f1"]})
    summary = {}
    for task in TASKS:
        vals = [100 * r[task] for r in rows]
        summary[task] = {"mean": statistics.fmean(vals) if vals else None,
                         "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}
    return {"average": average, "runs": rows, "summary": summary}


def format_summary(result: dict) -> str:
    lines = [f"test F1 ({result['average']}), {result['summary']['ner']['n']} run(s)", "run              NER     RE    RE+"]
    for r in result["runs"]:
        lines.append(f"{r['run']:<14} {100 * r['ner']:6.2f} {100 * r['re']:6.2f} {100 * r['re+']:6.2f}")
    cells = [f"{s['mean']:.2f} ± {s['std']:.2f}" if s["mean"] is not None else "-" for s in result["summary"].values()]
    lines.append("mean ± std     " + "  ".join(cells))
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    root = Path(FLAGS.workdir)
    folds: list[int | None] = parse_range(FLAGS.folds) if FLAGS.folds else [None]
    seeds = parse_range(FLAGS.seeds)
    runs = [run_dir(root, f, s) for f in folds for s in seeds]
    if not FLAGS.summary_only:
        for f in folds:
            for s in seeds:
                run_one(FLAGS.config, root, f, s, FLAGS.override)
    average = FLAGS.average or load_config_file(FLAGS.config).eval.select_average
    result = collect(root, runs, average)
    (root / "summary.json").write_text(json.dumps(result, indent=2))
    print(format_summary(result))


if __name__ == "__main__":
    flags.DEFINE_string("config", None, "Dataset config file without phase, e.g. configs/ade.py.", required=True)
    flags.DEFINE_string("workdir", None, "Root folder; one sub-folder per fold/seed.", required=True)
    flags.DEFINE_string("folds", "", "Folds to run, e.g. 0-9 (ADE); empty = the config's single split.")
    flags.DEFINE_string("seeds", "0", "Seeds, e.g. 0-4 or 0,1,2.")
    flags.DEFINE_multi_string("override", [], "Extra config overrides without the --config. prefix, e.g. model.gcn_layers=3.")
    flags.DEFINE_enum("average", None, ["micro", "macro"], "Averaging; default: the config's eval.select_average "
                      "(the F1 that selected the checkpoints; macro for ADE).")
    flags.DEFINE_bool("summary_only", False, "Only aggregate the runs already finished.")
    app.run(main)
