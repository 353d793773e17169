"""Look at what the model is fed: one instance as a table, or per-split candidate statistics.

    python -m lai_jax.inspect --config=configs/conll04.py --split=dev --index=0
    python -m lai_jax.inspect --config=configs/scierc.py:re --split=train --index=5 --json
    python -m lai_jax.inspect --config=configs/ade.py --config.data.fold=3 --stats

The instance view lists every non-padding position of one instance (SPEC §3 NER, §8 RE): wordpiece,
input id, position id, attention group and, for markers, the candidate slot and word span they mark.
``--json`` prints the same instance as one JSON object (token arrays, candidate spans, marker slots and
the full T x T partial attention mask of the config's preset, SPEC §4). ``--stats`` featurizes whole
splits and reports how many candidate slots are filled, how many gold entities are reachable as
candidates under ``max_span_len`` (and the text budget), how many sentences exceed ``max_text_len`` and are
cut into windows, how many gold relations RE cannot see (entities farther apart than the text budget)
or represent (collapsed slot labels), and how many pairs of gold entities overlap (nested or crossing).
Only the tokenizer of the config's encoder is loaded, never its weights.

The same functions serve programs and tests: :func:`inspect_instance` and :func:`split_stats`.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import os
import sys
from typing import Optional, Sequence

import numpy as np
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from lai_jax import train
from lai_jax.data import features, masks
from lai_jax.data.labels import LabelSet, load_labels
from lai_jax.pretrained import EncoderNotFoundError, load_tokenizer, resolve_encoder_path

SPLITS = ("train", "dev", "test")

FLAGS = flags.FLAGS


# ------------------------------------------------------------------------------------------- loading
def load_config(path: str, phase: Optional[str] = None):
    """A config from a `configs/<dataset>.py` file (phase "ner" unless given), as --config would load it."""
    spec = importlib.util.spec_from_file_location("_lai_inspect_config", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"config file {path!r} not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(phase or "ner")


def _with_phase(config, phase: Optional[str]):
    """A copy of `config` whose phase is `phase` (the caller's config is left alone)."""
    config = config.copy_and_resolve_references()
    if phase:
        if phase not in ("ner", "re"):
            raise ValueError(f"phase must be 'ner' or 're', got {phase!r}")
        config.phase = phase
    return config


def _canonical_split(config, split: str) -> str:
    """train/dev/test, also accepting the config's own split names (data.train_split, ...)."""
    if split in SPLITS:
        return split
    d = config.data
    named = {d.train_split: "train", d.test_split: "test"}
    if d.dev_split:
        named[d.dev_split] = "dev"
    if split in named:
        return named[split]
    raise ValueError(f"unknown split {split!r}: use train, dev or test"
                     + ("" if d.dev_split else f" (dataset {config.dataset!r} has no dev split: dev is a "
                                               f"{d.dev_holdout:.0%} hold-out of train)"))


@functools.lru_cache(maxsize=4)
def _tokenizer(encoder: str):
    """The encoder's tokenizer; offline without the named model, the packaged one's (with a warning)."""
    try:
        path = resolve_encoder_path(encoder)
    except EncoderNotFoundError as e:
        logging.getLogger("lai_jax").warning(
            "%s. Showing the packaged MiniLM-L6 tokenizer (BERT uncased vocabulary) instead: wordpieces, "
            "ids and lengths can differ from what training with %r sees.", e, encoder)
        path = resolve_encoder_path("default")
    return load_tokenizer(path)


def make_featurizer(config) -> tuple[features.Featurizer, LabelSet]:
    """The featurizer training would build for `config` (tokenizer only, no encoder weights)."""
    labels = load_labels(train.labels_path(config))
    return features.Featurizer(_tokenizer(config.encoder), labels, train.feature_config(config)), labels


def load_documents(config, labels: LabelSet) -> dict:
    """train/dev/test documents exactly as training sees them (limits, ADE's dev hold-out).

    Anything the tfds builders print while building a cache goes to stderr, so stdout stays clean JSON.
    """
    with contextlib.redirect_stdout(sys.stderr):
        return train.load_splits(config, labels)


def _quiet_libraries() -> None:
    """Library INFO chatter and tfds progress bars off (the command line only; importers keep their settings)."""
    absl_logging.set_verbosity(absl_logging.WARNING)
    try:
        import tensorflow_datasets as tfds
        tfds.disable_progress_bar()
    except Exception:  # tfds missing or changed: the progress bars are only cosmetic
        pass
    try:
        import transformers
        transformers.logging.set_verbosity_error()
    except Exception:
        pass


# -------------------------------------------------------------------------------------------- instance
def _split_instances(config, featurizer: features.Featurizer, docs) -> list[features.Instance]:
    if config.phase == "ner":
        return featurizer.ner_instances(docs)[0]
    return featurizer.re_instances(docs)


def _mask_table(config) -> tuple[np.ndarray, bool]:
    table = masks.visibility_table(config.attention_mask, config.visibility)
    partner_only = config.attention_mask in masks.PARTNER_ONLY and not config.visibility  # as in train.build
    return table, partner_only


def inspect_instance(config, split: str = "dev", index: int = 0, phase: Optional[str] = None) -> dict:
    """One instance of `split` as plain JSON-ready data (see the module docstring and `--json`).

    Raises IndexError (naming the number of instances) when `index` is out of range.
    """
    config = _with_phase(config, phase)
    split = _canonical_split(config, split)
    featurizer, labels = make_featurizer(config)
    docs = load_documents(config, labels)[split]
    instances = _split_instances(config, featurizer, docs)
    n = len(instances)
    if not -n <= index < n:
        raise IndexError(f"--index={index} is out of range: {config.dataset} {split} has {n} {config.phase.upper()} "
                         f"instances (indices 0..{n - 1})" if n else f"{config.dataset} {split} has no "
                         f"{config.phase.upper()} instances")
    index %= n
    inst = instances[index]
    a = inst.arrays
    doc, sent = docs[inst.doc], docs[inst.doc].sentences[inst.sent]
    T = len(a["input_ids"])
    groups = a["token_groups"].astype(np.int32)
    num_slots = len(a["cand_mask"])
    k = len(inst.spans)
    candidate_spans = [list(map(int, sp)) for sp in inst.spans] + [None] * (num_slots - k)
    marker_slots = [[int(a["cand_marker_start"][i]), int(a["cand_marker_end"][i])] for i in range(k)]
    marker_slots += [None] * (num_slots - k)
    if config.phase == "ner":
        names = ["none"] + list(labels.entity_types)
        types = list(labels.entity_types)
    else:
        names = featurizer.rel_space.class_names()
        types = list(labels.relation_types)
    slot_labels = [names[int(c)] for c in a["labels"][:k]] + [None] * (num_slots - k)
    table, partner_only = _mask_table(config)
    mask = masks.attention_mask(groups, a["marker_partner"], table, partner_only)
    same_sentence = [i for i, x in enumerate(instances) if (x.doc, x.sent) == (inst.doc, inst.sent)]
    out = {
        "dataset": config.dataset,
        "phase": config.phase,
        "split": split,
        "index": index,
        "num_instances": n,
        "doc_key": doc.doc_key,
        "sentence_index": inst.sent,
        "words": list(sent.words),
        "part": [same_sentence.index(index), len(same_sentence)],  # this instance's chunk of its sentence
        "window": list(map(int, inst.window or (0, len(sent.words)))),  # its sentence words [lo, hi) as text core
        "seq_len": T,
        "num_slots": num_slots,
        "filled_slots": k,
        "attention_preset": config.attention_mask if not config.visibility else "custom",
        "visibility": table[1:, 1:].astype(int).tolist(),
        "tokens": featurizer.tok.convert_ids_to_tokens([int(i) for i in a["input_ids"]]),
        "input_ids": a["input_ids"].astype(int).tolist(),
        "position_ids": a["position_ids"].astype(int).tolist(),
        "token_groups": [masks.GROUP_NAMES[g] for g in groups],
        "candidate_spans": candidate_spans,
        "marker_slots": marker_slots,
        "labels": slot_labels,  # gold class per filled slot (entity type / relation class), "none" if none
        "annotations": [[t, int(s), int(e)] for t, s, e in zip(types, a["anno_start"], a["anno_end"])]
        if config.use_annotations else [],
        "word_tokens": _word_tokens(config, featurizer, doc, inst),
        "attention_mask": mask.astype(int).tolist(),
    }
    if config.phase == "re":
        out["subject"] = list(map(int, inst.subject))
        out["subject_markers"] = [int(a["subj_marker_start"]), int(a["subj_marker_end"])]
    return out


def _word_tokens(config, featurizer: features.Featurizer, doc, inst: features.Instance) -> list:
    """Per sentence word, [first, last] token index of its wordpieces in the instance (null outside its window)."""
    sp = featurizer.sentence_pieces(featurizer.word_pieces(doc), inst.sent, config.max_text_len, inst.window)
    if inst.subject is None:
        def shifted(p):
            return 1 + p
    else:
        a, b = sp.word_first[inst.subject[0]], sp.word_last[inst.subject[1]]

        def shifted(p):  # solid subject markers sit before piece a and after piece b
            return 1 + p + (p >= a) + (p > b)
    return [[shifted(f), shifted(l)] if f >= 0 else None for f, l in zip(sp.word_first, sp.word_last)]


def _span_text(words: Sequence[str], span) -> str:
    return " ".join(words[span[0]:span[1] + 1])


def format_instance(info: dict) -> str:
    """The readable table: a header, then one row per non-padding position."""
    words = info["words"]
    T, k = info["seq_len"], info["filled_slots"]
    lines = [
        f"{info['dataset']} {info['split']} {info['phase'].upper()} instance {info['index']} of "
        f"{info['num_instances']} (part {info['part'][0] + 1}/{info['part'][1]} of its sentence)",
        f"doc_key: {info['doc_key']}   sentence: {info['sentence_index']}   words: {len(words)}"
        + ("" if info["window"] == [0, len(words)] else f"   window: words {info['window'][0]}..{info['window'][1] - 1}"),
        f"sentence: {' '.join(words)}",
        f"T = {T}   filled slots: {k}/{info['num_slots']}   attention: {info['attention_preset']} "
        f"(rows TEXT/ANNO/MARKER see columns: {info['visibility']})",
    ]
    if info["phase"] == "re":
        lines.append(f"subject: {info['subject']} \"{_span_text(words, info['subject'])}\"")
    notes: dict[int, str] = {}
    for w, toks in enumerate(info["word_tokens"]):
        if toks is not None:
            for t in range(toks[0], toks[1] + 1):
                notes[t] = f"word {w}" + (f" \"{words[w]}\"" if t == toks[0] else "")
    for t, g in enumerate(info["token_groups"]):
        if g == "text" and t not in notes and info["tokens"][t] not in ("[CLS]", "[SEP]"):
            notes[t] = "context"
    for name, s, e in info["annotations"]:
        for t in range(s, e + 1):
            notes[t] = f"annotation {name}" if t == s else f"  (annotation {name})"
    if info["phase"] == "re":
        sm, em = info["subject_markers"]
        text = f"{info['subject']} \"{_span_text(words, info['subject'])}\""
        notes[sm], notes[em] = f"subject start {text}", f"subject end {text}"
    kind = "slot" if info["phase"] == "ner" else "object slot"
    for slot in range(k):
        span, (ms, me) = info["candidate_spans"][slot], info["marker_slots"][slot]
        label = info["labels"][slot]
        gold = f"  gold: {label}" if label not in (None, "none") else ""
        text = f"{span} \"{_span_text(words, span)}\""
        notes[ms] = f"start of {kind} {slot} {text}{gold}"
        notes[me] = f"end of {kind} {slot} {text}"
    rows = [(str(t), info["tokens"][t], str(info["input_ids"][t]), str(info["position_ids"][t]),
             info["token_groups"][t], notes.get(t, "")) for t in range(T) if info["token_groups"][t] != "pad"]
    header = ("index", "token", "input id", "position id", "group", "note")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(5)]

    def fmt(r):
        left = "  ".join(c.rjust(w) if i in (0, 2, 3) else c.ljust(w) for i, (c, w) in enumerate(zip(r[:5], widths)))
        return (left + "  " + r[5]).rstrip()

    lines += ["", fmt(header), fmt(tuple("-" * len(h) for h in header))] + [fmt(r) for r in rows]
    n_pad = info["token_groups"].count("pad")
    if n_pad:
        lines.append(f"... {n_pad} padding positions ({T - n_pad}..{T - 1}); "
                     f"{info['num_slots'] - k} empty slots")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- stats
