"""train_and_evaluate(config, workdir): one phase (NER or RE), from data to dev-selected test scores."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from lai_jax import checkpoints, decoding, encoder as encoder_lib, input_pipeline, metric_writers, metrics as metrics_lib
from lai_jax.data import features, masks
from lai_jax.data.documents import Document, Entity, Relation, Sentence
from lai_jax.data.labels import LabelSet, load_labels
from lai_jax.models import SPAN_LOSS_NORMS, HeadConfig, LAINet
from lai_jax.parallel import Runner
from lai_jax.steps import TrainState, bind_steps, make_optimizer

log = logging.getLogger("lai_jax")

DATA_ROOT = Path(os.environ.get("LAI_JAX_DATA", Path(__file__).resolve().parents[1] / "data"))
BUNDLED = ("scierc", "ade", "conll04")


# ------------------------------------------------------------------------------------------------ data
def labels_path(config) -> Path:
    return Path(config.data.labels) if config.data.labels else DATA_ROOT / config.dataset / "labels.json"


def load_docs(config, split: str, labels: LabelSet) -> list[Document]:
    """One split as documents: bundled/ACE05 through the tfds builders, anything else through the readers."""
    from lai_jax.data import readers, tfds_builders
    ds = config.dataset
    if config.data.use_tfds and (ds in BUNDLED and not config.data.dir or ds == "ace05"):
        docs = tfds_builders.load_split(ds, split, data_dir=config.data.tfds_dir or None, fold=config.data.fold,
                                        manual_dir=config.data.dir or None, labels_path=labels_path(config))
    else:
        root = Path(config.data.dir) if config.data.dir else DATA_ROOT / ds
        docs = readers.read_documents(_split_file(root, ds, split, config.data.fold), labels)
    return docs


def _split_file(root: Path, dataset: str, split: str, fold: int) -> Path:
    candidates = [root / f"{split}.json", root / f"{dataset}_{split}.json", root / f"{dataset}_split_{fold}_{split}.json",
                  root / f"{split}.jsonl"]
    for path in candidates:
        if path.exists():
            return path
    return candidates[0]  # the reader reports the missing file by name


def dummy_document(entity_type: str) -> Document:
    """A two-word sentence with two entities (of a type the label file knows): enough to trace shapes."""
    return Document("dummy", [Sentence(["a", "b"], [Entity(0, 0, entity_type), Entity(1, 1, entity_type)])])


def limit_sentences(docs: list[Document], limit: int) -> list[Document]:
    """The first `limit` sentences (whole documents), for quick runs; 0 = everything."""
    if not limit:
        return docs
    out, n = [], 0
    for doc in docs:
        if n >= limit:
            break
        out.append(doc)
        n += len(doc.sentences)
    return out


def load_splits(config, labels: LabelSet) -> dict[str, list[Document]]:
    """train / dev / test documents after limits and (for datasets without dev) a dev hold-out.

    The hold-out follows `data.holdout_seed`, not `seed`: runs with different seeds see the same data.
    """
    d = config.data
    train = load_docs(config, d.train_split, labels)
    if d.dev_split:
        dev = load_docs(config, d.dev_split, labels)
    else:
        order = np.random.default_rng(d.holdout_seed).permutation(len(train))
        n_dev = max(1, int(round(len(train) * d.dev_holdout)))
        dev = [train[i] for i in sorted(order[:n_dev])]
        train = [train[i] for i in sorted(order[n_dev:])]
    test = load_docs(config, d.test_split, labels)
    return {"train": limit_sentences(train, d.train_limit), "dev": limit_sentences(dev, d.eval_limit),
            "test": limit_sentences(test, d.eval_limit)}


# ----------------------------------------------------------------------------------------------- model
@dataclasses.dataclass
class Setup:
    """Everything derived from a config that training, evaluation and prediction share."""
    config: Any
    labels: LabelSet
    tokenizer: Any
    featurizer: features.Featurizer
    model: LAINet
    encoder_params: dict
    head: HeadConfig


def feature_config(config) -> features.FeatureConfig:
    return features.FeatureConfig(max_text_len=config.max_text_len, max_span_len=config.max_span_len,
                                  max_candidates=config.max_candidates, max_objects=config.max_objects,
                                  use_annotations=config.use_annotations)


def check_choices(config) -> None:
    """Fail early (not after training) on a decoding or scoring field with an unknown value."""
    for key, value, choices in (("ner.overlap", config.ner.overlap, decoding.NER_OVERLAP_RULES),
                                ("re.re_decode", config.re.re_decode, decoding.RE_DECODE_RULES),
                                ("model.span_loss_norm", config.model.span_loss_norm, SPAN_LOSS_NORMS),
                                ("eval.symmetric_count", config.eval.symmetric_count, metrics_lib.SYMMETRIC_COUNTS)):
        if value not in choices:
            raise ValueError(f"config {key}={value!r}: expected one of {', '.join(choices)}")


def build(config) -> Setup:
    check_choices(config)
    labels = load_labels(labels_path(config))
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.model.dtype]
    enc, enc_params, tokenizer = encoder_lib.load(config.encoder, dtype=dtype, remat=config.model.remat)
    changes: dict[str, Any] = {"dropout_bits": config.model.dropout_bits}
    if config.model.encoder_dropout >= 0:
        changes.update(hidden_dropout_prob=config.model.encoder_dropout,
                       attention_probs_dropout_prob=config.model.encoder_dropout)
    if config.model.attention_dropout >= 0:
        changes["attention_probs_dropout_prob"] = config.model.attention_dropout
    bert = dataclasses.replace(enc.config, **changes)
    featurizer = features.Featurizer(tokenizer, labels, feature_config(config))
    if config.phase == "ner":
        num_classes = 1 + len(labels.entity_types)
    else:
        num_classes = featurizer.rel_space.num_classes
    table = masks.visibility_table(config.attention_mask, config.visibility)
    # Every `model` field that names a HeadConfig field carries over as it is (gcn_*, dropout, use_filter, ...).
    shared = {f.name for f in dataclasses.fields(HeadConfig)} & set(config.model.keys())
    head = HeadConfig(phase=config.phase, num_classes=num_classes, use_annotations=config.use_annotations,
                      visibility=tuple(map(tuple, table.tolist())),
                      partner_only=config.attention_mask in masks.PARTNER_ONLY and not config.visibility,
                      **{k: config.model[k] for k in sorted(shared)})
    return Setup(config, labels, tokenizer, featurizer, LAINet(bert, head), enc_params, head)


def init_state(setup: Setup, sample: dict[str, np.ndarray], total_steps: int,
               encoder_params: Optional[dict] = None) -> TrainState:
    """Fresh parameters (heads random, encoder from the pretrained weights unless given) and optimiser state."""
    rng = jax.random.PRNGKey(setup.config.seed)
    init_rng, dropout_rng = jax.random.split(rng)
    if encoder_params is None:
        encoder_params = setup.encoder_params
    params = setup.model.init_params(init_rng, sample, jax.tree.map(jnp.asarray, encoder_params))
    tx = make_optimizer(setup.config.optim, total_steps)
    return TrainState.create(apply_fn=setup.model.apply, params=params, tx=tx, rng=dropout_rng)


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
    from lai_jax.evaluate import restore_run
    setup, runner, state = restore_run(config.re.entities_from)
    if setup.config.encoder != config.encoder:
        raise ValueError(f"re.init_from_ner: the NER run {config.re.entities_from} used encoder "
                         f"{setup.config.encoder!r}, this run {config.encoder!r}")
    log.info("RE encoder starts from the NER run's best checkpoint (%s)", config.re.entities_from)
    return runner.get_state(state).params["encoder"]


# -------------------------------------------------------------------------------------------- evaluation
def instances_for(setup: Setup, docs: Sequence[Document], entities=None) -> list[features.Instance]:
    if setup.config.phase == "ner":
        return setup.featurizer.ner_instances(docs)[0]
    return setup.featurizer.re_instances(docs, entities)


def run_eval(runner: Runner, state, setup: Setup, instances: list[features.Instance], desc: str,
             buckets: Sequence[int] = ()) -> list[dict]:
    """Probabilities per instance (host numpy), batched by length bucket with zero-weight padding."""
    batch_size = setup.config.per_device_eval_batch_size * runner.n
    buckets = tuple(buckets) or (setup.featurizer.seq_len(setup.config.phase),)
    out: list[Optional[dict]] = [None] * len(instances)
    n_batches = math.ceil(len(instances) / batch_size) + len(buckets) - 1
    for batch, chunk in tqdm(input_pipeline.eval_batches(instances, buckets, batch_size), total=n_batches,
                             desc=desc, leave=False, disable=None):
        probs = runner.eval(state, batch)
        for row, i in enumerate(chunk):
            out[i] = {k: v[row] for k, v in probs.items()}
    return out


def decode(setup: Setup, docs: Sequence[Document], instances: list[features.Instance], probs: list[dict],
           entities=None) -> list[Document]:
    """Model outputs -> predicted documents (NER: entities; RE: the given entities plus relations)."""
    c = setup.config
    pred = [Document(doc.doc_key, [Sentence(list(s.words), char_spans=s.char_spans) for s in doc.sentences],
                     text=doc.text) for doc in docs]
    if c.phase == "ner":
        per_sent: dict[tuple[int, int], list] = {}
        for inst, p in zip(instances, probs):
            k = len(inst.spans)
            acc = per_sent.setdefault((inst.doc, inst.sent), [[], [], []])
            acc[0].extend(inst.spans)
            acc[1].append(p["filter_prob"][:k] if "filter_prob" in p else np.ones(k, np.float32))
            acc[2].append(p["type_probs"][:k])
        for (d, s), (spans, fp, tp) in per_sent.items():
            found = decoding.decode_ner(spans, np.concatenate(fp), np.concatenate(tp), setup.labels.entity_types,
                                        overlap=c.ner.overlap, filter_threshold=c.ner.filter_threshold,
                                        use_filter=c.model.use_filter)
            pred[d].sentences[s].entities = [Entity(a, b, t, float(p)) for a, b, t, p in found]
        return pred
    pair_probs: dict[tuple[int, int], dict] = {}
    for d, doc in enumerate(docs):
        for s, sent in enumerate(doc.sentences):
            ents = list(entities[d][s]) if entities is not None else list(sent.entities)
            pred[d].sentences[s].entities = ents
    index = {(d, s): {(e.start, e.end): i for i, e in enumerate(pred[d].sentences[s].entities)}
             for d, doc in enumerate(docs) for s in range(len(doc.sentences))}
    for inst, p in zip(instances, probs):
        idx = index[(inst.doc, inst.sent)]
        table = pair_probs.setdefault((inst.doc, inst.sent), {})
        for slot, obj in enumerate(inst.spans):
            table[(idx[inst.subject], idx[obj])] = p["type_probs"][slot]
    for (d, s), table in pair_probs.items():
        sent = pred[d].sentences[s]
        triples = decoding.decode_relations([e.span for e in sent.entities], table, setup.featurizer.rel_space,
                                            rule=c.re.re_decode, threshold=c.re.threshold)
        sent.relations = [Relation(tuple(h), tuple(t), r, float(p)) for h, t, r, p in triples]
    return pred


def evaluate_docs(runner: Runner, state, setup: Setup, docs: list[Document], entities=None, desc: str = "eval",
                  buckets: Sequence[int] = ()) -> tuple[list[Document], dict]:
    instances = instances_for(setup, docs, entities)
    probs = run_eval(runner, state, setup, instances, desc, buckets)
    pred = decode(setup, docs, instances, probs, entities)
    return pred, score_docs(setup, docs, pred)


def score_docs(setup: Setup, gold: list[Document], pred: list[Document]) -> dict:
    """`metrics.score` with the label set's symmetric relations, counted as `eval.symmetric_count` says."""
    return metrics_lib.score(gold, pred, dict(zip(setup.labels.relation_types, setup.labels.symmetric)),
                             symmetric_count=setup.config.eval.symmetric_count)


