"""Restore a run's best checkpoint and score it on a split (dev unless --split says otherwise).

    python -m lai_jax.evaluate --workdir=runs/scierc_ner --split=test

Writes <workdir>/eval/<split>.jsonl (PURE JSON predictions), the settings they were decoded with beside them
(<split>.settings.json) and the scores in <workdir>/eval/<split>.json. The run's own predictions
(<workdir>/predictions/<split>.jsonl, what an RE run's `re.entities_from` reads) are replaced only with
--write, atomically. Decoding settings can be changed without retraining, e.g. to pick the entity filter
threshold on dev, then apply it to both splits (an RE run refuses NER dev and test predictions decoded with
different settings):

    python -m lai_jax.evaluate --workdir=runs/scierc_ner --split=dev --sweep=ner.filter_threshold=0.1,0.2,0.3,0.5
    python -m lai_jax.evaluate --workdir=runs/scierc_ner --split=dev --set=ner.filter_threshold=0.3 --write
    python -m lai_jax.evaluate --workdir=runs/scierc_ner --split=test --set=ner.filter_threshold=0.3 --write
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Optional

import jax
import ml_collections
import numpy as np
from absl import flags
from jax.experimental import multihost_utils

from lai_jax import (checkpoints, compile_cache, evaluation, input_pipeline, metrics as metrics_lib, predictions,
                     run_record)
from lai_jax.build import Setup, build, check_config, init_state
from lai_jax.cli import UserError
from lai_jax.config_base import RUN_REFERENCES, base_config, load_run_config, parse_assignment, set_fields
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
    signatures = run_record.relation_signatures(workdir, config) if config.phase == "re" else None
    setup = dataclasses.replace(setup, featurizer=featurizer, shapes=shapes, signatures=signatures)
    dummy = [input_pipeline.dummy_document(setup.labels.entity_types[0])]
    sample = input_pipeline.stack(input_pipeline.make_instances(setup.featurizer, config.phase, dummy)[:1])
    runner = Runner(config.parallel, *bind_steps(setup.model, config.phase))
    # Only shapes are needed to restore against: eval_shape skips compiling and running the init.
    like = jax.eval_shape(lambda: init_state(setup, sample, total_steps=1)).params
    reader = checkpoints.Checkpoints(Path(workdir) / "checkpoints", read_only=True)
    try:
        step, params = reader.restore_params(like)
    except checkpoints.NoReadableCheckpoint as e:  # one line naming the checkpoints and the folder to delete
        raise UserError(str(e)) from None
    finally:
        reader.close()  # orbax's threads end here, not in a traceback at interpreter exit
    return dataclasses.replace(setup, checkpoint_step=step), runner, runner.put_state(params)


def predicted_entities(config, split: str, docs: list[Document]) -> Optional[list]:
    """Entities per sentence from the NER run in `re.entities_from` (its predictions file for `split`, one of
    train / dev / test; written from its best checkpoint if missing), None for RE on gold entities."""
    if not config.re.entities_from:
        return None
    from lai_jax.data.readers import read_pure
    source, hint = config.re.entities_from, "pass the NER run's folder (evaluate: --set=re.entities_from=DIR)"
    try:
        phase = load_run_config(source).phase
        if phase != "ner":
            raise UserError(f"re.entities_from={source} is an {phase.upper()} run; {hint}")
        path = ensure_predictions(source, input_pipeline.split_name(config, split))
    except FileNotFoundError as e:
        raise UserError(f"re.entities_from={source}: {e}; {hint}") from None
    by_key = {doc.doc_key: doc for doc in read_pure(path, load_labels(input_pipeline.labels_path(config)))}
    out = []
    for doc in docs:
        if doc.doc_key not in by_key:
            raise UserError(f"{path}: no prediction for document {doc.doc_key!r}; was the NER run made on the same "
                            f"data and limits?")
        out.append([s.entities for s in by_key[doc.doc_key].sentences])
    return out


# Fields that change decoding only, so they may differ from training (`--set`): tune them on dev.
DECODE_FIELDS = ("ner.filter_threshold", "ner.overlap", "re.threshold", "re.re_decode", "re.type_constraints",
                 "re.entities_from", "eval.symmetric_count", "per_device_eval_batch_size")
EVAL_DIR = "eval"  # <workdir>/eval/: what `evaluate` writes unless told to replace the run's predictions


def parse_overrides(items: list[str] | None) -> dict[str, object]:
    """["ner.filter_threshold=0.3", ...] -> {field: value}, typed like the default and range-checked; only
    `DECODE_FIELDS`. A run reference (re.entities_from) is made absolute from the working folder."""
    defaults, out = base_config("scierc", "ner"), {}
    for item in items or []:
        if item.partition("=")[0] not in DECODE_FIELDS:
            raise UserError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(DECODE_FIELDS)} "
                            "(the other fields fix the trained model)")
        try:
            key, value = parse_assignment(defaults, item)
            set_fields(defaults, **{key: value})
            check_config(defaults, [key])
        except ValueError as e:
            raise UserError(f"--set {e}") from None
        out[key] = os.path.abspath(value) if key in RUN_REFERENCES and value else value
    return out


def ignored_because(config, field: str, labels=None) -> Optional[str]:
    """Why decoding `config`'s run ignores `field` (so every value of it scores the same), or None."""
    if field.startswith("re.") and config.phase == "ner" or field == "eval.symmetric_count" and config.phase == "ner":
        return f"{field} is ignored: a NER run decodes no relations"
    if field.startswith("ner.") and config.phase == "re":
        return (f"{field} is ignored: an RE run decodes no entities (they come from re.entities_from or the gold "
                "data); set it on the NER run")
    if field == "ner.filter_threshold" and not config.model.use_filter:
        return "ner.filter_threshold is ignored: this run has no entity filter (model.use_filter=False)"
    if field == "re.threshold" and config.re.re_decode == "sum":
        return ("re.threshold is ignored by re.re_decode=sum (the most likely class of both directions together "
                "decides); it applies with --set=re.re_decode=both or either")
    if field == "eval.symmetric_count" and labels is not None and not any(labels.symmetric):
        return "eval.symmetric_count is ignored: no relation type of this label set is symmetric"
    return None


