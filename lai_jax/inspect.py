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

The same functions serve programs and tests: :func:`inspect_instance` and `lai_jax.stats.split_stats`.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Optional, Sequence

import numpy as np
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from lai_jax import cli, input_pipeline
from lai_jax.cli import silence_library_noise
from lai_jax.data import features, masks
from lai_jax.models import HeadConfig
from lai_jax.stats import (SPLITS, canonical_split, format_stats, load_documents, make_featurizer, split_stats,
                           with_phase)

FLAGS = flags.FLAGS


def _quiet_libraries() -> None:
    """Library INFO chatter and tfds progress bars off (the command line only; importers keep their settings)."""
    absl_logging.set_verbosity(absl_logging.WARNING)
    silence_library_noise()  # before transformers is first imported
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
def inspect_instance(config, split: str = "dev", index: int = 0, phase: Optional[str] = None) -> dict:
    """One instance of `split` as plain JSON-ready data (see the module docstring and `--json`).

    Raises IndexError (naming the number of instances) when `index` is out of range.
    """
    config = with_phase(config, phase)
    split = canonical_split(config, split)
    featurizer, labels = make_featurizer(config)
    docs = load_documents(config, labels)[split]
    instances = input_pipeline.make_instances(featurizer, config.phase, docs)
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
    head = HeadConfig.from_config(config, labels)
    table = np.asarray(head.visibility)
    mask = masks.attention_mask(groups, a["marker_partner"], table, head.partner_only)
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
        raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    _quiet_libraries()
    config = with_phase(FLAGS.config, FLAGS.phase)
    try:
        if FLAGS.stats:
            splits = [FLAGS.split] if FLAGS["split"].present else SPLITS
            stats = split_stats(config, splits)
            print(json.dumps(stats) if FLAGS.json else format_stats(config, stats))
        else:
            info = inspect_instance(config, FLAGS.split, FLAGS.index)
            print(json.dumps(info) if FLAGS.json else format_instance(info))
    except (IndexError, ValueError) as e:
        cli.fail(e)
    except BrokenPipeError:  # output piped into `head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    define_flags()
    cli.run(main)
