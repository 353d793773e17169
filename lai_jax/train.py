"""train_and_evaluate(config, workdir): one phase (NER or RE), from data to dev-selected test scores."""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Optional

import jax
import ml_collections
from tqdm import tqdm

from lai_jax import (checkpoints, compile_cache, evaluate, evaluation, input_pipeline, metric_writers,
                     metrics as metrics_lib, predictions, run_record, wallclock)
from lai_jax.build import build, check_config, init_state
from lai_jax.cli import UserError
from lai_jax.config_base import absolute_paths, load_run_config, save_run_config
from lai_jax.parallel import Runner, host_block, host_scalars
from lai_jax.steps import FINITE, bind_steps, eval_params, with_average

log = logging.getLogger("lai_jax")


# ------------------------------------------------------------------------------------------- encoder
def initial_encoder(config) -> Optional[dict]:
    """Encoder weights a fresh run starts from, when not the pretrained ones (`re.init_from_ner`)."""
    if config.phase != "re" or not config.re.init_from_ner:
        return None
    if not config.re.entities_from:
        log.warning("re.init_from_ner is set but re.entities_from is empty: RE starts from the pretrained encoder")
        return None
    return ner_encoder_params(config)


def ner_encoder_params(config) -> dict:
    """The fine-tuned encoder of the NER run in `re.entities_from` (its best checkpoint), to start RE from."""
    setup, runner, params = evaluate.restore_run(config.re.entities_from)
    if setup.config.encoder != config.encoder:
        raise UserError(f"re.init_from_ner: the NER run {config.re.entities_from} used encoder "
                        f"{setup.config.encoder!r}, this run {config.encoder!r}")
    log.info("RE encoder starts from the NER run's best checkpoint (%s, step %d)", config.re.entities_from,
             setup.checkpoint_step)
    return runner.get_state(params)["encoder"]


# ---------------------------------------------------------------------------------------------- training
class NonFiniteLoss(RuntimeError):
    pass


def _check_finite(pending: list[tuple[int, Any]]) -> Optional[dict]:
    """Fetch queued per-step metrics (`Runner.scalar`); raise naming the first step whose loss, gradients or
    updated parameters are not finite. Returns the last step's metrics without the finiteness flag."""
    last = None
    for step, m in pending:
        host = host_scalars(m)
        finite = host.pop(FINITE, 1.0)
        if not math.isfinite(host["loss"]) or not finite:
            what = f"loss became {host['loss']}" if not math.isfinite(host["loss"]) else \
                f"gradients or parameters became NaN/inf (gradient norm {host['grad_norm']}, loss {host['loss']})"
            pending.clear()
            raise NonFiniteLoss(f"{what} at step {step}; stopping before it reaches a checkpoint. The last good "
                                f"checkpoint is kept; lower the learning rate or check the data.")
        last = host
    pending.clear()
    return last


def per_device_batch(config, local_devices: int, processes: int = 1) -> int:
    """Instances per device and micro-batch: batch_size / (processes x local devices x grad_accum_steps)."""
    split = processes * local_devices * config.grad_accum_steps
    if config.batch_size < 1 or config.grad_accum_steps < 1 or config.batch_size % split:
        raise UserError(f"batch_size={config.batch_size} must be a positive multiple of processes ({processes}) x "
                        f"local devices ({local_devices}) x grad_accum_steps ({config.grad_accum_steps}) = {split}; "
                        f"change --config.batch_size or --config.grad_accum_steps")
    return config.batch_size // split


# ---------------------------------------------------------------------------------------------- resuming
# Fields that change how a run is watched or launched, not what it computes: a resumed run may change them.
RESUME_FREE_FIELDS = ("log_every_steps", "prefetch_batches", "debug_kill_after_step", "distributed",
                      "per_device_eval_batch_size", "data.tfds_dir")
RESUME_MODES = ("auto", "force")


def config_changes(saved: ml_collections.ConfigDict, given: ml_collections.ConfigDict) -> dict[str, tuple]:
    """{field: (saved value, given value)} for the fields outside `RESUME_FREE_FIELDS` that differ.

    Paths are compared as absolute paths (`absolute_paths`), so the same run given from another folder matches.
    """
    def flat(c):
        return metric_writers.flatten(json.loads(absolute_paths(c).to_json_best_effort()))
    old, new = flat(saved), flat(given)
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
            if k not in RESUME_FREE_FIELDS and old.get(k) != new.get(k)}


