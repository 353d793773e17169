"""train_and_evaluate(config, workdir): one phase (NER or RE), from data to dev-selected test scores."""
from __future__ import annotations

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

from lai_jax import checkpoints, evaluate, evaluation, input_pipeline, metrics as metrics_lib, predictions
from lai_jax.build import build, init_state
from lai_jax.parallel import Runner
from lai_jax.steps import bind_steps

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
    setup, runner, state = evaluate.restore_run(config.re.entities_from)
    if setup.config.encoder != config.encoder:
        raise ValueError(f"re.init_from_ner: the NER run {config.re.entities_from} used encoder "
                         f"{setup.config.encoder!r}, this run {config.encoder!r}")
    log.info("RE encoder starts from the NER run's best checkpoint (%s)", config.re.entities_from)
    return runner.get_state(state).params["encoder"]


# ---------------------------------------------------------------------------------------------- training
class NonFiniteLoss(RuntimeError):
    pass


def _check_finite(pending: list[tuple[int, Any]]) -> Optional[dict]:
    """Fetch queued per-step losses; raise naming the first step whose loss is NaN/inf."""
    last = None
    for step, m in pending:
        host = jax.tree.map(float, jax.device_get(m))
        if not math.isfinite(host["loss"]):
            raise NonFiniteLoss(f"loss became {host['loss']} at step {step}; stopping. The last good checkpoint "
                                f"is kept; lower the learning rate or check the data.")
        last = host
    pending.clear()
    return last