def _split_key(config, split: str) -> str:
    try:
        return input_pipeline.split_key(config, split)
    except ValueError as e:
        raise UserError(f"--split={split}: {e}") from None


def _restore_split(workdir: str | Path, split: str, overrides: dict | None):
    """(setup, runner, state, gold docs, given entities or None) for scoring `split` of a run."""
    key = _split_key(load_run_config(workdir), split)  # before the model is restored
    setup, runner, state = restore_run(workdir)
    config = setup.config
    if overrides:
        set_fields(config, **overrides)
        for field in overrides:
            if reason := ignored_because(config, field, setup.labels):
                log.warning("--set: %s", reason)
    docs = input_pipeline.load_splits(config, setup.labels)
    ents = predicted_entities(config, key, docs[key]) if config.phase == "re" else None
    return setup, runner, state, docs[key], ents


def evaluate_split(workdir: str | Path, split: str, overrides: dict | None = None, write: bool = False) -> dict:
    """Score the best checkpoint on `split` (a split name of the run's dataset: train/dev/test).

    `overrides` ({field: value}, fields from `DECODE_FIELDS`) change decoding. The predictions go to
    ``eval/<split>.jsonl``, never over the run's own ``predictions/<split>.jsonl`` (what an RE run reads) unless
    `write`; the scores, with the overrides, to ``eval/<split>.json``.
    """
    setup, runner, state, docs, ents = _restore_split(workdir, split, overrides)
    pred, result = evaluation.evaluate_documents(runner, state, setup, docs, ents, split)
    step = setup.checkpoint_step
    if jax.process_index() != 0:  # every process scored the split (a collective); process 0 writes it
        return result
    folder = Path(workdir) / ("predictions" if write else EVAL_DIR)
    path = folder / f"{split}.jsonl"
    predictions.write_predictions(path, pred, predictions.prediction_settings(setup.config, step, Path(workdir)))
    if write:
        try:
            check_predictions(workdir, setup.config)
        except ValueError as e:  # allowed (e.g. tuning on dev first), but RE would refuse these files
            log.warning("%s", e)
    record = {**result, "overrides": dict(overrides)} if overrides else result
    _write_json(Path(workdir) / EVAL_DIR / f"{split}.json", record)
    log.info("predictions in %s, scores in %s", path, Path(workdir) / EVAL_DIR / f"{split}.json")
    return result


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