def resume_step(config: ml_collections.ConfigDict, workdir: Path, resume: str = "auto") -> tuple[Optional[int], bool]:
    """(the latest checkpointed step of `workdir` to resume from or None for a fresh start, whether its config
    changed), after refusing a run saved with another config (`config_changes`) unless `resume="force"`.
    Writes nothing."""
    if resume not in RESUME_MODES:
        raise UserError(f"--resume={resume}: expected one of {', '.join(RESUME_MODES)}")
    root = workdir / "checkpoints"
    if not root.is_dir():
        return None, False
    ckpt = checkpoints.Checkpoints(root)
    step = ckpt.latest_step()
    ckpt.close()
    if step is None or not (workdir / "config.json").exists():
        return step, False
    changes = config_changes(load_run_config(workdir), config)
    if changes:
        listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())
        if resume != "force":
            raise UserError(f"{workdir} holds a run checkpointed at step {step} with another config ({listed}; "
                            f"saved -> given). To start fresh, pass another --workdir or delete {workdir}; to "
                            f"continue this run with the new values on purpose, add --resume=force")
        log.warning("resuming %s from step %d with a changed config (--resume=force): %s; the old config is kept "
                    "as config.step%d.json", workdir, step, listed, step)
    return step, bool(changes)


def format_eta(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, resume: str = "auto") -> dict:
    """Train one phase with dev-based checkpoint selection, then score the best checkpoint on dev and test.

    See `_train_and_evaluate`. The run's log.txt stops receiving the `lai_jax` logger when this returns or raises.
    """
    try:
        return _train_and_evaluate(config, workdir, resume)
    finally:
        run_record.detach_log()


