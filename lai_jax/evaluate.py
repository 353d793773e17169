"""Restore a run's best checkpoint and score it on a split.

    python -m lai_jax.evaluate --workdir=runs/scierc_ner --split=test

Writes <workdir>/predictions/<split>.jsonl (PURE JSON, what an RE run's `re.entities_from` reads), the settings
it was decoded with in <workdir>/predictions/<split>.settings.json, and <workdir>/eval_<split>.json. Decoding
settings can be changed without retraining, e.g. to pick the entity filter threshold on dev (an RE run refuses
NER dev and test predictions decoded with different settings, so rewrite both splits with the chosen value):

    python -m lai_jax.evaluate --workdir=runs/scierc_ner --split=dev --sweep=ner.filter_threshold=0.1,0.2,0.3,0.5
    python -m lai_jax.evaluate --workdir=runs/scierc_ner --split=dev --set=ner.filter_threshold=0.3
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import jax
import ml_collections
from absl import app, flags

from lai_jax import metrics as metrics_lib

FLAGS = flags.FLAGS
log = logging.getLogger("lai_jax")


def load_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """A run's saved config, laid over today's defaults so workdirs written before a field existed still load."""
    from lai_jax.config_base import base_config

    path = Path(workdir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {workdir} a lai-jax training workdir?")
    saved = json.loads(path.read_text())
    _upgrade(saved)
    try:
        config = base_config(saved["dataset"], saved["phase"])
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path}: not a lai-jax run config ({e})") from None
    with config.unlocked():
        _merge(config, saved)
    if "holdout_seed" not in saved.get("data", {}):  # written when the dev hold-out followed the training seed
        config.data.holdout_seed = config.seed
    return config


def _upgrade(saved: dict) -> None:
    """Renamed fields of older saved configs: ner.flat_ner (bool) is now ner.overlap ("flat" / "none")."""
    ner = saved.get("ner")
    if isinstance(ner, dict) and "flat_ner" in ner:
        flat = ner.pop("flat_ner")
        ner.setdefault("overlap", "flat" if flat else "none")  # the rule that run was decoded with


def _merge(config: ml_collections.ConfigDict, saved: dict) -> None:
    for key, value in saved.items():
        if isinstance(value, dict) and isinstance(config.get(key), ml_collections.ConfigDict):
            _merge(config[key], value)
        else:
            config[key] = value


def restore_run(workdir: str | Path):
    """(setup, runner, device state of the best checkpoint) for a finished or running workdir."""
    from lai_jax import checkpoints, train
    from lai_jax.data import features
    from lai_jax.parallel import Runner
    from lai_jax.steps import bind_steps
    config = load_config(workdir)
    setup = train.build(config)
    sample = features.stack(train.instances_for(setup, [train.dummy_document(setup.labels.entity_types[0])])[:1])
    runner = Runner(config.parallel, *bind_steps(setup.model, config.phase))
    # Only shapes are needed to restore against: eval_shape skips compiling and running the init.
    state = jax.eval_shape(lambda: train.init_state(setup, sample, total_steps=1))
    state = checkpoints.Checkpoints(Path(workdir) / "checkpoints").restore_best(state)
    return setup, runner, runner.put_state(state)


# Fields that change decoding only, so they may differ from training (`--set`): tune them on dev.
DECODE_FIELDS = ("ner.filter_threshold", "ner.overlap", "re.threshold", "re.re_decode", "re.entities_from",
                 "eval.symmetric_count", "per_device_eval_batch_size")


def parse_overrides(items: list[str] | None) -> dict[str, object]:
    """["ner.filter_threshold=0.3", ...] -> {field: value}, typed like the default; only `DECODE_FIELDS`."""
    from lai_jax.config_base import base_config, parse_assignment

    defaults, out = base_config("scierc", "ner"), {}
    for item in items or []:
        if item.partition("=")[0] not in DECODE_FIELDS:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(DECODE_FIELDS)} "
                             "(the other fields fix the trained model)")
        try:
            key, value = parse_assignment(defaults, item)
        except ValueError as e:
            raise ValueError(f"--set {e}") from None
        out[key] = value
    return out


def _restore_split(workdir: str | Path, split: str, overrides: dict | None):
    """(setup, runner, state, gold docs, given entities or None) for scoring `split` of a run."""
    from lai_jax import train
    from lai_jax.config_base import set_fields
    setup, runner, state = restore_run(workdir)
    config = setup.config
    if overrides:
        set_fields(config, **overrides)
        train.check_choices(config)
    docs = train.load_splits(config, setup.labels)
    key = {config.data.train_split: "train", config.data.dev_split or "dev": "dev", config.data.test_split: "test"}.get(split)
    if key is None:
        raise ValueError(f"unknown split {split!r}; this run has {config.data.train_split}/"
                         f"{config.data.dev_split or 'dev'}/{config.data.test_split}")
    ents = train.predicted_entities(config, key, docs[key]) if config.phase == "re" else None
    return setup, runner, state, docs[key], ents


def evaluate_split(workdir: str | Path, split: str, overrides: dict | None = None) -> dict:
    """Score the best checkpoint on `split` (a split name of the run's dataset: train/dev/test).

    `overrides` ({field: value}, fields from `DECODE_FIELDS`) change decoding; they are recorded in the
    written ``eval_<split>.json`` and also apply to the predictions file it writes.
    """
    from lai_jax import checkpoints, train
    setup, runner, state, docs, ents = _restore_split(workdir, split, overrides)
    pred, result = train.evaluate_docs(runner, state, setup, docs, ents, split)
    step = checkpoints.Checkpoints(Path(workdir) / "checkpoints").best_step()
    path = Path(workdir) / "predictions" / f"{split}.jsonl"
    train.write_predictions(path, pred, train.prediction_settings(setup.config, step))
    try:
        check_predictions(workdir, setup.config)
    except ValueError as e:  # allowed (e.g. tuning on dev first), but RE would refuse these files
        log.warning("%s", e)
    record = {**result, "overrides": dict(overrides)} if overrides else result
    (Path(workdir) / f"eval_{split}.json").write_text(json.dumps(record, indent=2))
    return result


# Fields whose values can be compared from one forward pass (`--sweep`).
SWEEP_FIELDS = ("ner.filter_threshold", "ner.overlap", "re.threshold", "re.re_decode", "eval.symmetric_count")


def parse_sweep(item: str) -> tuple[str, list]:
    """"ner.filter_threshold=0.2,0.3" -> ("ner.filter_threshold", [0.2, 0.3]), typed like the default."""
    field, sep, values = item.partition("=")
    if not sep or field not in SWEEP_FIELDS or not values:
        raise ValueError(f"--sweep {item!r}: expected FIELD=V1,V2,... with FIELD one of {', '.join(SWEEP_FIELDS)}")
    return field, [parse_overrides([f"{field}={v}"])[field] for v in values.split(",")]


def sweep_split(workdir: str | Path, split: str, field: str, values: list, overrides: dict | None = None
                ) -> list[dict]:
    """Scores of `split` for each value of a decoding `field`, from a single forward pass of the best checkpoint.

    Writes ``eval_<split>_sweep.json`` (a list of {"value", "result"}); predictions files are not touched.
    """
    from lai_jax import train
    from lai_jax.config_base import set_fields
    setup, runner, state, docs, ents = _restore_split(workdir, split, overrides)
    instances = train.instances_for(setup, docs, ents)
    probs = train.run_eval(runner, state, setup, instances, split)
    out = []
    for value in values:
        set_fields(setup.config, **{field: value})
        train.check_choices(setup.config)
        pred = train.decode(setup, docs, instances, probs, ents)
        out.append({"value": value, "result": train.score_docs(setup, docs, pred)})
    record = {"field": field, "overrides": dict(overrides or {}), "runs": out}
    (Path(workdir) / f"eval_{split}_sweep.json").write_text(json.dumps(record, indent=2))
    return out


def format_sweep(field: str, runs: list[dict], tasks) -> str:
    """One row per value: micro P / R / F1 (%) of each task."""
    head = f"{field:<22}" + "".join(f"{t + ' P':>9}{t + ' R':>9}{t + ' F1':>9}" for t in tasks)
    rows = [head, "-" * len(head)]
    for run in runs:
        cells = "".join(f"{100 * run['result'][t]['micro'][k]:9.2f}" for t in tasks for k in ("p", "r", "f1"))
        rows.append(f"{str(run['value']):<22}{cells}")
    return "\n".join(rows)


def check_predictions(workdir: str | Path, config: ml_collections.ConfigDict | None = None) -> None:
    """Refuse a run whose dev and test predictions files were written with different settings."""
    from lai_jax import train
    config = config or load_config(workdir)
    names = dict.fromkeys([config.data.dev_split or "dev", config.data.test_split])
    train.check_prediction_settings([Path(workdir) / "predictions" / f"{name}.jsonl" for name in names])


def ensure_predictions(workdir: str | Path, split: str) -> Path:
    """The NER run's predictions for `split`, produced from its best checkpoint if not yet written.

    Raises ValueError when that run's dev and test predictions were written with different settings.
    """
    path = Path(workdir) / "predictions" / f"{split}.jsonl"
    if not path.exists():
        evaluate_split(workdir, split)
    check_predictions(workdir)
    return path


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from lai_jax.cli import setup_logging
    setup_logging()
    try:
        overrides = parse_overrides(FLAGS.set)
    except ValueError as e:
        raise app.UsageError(str(e))
    from lai_jax.train import table_tasks
    tasks = table_tasks(load_config(FLAGS.workdir))
    if FLAGS.sweep:
        try:
            field, values = parse_sweep(FLAGS.sweep)
        except ValueError as e:
            raise app.UsageError(str(e))
        print(format_sweep(field, sweep_split(FLAGS.workdir, FLAGS.split, field, values, overrides), tasks))
        return
    result = evaluate_split(FLAGS.workdir, FLAGS.split, overrides)
    print(metrics_lib.format_table(result, tasks))


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "Training workdir (holds config.json and checkpoints/).", required=True)
    flags.DEFINE_string("split", "test", "Split to score: train, dev or test (the run's split names).")
    flags.DEFINE_multi_string("set", [], "FIELD=VALUE decoding override, repeatable, e.g. "
                              "--set=ner.filter_threshold=0.3; FIELD one of " + ", ".join(DECODE_FIELDS) + ".")
    flags.DEFINE_string("sweep", None, "FIELD=V1,V2,...: score each value from one forward pass, print a table and "
                        "write eval_<split>_sweep.json (predictions untouched), e.g. "
                        "--sweep=ner.filter_threshold=0.1,0.2,0.3,0.5; FIELD one of " + ", ".join(SWEEP_FIELDS) + ".")
    app.run(main)