def _pct(num: int, den: int) -> Optional[float]:
    return round(100.0 * num / den, 2) if den else None


def overlap_stats(docs) -> dict:
    """Pairs of distinct gold entities of one sentence that share a word (nested or crossing; the same span
    with two types counts too): ``overlapping_pairs``, and ``overlapping_same_type`` among them. Flat decoding
    (``ner.overlap=flat``) can get at most one entity of each such pair right."""
    pairs = same = 0
    for doc in docs:
        for sent in doc.sentences:
            ents = sorted({(e.start, e.end, e.type) for e in sent.entities})
            for i, a in enumerate(ents):
                for b in ents[i + 1:]:
                    if a[0] <= b[1] and b[0] <= a[1]:
                        pairs += 1
                        same += a[2] == b[2]
    return {"overlapping_pairs": pairs, "overlapping_same_type": same}


def split_stats(config, splits: Sequence[str] = SPLITS) -> dict:
    """Per split: NER candidate statistics (`Featurizer.ner_instances`) and what RE training can see of the
    gold relations (`Featurizer.relation_stats`), with percentages.

    Keys per split: sentences, instances, slots, filled, filled_pct, gold, reachable, reachable_pct, too_long
    (gold entities over max_span_len words), windowed, windowed_pct (sentences over max_text_len, cut into
    windows), long_words (words over max_text_len wordpieces, shortened), spans_unreachable (spans of
    <= max_span_len words over max_text_len wordpieces), relations, relations_unreachable (entities farther
    apart than max_text_len), relations_unrepresented (no slot label carries them: a third relation on one
    entity pair), relation_multi_pairs (entity pairs with several gold relations). Percentages are null where
    the denominator is 0. And the gold entity overlaps of :func:`overlap_stats`:
    overlapping_pairs, overlapping_same_type.
    """
    splits = [_canonical_split(config, s) for s in splits]
    featurizer, labels = make_featurizer(config)
    docs = load_documents(config, labels)
    out = {}
    for split in splits:
        _, s = featurizer.ner_instances(docs[split], with_labels=False)
        s = {k: int(v) for k, v in s.items()}
        s["filled_pct"] = _pct(s["filled"], s["slots"])
        s["reachable_pct"] = _pct(s["reachable"], s["gold"])
        s["windowed_pct"] = _pct(s["windowed"], s["sentences"])
        r = featurizer.relation_stats(docs[split])
        s.update(relations=r["relations"], relations_unreachable=r["unreachable"],
                 relations_unrepresented=r["unrepresented"], relation_multi_pairs=r["multi_pairs"])
        s.update(overlap_stats(docs[split]))
        out[split] = s
    return out