def eval_interval(config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int) -> int:
    """Steps between dev evaluations: `eval_every_steps` if set, else `eval_every_epochs` epochs, 0 epochs
    meaning only at the end (the last step always evaluates)."""
    return config.eval_every_steps or steps_per_epoch * config.eval_every_epochs or total_steps


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, resume: str) -> dict:
    """The body of `train_and_evaluate`.

    A workdir with checkpoints is resumed from the latest one if its config.json matches `config`
    (`resume_step`; `resume="force"` resumes whatever changed). Every check (values, batch division, the
    resume, encoder, data, model) runs before anything is written, so a refused run leaves the workdir as it
    was. Every process runs this; only process 0 writes files (config, shapes, metrics, predictions,
    results), and checkpoints go through orbax, which coordinates the processes.
    """
    check_config(config)
    per_device = per_device_batch(config, jax.local_device_count(), jax.process_count())  # fail before any work
    config = absolute_paths(config)  # the run reads its files, and finds its NER run, from any working folder
    clock = wallclock.Breakdown()
    compile_cache.enable(config.compile_cache)
    writer_process = jax.process_index() == 0
    workdir_p = Path(workdir)
    previous, changed = resume_step(config, workdir_p, resume)
    # Read before config.json is rewritten: with --resume=force the saved state may have another layout.
    saved_average = load_run_config(workdir_p).optim.ema_decay > 0 if changed else None
    setup = build(config)
    docs = input_pipeline.load_splits(config, setup.labels)
    ents = {s: evaluate.predicted_entities(config, s, docs[s]) for s in ("dev", "test")} if config.phase == "re" else {}
    featurizer, train_inst, shapes = input_pipeline.plan_buckets(setup.featurizer, config.phase, docs["train"],
                                                                 input_pipeline.bucket_count(config))
    if not train_inst:
        raise UserError("the training split produced no instances (no sentences, or no entities for RE)")
    signatures = run_record.signatures(docs["train"]) if config.phase == "re" else None
    setup = dataclasses.replace(setup, featurizer=featurizer, shapes=shapes, signatures=signatures)
    training = input_pipeline.TrainingSet(featurizer, config.phase, docs["train"], train_inst, shapes, config)
    train_inst, train_shapes = training.first, training.shapes
    # Built once per run: every evaluation reuses them.
    eval_inst = {s: input_pipeline.make_instances(featurizer, config.phase, docs[s], ents.get(s)) for s in ("dev", "test")}

    runner = Runner(config.parallel, *bind_steps(setup.model, config.phase, config.grad_accum_steps,
                                                   config.optim.ema_decay))
    global_batch = config.batch_size
    groups = training.groups
    steps_per_epoch = input_pipeline.num_batches(groups, global_batch)
    total_steps = steps_per_epoch * config.num_epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    eval_every = eval_interval(config, steps_per_epoch, total_steps)

    sample = input_pipeline.stack(train_inst[:1])
    state = init_state(setup, sample, total_steps, initial_encoder(config) if previous is None else None)

    # Everything checked: from here on the run writes.
    if writer_process:
        workdir_p.mkdir(parents=True, exist_ok=True)
        if changed:  # --resume=force: the config the first steps were trained with stays on record
            (workdir_p / f"config.step{previous}.json").write_text((workdir_p / "config.json").read_text())
        save_run_config(config, workdir_p)
        run_record.record_start(workdir_p)
        run_record.record_training_data(workdir_p, docs["train"])
        input_pipeline.save_shapes(workdir_p / evaluate.SHAPES_FILE, featurizer, config.phase, shapes, train_shapes)
    # Logged once the run's log.txt is open, so that the run folder keeps it.
    log.info("%d train instances, %d steps/epoch, %d steps, global batch %d = %d per device x %d device(s) (%s) "
             "x %d process(es) x %d accumulation step(s), batch shapes (slots, tokens) %s holding %s instances%s",
             len(train_inst), steps_per_epoch, total_steps, global_batch, per_device, runner.n, runner.mode,
             jax.process_count(), config.grad_accum_steps, list(train_shapes), [len(g) for g in groups],
             f" ({training.sampling}; evaluation shapes {list(shapes)})" if training.sampling else "")
    ckpt = checkpoints.Checkpoints(workdir_p / "checkpoints")
    start_step, best_f1 = 0, -1.0
    if previous is not None:
        like = jax.eval_shape(lambda: state)  # shapes to restore against (the fresh state has Python scalars)
        if saved_average is not None:
            like = with_average(like, saved_average)
        resumed = ckpt.restore_state(like)  # the newest readable full state; None: every one is damaged
        if resumed is None:
            state = init_state(setup, sample, total_steps, initial_encoder(config))
        else:
            start_step, state, best_f1 = resumed
            state = with_average(state, config.optim.ema_decay > 0)
            log.info("resumed from step %d (best dev F1 so far %.4f)", start_step, best_f1)
    state = runner.put_state(state)
    every_evals = config.checkpoint_every_evals  # >= 1 (build.RANGES)

    epoch_plan = functools.lru_cache(maxsize=2)(
        lambda epoch: input_pipeline.epoch_batches(groups, global_batch, config.seed, epoch))

    def host_batch(step: int) -> dict:
        """The host's slice of step `step`'s global batch, cut to its bucket's shape, on the devices."""
        epoch, offset = divmod(step, steps_per_epoch)
        b, idx = epoch_plan(epoch)[offset]
        rows = list(idx[host_block(global_batch)])  # idx holds the real rows: the tail blocks may get none
        instances = training.epoch(epoch)
        batch = input_pipeline.stack([instances[i] for i in rows], global_batch // jax.process_count(),
                                     like=train_inst[0])
        return runner.put_batch(input_pipeline.cut(batch, train_shapes[b]))

    writer = metric_writers.create_default_writer(workdir_p, resume_step=start_step)
    writer.write_hparams(config.to_dict())
    pending: list[tuple[int, Any]] = []
    bar = tqdm(total=total_steps, initial=start_step, desc=f"train {config.phase}", disable=None, unit="step")
    plain_log = bar.disable and writer_process  # no terminal (SLURM, CI): plain progress lines instead of the bar
    t0, step = time.time(), start_step
    last_dev: tuple = (None, None, None)  # (step, predictions, scores) of the latest dev evaluation
    batches = input_pipeline.prefetch(map(host_batch, range(start_step, total_steps)), config.prefetch_batches)
    clock.rest_is("setup")  # data, featurizing, model, initial or restored state
    try:
        while step < total_steps:
            with clock.time("host_input"):  # waiting for the background thread's next batch
                batch = next(batches)
            epoch = step // steps_per_epoch
            use_gold = config.phase == "ner" and epoch < config.cold_start_epochs
            with clock.time("train_steps"):
                state, m = runner.train(state, batch, use_gold)
                step += 1
                pending.append((step, runner.scalar(m)))
                bar.update(1)
                evaluating = step % eval_every == 0 or step == total_steps
                if step % config.log_every_steps == 0 or evaluating:
                    host = _check_finite(pending)  # before any evaluation: a bad step never reaches a checkpoint
                    rate = (step - start_step) / max(time.time() - t0, 1e-9)
                    bar.set_postfix(loss=f"{host['loss']:.4f}", steps_per_s=f"{rate:.2f}", epoch=epoch)
                    writer.write_scalars(step, {**host, "steps_per_s": rate})
                    if plain_log:
                        log.info("train %s step %d/%d epoch %d loss %.4f %.2f steps/s ETA %s", config.phase, step,
                                 total_steps, epoch, host["loss"], rate, format_eta((total_steps - step) / rate))
                if evaluating:
                    jax.block_until_ready(state)  # the steps' device time is counted as steps, not evaluation
            if evaluating:
                with clock.time("evaluation"):
                    dev_pred, dev_result = evaluation.evaluate_documents(runner, eval_params(state), setup, docs["dev"],
                                                                        ents.get("dev"), "dev", eval_inst["dev"])
                last_dev = (step, dev_pred, dev_result)
                f1 = evaluation.selection_f1(config, dev_result)
                writer.write_scalars(step, evaluation.flat_metrics(dev_result, "dev"))
                table = metrics_lib.format_table(dev_result, evaluation.table_tasks(config))
                if writer_process:
                    tqdm.write(f"step {step} (epoch {epoch}) dev: " + table.replace("\n", "\n  "))
                evals_done = -(-step // eval_every) if step == total_steps else step // eval_every
                with clock.time("checkpoint_waits"):  # dispatching device copies; the writes run in background
                    pmap = runner.mode == "pmap"
                    if f1 >= best_f1:  # ties: the later step, as in the evaluation's choice of the best
                        ckpt.save_params(step, checkpoints.one_replica(eval_params(state), pmap), f1)
                        best_f1 = f1
                    if evals_done % every_evals == 0 or step == total_steps:
                        ckpt.save_state(step, checkpoints.one_replica(state, pmap), f1, best_f1)
            if config.debug_kill_after_step and step == config.debug_kill_after_step:
                ckpt.wait()
                os.kill(os.getpid(), signal.SIGKILL)
    finally:
        batches.close()
        bar.close()
        with clock.time("checkpoint_waits"):
            ckpt.wait()
        writer.close()

    # Final report: the dev-selected checkpoint on dev and test.
    pmap = runner.mode == "pmap"  # a leading device axis on every leaf
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:] if pmap else x.shape, x.dtype),
                        eval_params(state))
    best_step, best = ckpt.restore_params(like)
    best = runner.put_state(best)
    results: dict[str, Any] = {"phase": config.phase, "dataset": config.dataset, "best_step": best_step,
                               "steps": step, "wall_s": round(time.time() - t0, 1)}
    for split in ("dev", "test"):
        with clock.time("evaluation"):
            if split == "dev" and last_dev[0] == results["best_step"]:
                pred, result = last_dev[1:]  # the best checkpoint is the last one scored on dev: same outputs
            else:
                pred, result = evaluation.evaluate_documents(runner, best, setup, docs[split], ents.get(split), split,
                                                             eval_inst[split])
        results[split] = result
        if writer_process:
            predictions.write_predictions(workdir_p / "predictions" / f"{input_pipeline.split_name(config, split)}.jsonl",
                                          pred, predictions.prediction_settings(config, results["best_step"], workdir_p))
            table = metrics_lib.format_table(result, evaluation.table_tasks(config))
            print(f"[{config.phase}] {split} (best step {results['best_step']}):\n{table}")
    ckpt.close()
    results["compiles"] = dict(runner.compiles)
    results["wall_clock_s"] = clock.report()
    if writer_process:
        (workdir_p / "results.json").write_text(json.dumps(results, indent=2))
    return results
