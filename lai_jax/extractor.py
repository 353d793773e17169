"""The Python API: trained NER (and RE) runs loaded once, predicting entities and relations on many texts.

    from lai_jax import Extractor
    ex = Extractor.load(ner="runs/quick/ner", re="runs/quick/re")
    ex.predict(["John Smith works for Acme Corp.", "Mary lives in Paris. She works for IBM."])

Each text is one document (sentences are split and words tokenised by :mod:`lai_jax.text`); the result is one
dict per text in the format of ``python -m lai_jax.predict`` (see :mod:`lai_jax.predict`): ``tokens`` per
sentence, ``entities`` with word span, character offsets, ``text``, ``type`` and ``score``, and with an RE
run ``relations`` (``head`` / ``tail`` index ``entities``, ``type``, ``score``).

Both runs' best checkpoints are restored once, in `load`; each batch shape of a run compiles on its first
use and is reused by every later call. All texts of a call are featurised together and batched by the run's
evaluation batch size.

Document context: a model sees each sentence as it was trained. A run trained on documents of several
sentences (SciERC) saw the neighbouring sentences around each one, so a text's sentences are windows of that
text, as in training. A run trained on single-sentence documents (CoNLL04, ADE) never saw neighbours, so each
sentence is featurised on its own: a text of several sentences then gives the same entities and relations as
the same sentences given one per text. The run records which it was (`lai_jax.run_record`).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from lai_jax.data.documents import Document, Entity
from lai_jax.predict_input import InputDoc, PredictError, text_document

log = logging.getLogger("lai_jax")

# (start, end inclusive, type, score) and (head span, tail span, type, score), sentence-level words.
EntityPred = tuple[int, int, str, float]
RelationPred = tuple[tuple[int, int], tuple[int, int], str, float]
PathLike = Union[str, Path]


# ----------------------------------------------------------------------------------------------- output
def _round(x: float) -> float:
    return round(float(x), 6)


def document_json(inp: InputDoc, entities: list[list[EntityPred]],
                  relations: Optional[list[list[RelationPred]]] = None) -> dict:
    """The output object of one document (format: `lai_jax.predict`)."""
    doc = inp.doc
    ents_out: list[dict] = []
    where: dict[tuple[int, tuple[int, int]], int] = {}
    for s, sent in enumerate(doc.sentences):
        for a, b, t, score in sorted(entities[s], key=lambda e: (e[0], e[1], e[2])):
            item: dict[str, Any] = {"sentence": s, "start": a, "end": b, "type": t, "score": _round(score)}
            if doc.text is not None and sent.char_spans is not None:
                cs, ce = sent.char_spans[a][0], sent.char_spans[b][1]
                item.update(char_start=cs, char_end=ce, text=doc.text[cs:ce])
            else:
                item["text"] = " ".join(sent.words[a:b + 1])
            where[(s, (a, b))] = len(ents_out)
            ents_out.append(item)
    out: dict[str, Any] = dict(inp.key)
    out["tokens"] = [list(s.words) for s in doc.sentences]
    out["entities"] = ents_out
    if relations is not None:
        out["relations"] = [{"sentence": s, "head": where[(s, tuple(h))], "tail": where[(s, tuple(t))],
                             "type": r, "score": _round(score)}
                            for s in range(len(doc.sentences)) for h, t, r, score in relations[s]]
    return out


# ------------------------------------------------------------------------------------------ model input
@dataclasses.dataclass
class Units:
    """The documents a phase's featurizer sees, and where each of their sentences came from.

    With document context they are the input documents themselves; without, one document per sentence.
    """
    docs: list[Document]
    origin: list[list[tuple[int, int]]]  # per unit, per sentence: (input document, its sentence)

    @classmethod
    def of(cls, docs: Sequence[Document], context: bool) -> "Units":
        if context:
            return cls(list(docs), [[(d, s) for s in range(len(doc.sentences))] for d, doc in enumerate(docs)])
        units, origin = [], []
        for d, doc in enumerate(docs):
            for s, sent in enumerate(doc.sentences):
                units.append(Document(f"{doc.doc_key}#{s}", [sent], text=doc.text))
                origin.append([(d, s)])
        return cls(units, origin)

    def split(self, per_doc: Sequence[Sequence[Any]]) -> list[list[Any]]:
        """Per-sentence items of the input documents -> the same items per unit."""
        return [[per_doc[d][s] for d, s in sents] for sents in self.origin]

    def join(self, per_unit: Sequence[Sequence[Any]], docs: Sequence[Document]) -> list[list[Any]]:
        """Per-sentence items of the units -> the same items per input document."""
        out: list[list[Any]] = [[None] * len(doc.sentences) for doc in docs]
        for sents, items in zip(self.origin, per_unit):
            for (d, s), item in zip(sents, items):
                out[d][s] = item
        return out


@dataclasses.dataclass
class Phase:
    """One restored run: what `evaluation.forward` needs, and whether it was trained with document context."""
    workdir: str
    setup: Any  # lai_jax.build.Setup
    runner: Any  # lai_jax.parallel.Runner
    params: Any  # the best readable checkpoint's parameters, on the devices
    document_context: bool

    @classmethod
    def load(cls, workdir: PathLike, phase: str, batch_size: Optional[int] = None) -> "Phase":
        from lai_jax import run_record
        from lai_jax.cli import UserError
        from lai_jax.evaluate import restore_run
        config = check_workdir(workdir, phase)
        context = run_record.document_context(workdir, config)
        try:
            setup, runner, params = restore_run(workdir)
        except FileNotFoundError as e:
            raise PredictError(f"{workdir}: {e}") from None
        except UserError as e:  # e.g. no readable checkpoint: names them and the folder to delete
            raise PredictError(str(e)) from None
        if batch_size:
            setup.config.per_device_eval_batch_size = int(batch_size)
        log.info("%s: %s run, %s", workdir, phase.upper(), "sentences in their document's context" if context
                 else "each sentence on its own (trained on single-sentence documents)")
        return cls(str(workdir), setup, runner, params, context)

    def forward(self, instances) -> list[dict]:
        from lai_jax import evaluation
        return evaluation.forward(self.runner, self.params, self.setup, instances, self.setup.config.phase) \
            if instances else []


def check_workdir(workdir: PathLike, phase: str):
    """The run's config, after checking it is a `phase` workdir with a checkpoint."""
    from lai_jax.checkpoints import has_checkpoint
    from lai_jax.config_base import load_run_config
    try:
        config = load_run_config(workdir)
    except FileNotFoundError as e:
        raise PredictError(str(e)) from None
    if config.phase != phase:
        flag = "--ner" if phase == "ner" else "--re"
        raise PredictError(f"{flag}={workdir} is an {config.phase.upper()} run (config.json phase "
                           f"{config.phase!r}); {flag} needs an {phase.upper()} workdir")
    if not has_checkpoint(Path(workdir) / "checkpoints"):
        raise PredictError(f"{workdir} has no checkpoint: has the {phase.upper()} run saved one?")
    return config