def format_stats(config, stats: dict) -> str:
    featurizer, _ = make_featurizer(config)

    def with_pct(num, den, pct):
        return f"{num}/{den} ({'-' if pct is None else f'{pct:.2f}%'})"

    fold = f" fold {config.data.fold}" if config.dataset == "ade" else ""
    lines = [f"{config.dataset}{fold}: C = max_text_len {config.max_text_len}, L = max_span_len {config.max_span_len}, "
             f"K = max_candidates {config.max_candidates}, NER T = {featurizer.seq_len('ner')}"]
    header = ("split", "sentences", "instances", "candidate slots filled", "gold entities reachable",
              "entities > L words", "texts windowed", "relations unreachable", "RE labels collapsed")
    rows = [header]
    for split, s in stats.items():
        windowed = "-" if s["windowed_pct"] is None else f"{s['windowed_pct']:.2f}%"
        rows.append((split, str(s["sentences"]), str(s["instances"]),
                     with_pct(s["filled"], s["slots"], s["filled_pct"]),
                     with_pct(s["reachable"], s["gold"], s["reachable_pct"]), str(s["too_long"]),
                     f"{s['windowed']} ({windowed})", f"{s['relations_unreachable']}/{s['relations']}",
                     f"{s['relations_unrepresented']} (multi-relation pairs {s['relation_multi_pairs']})"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("overlapping gold entity pairs (of them same type): " + ", ".join(
        f"{split} {s['overlapping_pairs']} ({s['overlapping_same_type']})" for split, s in stats.items()
        if "overlapping_pairs" in s))
    notes = []
    if any(s["spans_unreachable"] or s["long_words"] for s in stats.values()):
        notes.append("spans of <= L words over C wordpieces (never candidates): " + ", ".join(
            f"{split} {s['spans_unreachable']}" for split, s in stats.items())
            + "; words over C wordpieces (shown by their first C): " + ", ".join(
            f"{split} {s['long_words']}" for split, s in stats.items()))
    notes.append("relations unreachable: their entities are farther apart than C wordpieces. RE labels collapsed: "
                 "gold relations no slot label carries (a third relation on one entity pair); of a multi-relation "
                 "pair, re_decode 'both' or 'sum' can output at most one relation.")
    return "\n".join(lines + notes)


# ------------------------------------------------------------------------------------------------ CLI
def define_flags() -> None:
    """The command-line flags (defined only when run as a program, so importing this module defines none:
    `lai_jax.main` owns a --config flag of its own)."""
    config_flags.DEFINE_config_file(
        "config", None, "Config file and optional phase, e.g. configs/conll04.py or configs/scierc.py:re; any "
        "field can be overridden with --config.<field>=<value> (e.g. --config.data.fold=3).", lock_config=True)
    flags.DEFINE_string("split", "dev", "Split to inspect: train, dev or test (the config's own split names, e.g. "
                        "data.test_split, are accepted too). With --stats: only this split when given, else all three.")
    flags.DEFINE_integer("index", 0, "Instance index within the split (0-based; negative counts from the end).")
    flags.DEFINE_enum("phase", None, ["ner", "re"], "Instance kind, overriding the config's phase: ner (candidate "
                      "spans) or re (one subject, its objects). Default: the config's phase.")
    flags.DEFINE_bool("json", False, "Print one JSON object instead of tables (the instance, or the statistics "
                      "keyed by split).")
    flags.DEFINE_bool("stats", False, "Print per-split statistics (sentences, instances, filled candidate slots, "
                      "gold entities reachable under max_span_len, texts windowed by max_text_len, gold relations "
                      "unreachable or collapsed) instead of an instance.")
    flags.mark_flags_as_required(["config"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    _quiet_libraries()
    config = _with_phase(FLAGS.config, FLAGS.phase)
    try:
        if FLAGS.stats:
            splits = [FLAGS.split] if FLAGS["split"].present else SPLITS
            stats = split_stats(config, splits)
            print(json.dumps(stats) if FLAGS.json else format_stats(config, stats))
        else:
            info = inspect_instance(config, FLAGS.split, FLAGS.index)
            print(json.dumps(info) if FLAGS.json else format_instance(info))
    except (IndexError, ValueError) as e:
        sys.exit(f"error: {e}")
    except BrokenPipeError:  # output piped into `head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    define_flags()
    app.run(main)
