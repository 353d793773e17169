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

import dataclasses
import json
import logging
from pathlib import Path
from typing import Optional

import jax
import ml_collections
import numpy as np
from absl import app, flags
from jax.experimental import multihost_utils

from lai_jax import checkpoints, compile_cache, evaluation, input_pipeline, metrics as metrics_lib, predictions
from lai_jax.build import Setup, build, check_choices, init_state
from lai_jax.config_base import base_config, load_run_config, parse_assignment, set_fields
from lai_jax.data.documents import Document
from lai_jax.data.labels import load_labels
from lai_jax.parallel import Runner
from lai_jax.steps import bind_steps

FLAGS = flags.FLAGS
SHAPES_FILE = "shapes.json"  # a run's slot buckets and batch shapes (`input_pipeline.save_shapes`)
log = logging.getLogger("lai_jax")


def restore_run(workdir: str | Path) -> tuple[Setup, Runner, object]:
    """(setup, runner, device parameters of the best readable checkpoint) for a finished or running workdir.

    Only the parameters are read (no optimiser state); `setup.checkpoint_step` says which step they are. A
    damaged best checkpoint is passed over with a warning (`Checkpoints.restore_params`).
    """
    config = load_run_config(workdir)
    compile_cache.enable(config.compile_cache)
    setup = build(config)
    featurizer, shapes = input_pipeline.load_shapes(Path(workdir) / SHAPES_FILE, setup.featurizer, config.phase)
    setup = dataclasses.replace(setup, featurizer=featurizer, shapes=shapes)
    dummy = [input_pipeline.dummy_document(setup.labels.entity_types[0])]
    sample = input_pipeline.stack(input_pipeline.make_instances(setup.featurizer, config.phase, dummy)[:1])
    runner = Runner(config.parallel, *bind_steps(setup.model, config.phase))
    # Only shapes are needed to restore against: eval_shape skips compiling and running the init.
    like = jax.eval_shape(lambda: init_state(setup, sample, total_steps=1)).params
    step, params = checkpoints.Checkpoints(Path(workdir) / "checkpoints", read_only=True).restore_params(like)
    return dataclasses.replace(setup, checkpoint_step=step), runner, runner.put_state(params)


def predicted_entities(config, split: str, docs: list[Document]) -> Optional[list]:
    """Entities per sentence from the NER run in `re.entities_from` (its predictions file for `split`, one of
    train / dev / test; written from its best checkpoint if missing), None for RE on gold entities."""
    if not config.re.entities_from:
        return None
    from lai_jax.data.readers import read_pure
    path = ensure_predictions(config.re.entities_from, input_pipeline.split_name(config, split))
    by_key = {doc.doc_key: doc for doc in read_pure(path, load_labels(input_pipeline.labels_path(config)))}
    out = []
    for doc in docs:
        if doc.doc_key not in by_key:
            raise ValueError(f"{path}: no prediction for document {doc.doc_key!r}; was the NER run made on the same "
                             f"data and limits?")
        out.append([s.entities for s in by_key[doc.doc_key].sentences])
    return out


# Fields that change decoding only, so they may differ from training (`--set`): tune them on dev.
DECODE_FIELDS = ("ner.filter_threshold", "ner.overlap", "re.threshold", "re.re_decode", "re.entities_from",
                 "eval.symmetric_count", "per_device_eval_batch_size")


def parse_overrides(items: list[str] | None) -> dict[str, object]:
    """["ner.filter_threshold=0.3", ...] -> {field: value}, typed like the default; only `DECODE_FIELDS`."""
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
    setup, runner, state = restore_run(workdir)
    config = setup.config
    if overrides:
        set_fields(config, **overrides)
        check_choices(config)
    key = input_pipeline.split_key(config, split)
    docs = input_pipeline.load_splits(config, setup.labels)
    ents = predicted_entities(config, key, docs[key]) if config.phase == "re" else None
    return setup, runner, state, docs[key], ents


def evaluate_split(workdir: str | Path, split: str, overrides: dict | None = None) -> dict:
    """Score the best checkpoint on `split` (a split name of the run's dataset: train/dev/test).

    `overrides` ({field: value}, fields from `DECODE_FIELDS`) change decoding; they are recorded in the
    written ``eval_<split>.json`` and also apply to the predictions file it writes.
    """
    setup, runner, state, docs, ents = _restore_split(workdir, split, overrides)
    pred, result = evaluation.evaluate_documents(runner, state, setup, docs, ents, split)
    step = setup.checkpoint_step
    if jax.process_index() != 0:  # every process scored the split (a collective); process 0 writes it
        return result
    path = Path(workdir) / "predictions" / f"{split}.jsonl"
    predictions.write_predictions(path, pred, predictions.prediction_settings(setup.config, step))
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
    setup, runner, state, docs, ents = _restore_split(workdir, split, overrides)
    instances = input_pipeline.make_instances(setup.featurizer, setup.config.phase, docs, ents)
    probs = evaluation.forward(runner, state, setup, instances, split)
    out = []
    for value in values:
        set_fields(setup.config, **{field: value})
        check_choices(setup.config)
        pred = evaluation.decode_documents(setup, docs, instances, probs, ents)
        out.append({"value": value, "result": evaluation.score_documents(setup, docs, pred)})
    record = {"field": field, "overrides": dict(overrides or {}), "runs": out}
    if jax.process_index() == 0:
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
    config = config or load_run_config(workdir)
    names = dict.fromkeys([config.data.dev_split or "dev", config.data.test_split])
    predictions.check_prediction_settings([Path(workdir) / "predictions" / f"{name}.jsonl" for name in names])


def ensure_predictions(workdir: str | Path, split: str) -> Path:
    """The NER run's predictions for `split`, produced from its best checkpoint if not yet written.

    Several processes: process 0 decides whether the file is missing (the others may not see it yet); then all
    of them score the split together, process 0 writes it, and the others wait for that before reading it.
    Raises ValueError when that run's dev and test predictions were written with different settings.
    """
    path = Path(workdir) / "predictions" / f"{split}.jsonl"
    missing = not path.exists()
    if jax.process_count() > 1:
        missing = bool(multihost_utils.broadcast_one_to_all(np.asarray(missing)))
    if missing:
        evaluate_split(workdir, split)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"lai_jax.ensure_predictions:{path}")
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
    tasks = evaluation.table_tasks(load_run_config(FLAGS.workdir))
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