def headline_f1(setup: Setup, result: dict) -> float:
    """The model-selection metric: micro F1 of the phase (macro for ADE, as the paper reports it)."""
    avg = "macro" if setup.config.dataset == "ade" else "micro"
    return float(result["ner" if setup.config.phase == "ner" else "re"][avg]["f1"])


def predicted_entities(config, split: str, docs: list[Document]):
    """Entities per sentence from the NER run in `re.entities_from` (its predictions file for `split`)."""
    if not config.re.entities_from:
        return None
    from lai_jax.evaluate import ensure_predictions
    path = ensure_predictions(config.re.entities_from, split_name(config, split))  # also checks dev/test settings
    from lai_jax.data.readers import read_pure
    by_key = {doc.doc_key: doc for doc in read_pure(path, load_labels(labels_path(config)))}
    out = []
    for doc in docs:
        if doc.doc_key not in by_key:
            raise ValueError(f"{path}: no prediction for document {doc.doc_key!r}; was the NER run made on the same "
                             f"data and limits?")
        out.append([s.entities for s in by_key[doc.doc_key].sentences])
    return out


def split_name(config, split: str) -> str:
    return {"train": config.data.train_split, "dev": config.data.dev_split or "dev", "test": config.data.test_split}[split]


# Config fields that decide what a phase's predictions file holds besides the checkpoint (see `write_predictions`).
PREDICTION_FIELDS = {"ner": ("model.use_filter", "ner.filter_threshold", "ner.overlap"),
                     "re": ("re.entities_from", "re.re_decode", "re.threshold")}