def per_device_batch(config, local_devices: int, processes: int = 1) -> int:
    """Instances per device and micro-batch: batch_size / (processes x local devices x grad_accum_steps)."""
    split = processes * local_devices * config.grad_accum_steps
    if config.batch_size < 1 or config.grad_accum_steps < 1 or config.batch_size % split:
        raise ValueError(f"batch_size={config.batch_size} must be a positive multiple of processes ({processes}) x "
                         f"local devices ({local_devices}) x grad_accum_steps ({config.grad_accum_steps}) = {split}; "
                         f"change --config.batch_size or --config.grad_accum_steps")
    return config.batch_size // split


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Train one phase with dev-based checkpoint selection, then score the best checkpoint on dev and test."""
    per_device = per_device_batch(config, jax.local_device_count(), jax.process_count())  # fail before any work
    workdir_p = Path(workdir)
    workdir_p.mkdir(parents=True, exist_ok=True)
    (workdir_p / "config.json").write_text(config.to_json_best_effort(indent=2))
    setup = build(config)
    docs = input_pipeline.load_splits(config, setup.labels)
    ents = {s: evaluate.predicted_entities(config, s, docs[s]) for s in ("dev", "test")} if config.phase == "re" else {}
    train_inst = input_pipeline.make_instances(setup.featurizer, config.phase, docs["train"])
    if not train_inst:
        raise ValueError("the training split produced no instances (no sentences, or no entities for RE)")

    runner = Runner(config.parallel, *bind_steps(setup.model, config.phase, config.grad_accum_steps))
    global_batch = config.batch_size
    buckets = input_pipeline.bucket_lengths(train_inst, config.num_buckets)
    groups = input_pipeline.assign(train_inst, buckets)
    steps_per_epoch = input_pipeline.num_batches(groups, global_batch)
    total_steps = steps_per_epoch * config.num_epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    eval_every = config.eval_every_steps or steps_per_epoch * config.eval_every_epochs
    log.info("%d train instances, %d steps/epoch, %d steps, global batch %d = %d per device x %d device(s) (%s) "
             "x %d process(es) x %d accumulation step(s), length buckets %s holding %s instances", len(train_inst),
             steps_per_epoch, total_steps, global_batch, per_device, runner.n, runner.mode, jax.process_count(),
             config.grad_accum_steps, list(buckets), [len(g) for g in groups])

    sample = input_pipeline.stack(train_inst[:1])
    ckpt = checkpoints.Checkpoints(workdir_p / "checkpoints")
    fresh = ckpt.latest_step() is None
    state = init_state(setup, sample, total_steps, initial_encoder(config) if fresh else None)
    start_step, best_f1 = 0, -1.0
    if not fresh:
        state = ckpt.restore_latest(state)
        start_step = int(state.step)
        best_f1 = ckpt.best_metric() or -1.0
        log.info("resumed from step %d (best dev F1 so far %.4f)", start_step, best_f1)
    state = runner.put_state(state)

    writer = checkpoints.metric_writer(workdir_p)
    pending: list[tuple[int, Any]] = []
    host_batch = global_batch // jax.process_count()
    host_shard = slice(jax.process_index() * host_batch, (jax.process_index() + 1) * host_batch)
    bar = tqdm(total=total_steps, initial=start_step, desc=f"train {config.phase}", disable=None, unit="step")
    t0, step = time.time(), start_step
    epoch_plan: tuple[int, list] = (-1, [])
    last_dev: tuple = (None, None, None)  # (step, predictions, scores) of the latest dev evaluation
    try:
        while step < total_steps:
            epoch, offset = divmod(step, steps_per_epoch)
            if epoch_plan[0] != epoch:
                epoch_plan = (epoch, input_pipeline.epoch_batches(groups, global_batch, config.seed, epoch))
            b, idx = epoch_plan[1][offset]
            batch = input_pipeline.cut(input_pipeline.stack([train_inst[i] for i in idx], global_batch), buckets[b])
            batch = {k: v[host_shard] for k, v in batch.items()}
            use_gold = config.phase == "ner" and epoch < config.cold_start_epochs
            state, m = runner.train(state, batch, use_gold)
            step += 1
            pending.append((step, runner.scalar(m)))
            bar.update(1)
            if step % config.log_every_steps == 0 or step == total_steps or step % eval_every == 0:
                host = _check_finite(pending)
                rate = (step - start_step) / max(time.time() - t0, 1e-9)
                bar.set_postfix(loss=f"{host['loss']:.4f}", steps_per_s=f"{rate:.2f}", epoch=epoch)
                writer.write_scalars(step, {**host, "steps_per_s": rate})
            if step % eval_every == 0 or step == total_steps:
                host_state = runner.get_state(state)
                dev_pred, dev_result = evaluation.evaluate_documents(runner, state, setup, docs["dev"], ents.get("dev"),
                                                                    "dev", buckets)
                last_dev = (step, dev_pred, dev_result)
                f1 = evaluation.selection_f1(config, dev_result)
                writer.write_scalars(step, evaluation.flat_metrics(dev_result, "dev"))
                table = metrics_lib.format_table(dev_result, evaluation.table_tasks(config))
                tqdm.write(f"step {step} (epoch {epoch}) dev: " + table.replace("\n", "\n  "))
                ckpt.save(step, host_state, f1)
                best_f1 = max(best_f1, f1)
            if config.debug_kill_after_step and step == config.debug_kill_after_step:
                ckpt.wait()
                os.kill(os.getpid(), signal.SIGKILL)
    finally:
        bar.close()
        ckpt.wait()
        writer.flush()

    # Final report: the dev-selected checkpoint on dev and test.
    best = runner.put_state(ckpt.restore_best(runner.get_state(state)))
    results: dict[str, Any] = {"phase": config.phase, "dataset": config.dataset, "best_step": ckpt.best_step(),
                               "steps": step, "wall_s": round(time.time() - t0, 1)}
    for split in ("dev", "test"):
        if split == "dev" and last_dev[0] == results["best_step"]:
            pred, result = last_dev[1:]  # the best checkpoint is the last one scored on dev: same outputs
        else:
            pred, result = evaluation.evaluate_documents(runner, best, setup, docs[split], ents.get(split), split,
                                                         buckets)
        predictions.write_predictions(workdir_p / "predictions" / f"{input_pipeline.split_name(config, split)}.jsonl",
                                      pred, predictions.prediction_settings(config, results["best_step"]))
        results[split] = result
        table = metrics_lib.format_table(result, evaluation.table_tasks(config))
        print(f"[{config.phase}] {split} (best step {results['best_step']}):\n{table}")
    results["compiles"] = dict(runner.compiles)
    (workdir_p / "results.json").write_text(json.dumps(results, indent=2))
    return results
