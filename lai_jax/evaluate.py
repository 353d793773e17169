"""Restore a run's best checkpoint and score it on a split.

    python -m lai_jax.evaluate --workdir=runs/scierc_ner --split=test

Writes <workdir>/predictions/<split>.jsonl (PURE JSON, what an RE run's `re.entities_from` reads) and
<workdir>/eval_<split>.json.
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import ml_collections
from absl import app, flags

from lai_jax import metrics as metrics_lib

FLAGS = flags.FLAGS


def load_config(workdir: str | Path) -> ml_collections.ConfigDict:
    path = Path(workdir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {workdir} a lai-jax training workdir?")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def restore_run(workdir: str | Path):
    """(setup, runner, device state of the best checkpoint) for a finished or running workdir."""
    from lai_jax import checkpoints, train
    from lai_jax.data import features
    from lai_jax.parallel import Runner
    from lai_jax.steps import bind_steps
    config = load_config(workdir)
    setup = train.build(config)
    sample = features.stack(train.instances_for(setup, [train.dummy_document()])[:1])
    runner = Runner(config.parallel, *bind_steps(setup.model, config.phase))
    # Only shapes are needed to restore against: eval_shape skips compiling and running the init.
    state = jax.eval_shape(lambda: train.init_state(setup, sample, total_steps=1))
    state = checkpoints.Checkpoints(Path(workdir) / "checkpoints").restore_best(state)
    return setup, runner, runner.put_state(state)


def evaluate_split(workdir: str | Path, split: str) -> dict:
    """Score the best checkpoint on `split` (a split name of the run's dataset: train/dev/test)."""
    from lai_jax import train
    setup, runner, state = restore_run(workdir)
    config = setup.config
    docs = train.load_splits(config, setup.labels)
    key = {config.data.train_split: "train", config.data.dev_split or "dev": "dev", config.data.test_split: "test"}.get(split)
    if key is None:
        raise ValueError(f"unknown split {split!r}; this run has {config.data.train_split}/"
                         f"{config.data.dev_split or 'dev'}/{config.data.test_split}")
    ents = train.predicted_entities(config, key, docs[key]) if config.phase == "re" else None
    pred, result = train.evaluate_docs(runner, state, setup, docs[key], ents, split)
    train.write_predictions(Path(workdir) / "predictions" / f"{split}.jsonl", pred)
    (Path(workdir) / f"eval_{split}.json").write_text(json.dumps(result, indent=2))
    return result


def ensure_predictions(workdir: str | Path, split: str) -> Path:
    """The NER run's predictions for `split`, produced from its best checkpoint if not yet written."""
    path = Path(workdir) / "predictions" / f"{split}.jsonl"
    if not path.exists():
        evaluate_split(workdir, split)
    return path


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from lai_jax.cli import setup_logging
    setup_logging()
    result = evaluate_split(FLAGS.workdir, FLAGS.split)
    print(metrics_lib.format_table(result))


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "Training workdir (holds config.json and checkpoints/).", required=True)
    flags.DEFINE_string("split", "test", "Split to score: train, dev or test (the run's split names).")
    app.run(main)