# ------------------------------------------------------------------------------------------------ the API
class Extractor:
    """Trained NER (and optionally RE) runs, restored once; `predict` runs them on texts."""

    def __init__(self, ner: Phase, re: Optional[Phase] = None):
        self.ner, self.re = ner, re

    @classmethod
    def load(cls, ner: PathLike, re: Optional[PathLike] = None, batch_size: Optional[int] = None) -> "Extractor":
        """Restore the best checkpoints of an NER workdir and (for relations) an RE workdir.

        `batch_size` overrides both runs' per-device evaluation batch size. Raises `PredictError` for a folder
        that is not a finished run of the right phase.
        """
        if batch_size is not None and batch_size < 1:
            raise PredictError(f"batch size must be positive, got {batch_size}")
        check_workdir(ner, "ner")
        if re is not None:
            check_workdir(re, "re")  # both checked before either is restored
        return cls(Phase.load(ner, "ner", batch_size), Phase.load(re, "re", batch_size) if re is not None else None)

    def predict(self, texts: Union[str, Sequence[str]]) -> list[dict]:
        """Entities (and relations) of each text, one dict per text in order (format: module docstring).

        A single string is one text (a list of one dict comes back).
        """
        if isinstance(texts, str):
            texts = [texts]
        inputs = [InputDoc({}, text_document(t, f"text{i}")) for i, t in enumerate(texts)]
        return self.predict_inputs(inputs)

    def predict_inputs(self, inputs: Sequence[InputDoc]) -> list[dict]:
        """`predict` for documents already split into sentences and words (`lai_jax.predict_input`)."""
        docs = [inp.doc for inp in inputs]
        entities = self.entities(docs)
        relations = self.relations(docs, entities) if self.re is not None else None
        return [document_json(inp, e, r) for inp, e, r in zip(inputs, entities, relations or [None] * len(docs))]

    def entities(self, docs: Sequence[Document]) -> list[list[list[EntityPred]]]:
        """Per document, per sentence: (start, end, type, score) of each predicted entity."""
        from lai_jax import evaluation
        if not any(s.words for d in docs for s in d.sentences):
            return [[[] for _ in d.sentences] for d in docs]
        p = self.ner
        units = Units.of(docs, p.document_context)
        instances, stats = p.setup.featurizer.ner_instances(units.docs, with_labels=False)
        log.info("NER: %d documents, %d sentences (%d split into windows of <= %d wordpieces), %d instances",
                 len(docs), stats["sentences"], stats["windowed"], p.setup.config.max_text_len, len(instances))
        if stats["long_words"]:
            log.info("NER: %d words longer than %d wordpieces are shown by their first %d", stats["long_words"],
                     p.setup.config.max_text_len, p.setup.config.max_text_len)
        decoded = evaluation.decode_documents(p.setup, units.docs, instances, p.forward(instances))
        per_unit = [[[(e.start, e.end, e.type, float(e.score)) for e in sent.entities] for sent in doc.sentences]
                    for doc in decoded]
        out = units.join(per_unit, docs)
        log.info("NER: %d entities", sum(len(e) for d in out for e in d))
        return out

    def relations(self, docs: Sequence[Document], entities: Sequence[Sequence[Sequence[EntityPred]]]
                  ) -> list[list[list[RelationPred]]]:
        """Per document, per sentence: (head span, tail span, type, score) of each relation between `entities`."""
        from lai_jax import evaluation
        if self.re is None:
            raise PredictError("no RE run loaded: Extractor.load(ner=..., re=...) predicts relations")
        if not any(e for sents in entities for e in sents):
            return [[[] for _ in d.sentences] for d in docs]
        p = self.re
        units = Units.of(docs, p.document_context)
        found = units.split([[[Entity(a, b, t, score) for a, b, t, score in sent] for sent in doc] for doc in entities])
        instances = p.setup.featurizer.re_instances(units.docs, found)
        log.info("RE: %d instances", len(instances))
        decoded = evaluation.decode_documents(p.setup, units.docs, instances, p.forward(instances), found)
        per_unit = [[[(tuple(r.head), tuple(r.tail), r.type, float(r.score)) for r in sent.relations]
                     for sent in doc.sentences] for doc in decoded]
        out = units.join(per_unit, docs)
        log.info("RE: %d relations", sum(len(r) for d in out for r in d))
        return out