# Fields whose values can be compared from one forward pass (`--sweep`).
SWEEP_FIELDS = ("ner.filter_threshold", "ner.overlap", "re.threshold", "re.re_decode", "re.type_constraints",
                "eval.symmetric_count")


def parse_sweep(item: str) -> tuple[str, list]:
    """"ner.filter_threshold=0.2,0.3" -> ("ner.filter_threshold", [0.2, 0.3]), typed like the default."""
    field, sep, values = item.partition("=")
    if not sep or field not in SWEEP_FIELDS or not values:
        raise UserError(f"--sweep {item!r}: expected FIELD=V1,V2,... with FIELD one of {', '.join(SWEEP_FIELDS)}")
    return field, [parse_overrides([f"{field}={v}"])[field] for v in values.split(",")]


def sweep_split(workdir: str | Path, split: str, field: str, values: list, overrides: dict | None = None
                ) -> dict:
    """Scores of `split` for each value of a decoding `field`, from a single forward pass of the best checkpoint.

    Returns and writes ``eval/<split>_sweep.json``: {"field", "overrides", "ignored" (why the run's decoding
    ignores `field`, or None), "runs": [{"value", "result"}, ...]}; predictions files are not touched.
    """
    setup, runner, state, docs, ents = _restore_split(workdir, split, overrides)
    instances = input_pipeline.make_instances(setup.featurizer, setup.config.phase, docs, ents)
    probs = evaluation.forward(runner, state, setup, instances, split)
    out = []
    for value in values:
        set_fields(setup.config, **{field: value})
        pred = evaluation.decode_documents(setup, docs, instances, probs, ents)
        out.append({"value": value, "result": evaluation.score_documents(setup, docs, pred)})
    record = {"field": field, "overrides": dict(overrides or {}),
              "ignored": ignored_because(setup.config, field, setup.labels), "runs": out}
    if jax.process_index() == 0:
        _write_json(Path(workdir) / EVAL_DIR / f"{split}_sweep.json", record)
    return record


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
        evaluate_split(workdir, split, write=True)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"lai_jax.ensure_predictions:{path}")
    check_predictions(workdir)
    return path


def main(argv):
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    from lai_jax.cli import setup_logging
    setup_logging()
    overrides = parse_overrides(FLAGS.set)
    config = load_run_config(FLAGS.workdir)
    _split_key(config, FLAGS.split)
    tasks = evaluation.table_tasks(config)
    if FLAGS.sweep:
        if FLAGS.write:
            raise UserError("--write goes with --set (or nothing), not with --sweep: a sweep writes no predictions")
        field, values = parse_sweep(FLAGS.sweep)
        record = sweep_split(FLAGS.workdir, FLAGS.split, field, values, overrides)
        if record["ignored"]:
            print(f"note: {record['ignored']}")
        print(format_sweep(field, record["runs"], tasks))
        return
    result = evaluate_split(FLAGS.workdir, FLAGS.split, overrides, write=FLAGS.write)
    print(metrics_lib.format_table(result, tasks))


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "Training workdir (holds config.json and checkpoints/).", required=True)
    flags.DEFINE_string("split", "dev", "Split to score: train, dev or test (the run's split names).")
    flags.DEFINE_multi_string("set", [], "FIELD=VALUE decoding override, repeatable, e.g. "
                              "--set=ner.filter_threshold=0.3; FIELD one of " + ", ".join(DECODE_FIELDS) + ".")
    flags.DEFINE_string("sweep", None, "FIELD=V1,V2,...: score each value from one forward pass, print a table and "
                        "write eval/<split>_sweep.json (predictions untouched), e.g. "
                        "--sweep=ner.filter_threshold=0.1,0.2,0.3,0.5; FIELD one of " + ", ".join(SWEEP_FIELDS) + ".")
    flags.DEFINE_bool("write", False, "Replace the run's own predictions/<split>.jsonl (what an RE run reads) with "
                      "these predictions, atomically; without it they go to eval/<split>.jsonl.")
    from lai_jax.cli import run
    run(main)