def prediction_settings(config, checkpoint_step: Optional[int]) -> dict:
    """The settings recorded with a predictions file: phase, checkpoint step and the phase's decoding fields."""
    out: dict[str, Any] = {"phase": config.phase, "checkpoint_step": checkpoint_step}
    for key in PREDICTION_FIELDS[config.phase]:
        node = config
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def settings_path(path: Path) -> Path:
    """predictions/<split>.jsonl -> predictions/<split>.settings.json"""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".jsonl") + ".settings.json")


def write_predictions(path: Path, docs: list[Document], settings: Optional[dict] = None) -> None:
    """PURE JSONL predictions, and `settings` (`prediction_settings`) beside them in <split>.settings.json."""
    path.parent.mkdir(parents=True, exist_ok=True)
    side = settings_path(path)
    side.unlink(missing_ok=True)  # no stale settings for new predictions, even if this write is cut short
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for doc in docs:
            f.write(json.dumps(doc.to_pure()) + "\n")
    tmp.replace(path)
    if settings is not None:
        side.write_text(json.dumps(settings, indent=2, sort_keys=True))


def check_prediction_settings(paths: Sequence[Path]) -> None:
    """Refuse predictions files (one run's dev and test) written with different settings.

    End-to-end RE reads the entities of both; had one been rewritten with, say, another filter threshold, dev
    would select and test would report on entities made differently. Files not written yet are skipped; a
    file without its settings (written before they were recorded) gets a warning, as it cannot be checked.
    """
    known = []
    for path in map(Path, paths):
        if not path.exists():
            continue
        side = settings_path(path)
        if not side.exists():
            log.warning("%s has no %s (written before settings were recorded): cannot check that it was decoded "
                        "like %s; rewrite it with `python -m lai_jax.evaluate`", path, side.name,
                        " and ".join(str(p) for p in paths if Path(p) != path))
            continue
        known.append((path, json.loads(side.read_text(encoding="utf-8"))))
    for path, settings in known[1:]:
        first, ref = known[0]
        diff = sorted(k for k in set(ref) | set(settings) if ref.get(k, "<unset>") != settings.get(k, "<unset>"))
        if diff:
            detail = "; ".join(f"{k}: {ref.get(k, '<unset>')!r} in {first.name}, {settings.get(k, '<unset>')!r} in "
                               f"{path.name}" for k in diff)
            raise ValueError(f"{first} and {path} were written with different settings ({detail}), so dev and "
                             f"test would be scored on entities decoded differently. Rewrite both with the same "
                             f"settings: python -m lai_jax.evaluate --workdir={first.parent.parent} --split=<split> "
                             f"[--set=FIELD=VALUE ...] for each split.")


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
    docs = load_splits(config, setup.labels)
    ents = {s: predicted_entities(config, s, docs[s]) for s in ("dev", "test")} if config.phase == "re" else {}
    train_inst = instances_for(setup, docs["train"])
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

    sample = features.stack(train_inst[:1])
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

    writer = metric_writers.create_default_writer(workdir_p)
    writer.write_hparams(config.to_dict())
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
            batch = input_pipeline.cut(features.stack([train_inst[i] for i in idx], global_batch), buckets[b])
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
                dev_pred, dev_result = evaluate_docs(runner, state, setup, docs["dev"], ents.get("dev"), "dev", buckets)
                last_dev = (step, dev_pred, dev_result)
                f1 = headline_f1(setup, dev_result)
                writer.write_scalars(step, flat_metrics(dev_result, "dev"))
                table = metrics_lib.format_table(dev_result, table_tasks(config))
                tqdm.write(f"step {step} (epoch {epoch}) dev: " + table.replace("\n", "\n  "))
                ckpt.save(step, checkpoints.one_replica(state, runner.mode == "pmap"), f1)  # async write
                best_f1 = max(best_f1, f1)
            if config.debug_kill_after_step and step == config.debug_kill_after_step:
                ckpt.wait()
                os.kill(os.getpid(), signal.SIGKILL)
    finally:
        bar.close()
        ckpt.wait()
        writer.close()

    # Final report: the dev-selected checkpoint on dev and test.
    best = runner.put_state(ckpt.restore_best(runner.get_state(state)))
    results: dict[str, Any] = {"phase": config.phase, "dataset": config.dataset, "best_step": ckpt.best_step(),
                               "steps": step, "wall_s": round(time.time() - t0, 1)}
    for split in ("dev", "test"):
        if split == "dev" and last_dev[0] == results["best_step"]:
            pred, result = last_dev[1:]  # the best checkpoint is the last one scored on dev: same outputs
        else:
            pred, result = evaluate_docs(runner, best, setup, docs[split], ents.get(split), split, buckets)
        write_predictions(workdir_p / "predictions" / f"{split_name(config, split)}.jsonl", pred,
                          prediction_settings(config, results["best_step"]))
        results[split] = result
        table = metrics_lib.format_table(result, table_tasks(config))
        print(f"[{config.phase}] {split} (best step {results['best_step']}):\n{table}")
    results["compiles"] = dict(runner.compiles)
    (workdir_p / "results.json").write_text(json.dumps(results, indent=2))
    return results


def table_tasks(config) -> tuple[str, ...]:
    """Console rows for a phase: a NER run predicts no relations, so its RE rows would only show zeros."""
    return ("ner",) if config.phase == "ner" else ("ner", "re", "re+")


def flat_metrics(result: dict, prefix: str) -> dict[str, float]:
    return {f"{prefix}/{task}_{avg}_f1": float(result[task][avg]["f1"]) for task in result for avg in ("micro", "macro")}
