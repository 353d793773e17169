"""Model outputs -> predicted documents -> scores; the one decoding path of training, `evaluate`, the sweep
and `predict`."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from tqdm import tqdm

from lai_jax import decoding, input_pipeline, metrics as metrics_lib
from lai_jax.build import Setup
from lai_jax.cli import UserError
from lai_jax.data.documents import Document, Entity, Relation, Sentence
from lai_jax.data.features import Instance
from lai_jax.parallel import Runner, host_block


def forward(runner: Runner, params, setup: Setup, instances: Sequence[Instance], desc: str) -> list[dict]:
    """Probabilities per instance (host numpy), batched by the setup's bucket shapes with zero-weight padding.

    Every batch is dispatched before any output is fetched, so the devices never wait for the host between
    batches; the batches are stacked and moved to the devices in a background thread (`prefetch_batches`).

    Several processes: each builds the same global batches (every process holds all `instances`), feeds its
    `host_block` of rows and receives every row's outputs, so all processes run the same number of eval steps
    (a collective each) and return the same probabilities. One process: the block is the whole batch.
    """
    phase = setup.config.phase
    batch_size = setup.config.per_device_eval_batch_size * runner.global_n
    block = host_block(batch_size)
    shapes = setup.shapes or (input_pipeline.full_shape(setup.featurizer, phase),)
    # The whole global batch is stacked on every host (cheap next to the forward), then cut to its block.
    placed = ((runner.put_batch({k: v[block] for k, v in batch.items()}), chunk)
              for batch, chunk in input_pipeline.eval_batches(instances, shapes, batch_size))
    batches = input_pipeline.prefetch(placed, setup.config.prefetch_batches)
    try:
        dispatched = [(runner.eval_async(params, batch), chunk) for batch, chunk in batches]
    finally:
        batches.close()
    out: list[Optional[dict]] = [None] * len(instances)
    for device_out, chunk in tqdm(dispatched, desc=desc, leave=False, disable=None):
        probs = runner.fetch(device_out)
        for row, i in enumerate(chunk):
            out[i] = {k: v[row] for k, v in probs.items()}
    return out


def _empty_predictions(docs: Sequence[Document]) -> list[Document]:
    return [Document(doc.doc_key, [Sentence(list(s.words), char_spans=s.char_spans) for s in doc.sentences],
                     text=doc.text) for doc in docs]


def decode_documents(setup: Setup, docs: Sequence[Document], instances: Sequence[Instance], probs: Sequence[dict],
                     entities=None) -> list[Document]:
    """Model outputs -> predicted documents (NER: entities; RE: the given entities plus relations).

    A sentence's instances (windows, candidate chunks) are merged before decoding, so it is decoded once.
    RE reads the entities `entities[d][s]` when given, else the gold ones.
    """
    pred = _empty_predictions(docs)
    if setup.config.phase == "ner":
        _decode_entities(setup, pred, instances, probs)
    else:
        _decode_relations(setup, docs, pred, instances, probs, entities)
    return pred


def _decode_entities(setup: Setup, pred: list[Document], instances, probs) -> None:
    c = setup.config
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


def _decode_relations(setup: Setup, docs, pred: list[Document], instances, probs, entities) -> None:
    c = setup.config
    for d, doc in enumerate(docs):
        for s, sent in enumerate(doc.sentences):
            pred[d].sentences[s].entities = list(entities[d][s]) if entities is not None else list(sent.entities)
    index = {(d, s): {(e.start, e.end): i for i, e in enumerate(sent.entities)}
             for d, doc in enumerate(pred) for s, sent in enumerate(doc.sentences)}
    pair_probs: dict[tuple[int, int], dict] = {}
    for inst, p in zip(instances, probs):
        idx = index[(inst.doc, inst.sent)]
        table = pair_probs.setdefault((inst.doc, inst.sent), {})
        for slot, obj in enumerate(inst.spans):
            table[(idx[inst.subject], idx[obj])] = p["type_probs"][slot]
    constrained = c.re.type_constraints
    if constrained and setup.signatures is None:
        raise UserError("re.type_constraints=True needs the relation signatures of the run's training data, which "
                        "neither its run.json nor its training split gave; decode with --set=re.type_constraints=False")
    for (d, s), table in pair_probs.items():
        sent = pred[d].sentences[s]
        triples = decoding.decode_relations([e.span for e in sent.entities], table, setup.featurizer.rel_space,
                                            rule=c.re.re_decode, threshold=c.re.threshold,
                                            entity_types=[e.type for e in sent.entities] if constrained else None,
                                            signatures=setup.signatures if constrained else None)
        sent.relations = [Relation(tuple(h), tuple(t), r, float(p)) for h, t, r, p in triples]


def score_documents(setup: Setup, gold: Sequence[Document], pred: Sequence[Document]) -> dict:
    """`metrics.score` with the label set's symmetric relations, counted as `eval.symmetric_count` says, for
    the phase's tasks (`table_tasks`: a NER run predicts no relations, so it has no RE scores)."""
    scores = metrics_lib.score(list(gold), list(pred), dict(zip(setup.labels.relation_types, setup.labels.symmetric)),
                               symmetric_count=setup.config.eval.symmetric_count)
    return {task: scores[task] for task in table_tasks(setup.config)}


def evaluate_documents(runner: Runner, params, setup: Setup, docs: list[Document], entities=None,
                       desc: str = "eval", instances: Optional[list] = None) -> tuple[list[Document], dict]:
    """Featurize (unless the split's `instances` are given), run with `params`, decode and score one split."""
    if instances is None:
        instances = input_pipeline.make_instances(setup.featurizer, setup.config.phase, docs, entities)
    probs = forward(runner, params, setup, instances, desc)
    pred = decode_documents(setup, docs, instances, probs, entities)
    return pred, score_documents(setup, docs, pred)


def selection_f1(config, result: dict) -> float:
    """The model-selection metric: F1 of the phase's task, averaged as `eval.select_average` says."""
    return float(result["ner" if config.phase == "ner" else "re"][config.eval.select_average]["f1"])


def table_tasks(config) -> tuple[str, ...]:
    """The tasks a phase is scored on: a NER run predicts no relations, so RE scores would only be zeros."""
    return ("ner",) if config.phase == "ner" else ("ner", "re", "re+")


def flat_metrics(result: dict, prefix: str) -> dict[str, float]:
    """{"dev/ner_micro_f1": ..., ...}: the scalars a metric writer logs."""
    return {f"{prefix}/{task}_{avg}_f1": float(result[task][avg]["f1"]) for task in result for avg in metrics_lib.AVERAGES}
