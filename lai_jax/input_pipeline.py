"""Host side of training and evaluation: documents from files, instances, and batches for the devices.

Reading: `load_splits` gives a config's train/dev/test documents (bundled datasets and ACE05 through the
tensorflow-datasets builders, anything else through `lai_jax.data.readers`), after limits and ADE's dev
hold-out. Featurizing: `make_instances` turns documents into fixed-shape instances
(`lai_jax.data.features`). Batching: `stack` pads a batch with zero-weight rows.

Batch shapes: every instance is built at the config's static (K slots, T tokens), but most use far fewer: a
short sentence has few candidates, and markers are packed right after the text, so an instance's real slots
and tokens are prefixes that can be cut. `plan_buckets` picks `num_buckets` (slots, tokens) shapes from the
training data (slot counts from `lai_jax.data.slots`, the largest always (K, T)) and each batch is cut to the
smallest that holds it: at most `num_buckets` compiles per phase and split, and far less padding.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import queue
import threading
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from lai_jax.data import masks, slots
from lai_jax.data.documents import Document, Entity, Sentence
from lai_jax.data.features import Featurizer, Instance, round_up
from lai_jax.data.labels import LabelSet

DATA_ROOT = Path(os.environ.get("LAI_JAX_DATA", Path(__file__).resolve().parents[1] / "data"))
BUNDLED = ("scierc", "ade", "conll04")


# --------------------------------------------------------------------------------------------- reading
def labels_path(config) -> Path:
    """The config's label annotation file (default: the bundled one of its dataset)."""
    if config.data.labels:
        return Path(config.data.labels)
    path = DATA_ROOT / config.dataset / "labels.json"
    if not path.exists() and config.dataset not in BUNDLED:
        raise ValueError(f"dataset {config.dataset!r} has no bundled label file ({path}): pass your own as "
                         f"--config.data.labels=/path/to/labels.json (README: \"Training on your own data\")")
    return path


def load_docs(config, split: str, labels: LabelSet) -> list[Document]:
    """One split as documents: bundled/ACE05 through the tfds builders, anything else through the readers.

    tensorflow_datasets is imported only on the tfds path: with `data.use_tfds=False` it need not be installed.
    """
    from lai_jax.data import readers
    ds = config.dataset
    if config.data.use_tfds and (ds in BUNDLED and not config.data.dir or ds == "ace05"):
        from lai_jax.data import tfds_builders
        return tfds_builders.load_split(ds, split, data_dir=config.data.tfds_dir or None, fold=config.data.fold,
                                        manual_dir=config.data.dir or None, labels_path=labels_path(config))
    root = Path(config.data.dir) if config.data.dir else DATA_ROOT / ds
    return readers.read_documents(_split_file(root, ds, split, config.data.fold), labels)


def _split_file(root: Path, dataset: str, split: str, fold: int) -> Path:
    candidates = [root / f"{split}.json", root / f"{dataset}_{split}.json", root / f"{dataset}_split_{fold}_{split}.json",
                  root / f"{split}.jsonl"]
    for path in candidates:
        if path.exists():
            return path
    return candidates[0]  # the reader reports the missing file by name


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


def split_key(config, split: str) -> str:
    """train / dev / test for one of the run's split names (data.train_split, ...)."""
    names = {split_name(config, key): key for key in ("train", "dev", "test")}
    if split not in names:
        raise ValueError(f"unknown split {split!r}; this run has {config.data.train_split}/"
                         f"{config.data.dev_split or 'dev'}/{config.data.test_split}")
    return names[split]


def split_name(config, split: str) -> str:
    """The run's own name of train / dev / test (the inverse of `split_key`)."""
    return {"train": config.data.train_split, "dev": config.data.dev_split or "dev", "test": config.data.test_split}[split]


def dummy_document(entity_type: str) -> Document:
    """A two-word sentence with two entities (of a type the label file knows): enough to trace shapes."""
    return Document("dummy", [Sentence(["a", "b"], [Entity(0, 0, entity_type), Entity(1, 1, entity_type)])])


# ------------------------------------------------------------------------------------------ featurizing
def make_instances(featurizer: Featurizer, phase: str, docs: Sequence[Document], entities=None) -> list[Instance]:
    """A split's instances for a phase (RE: over `entities[d][s]` when given, else the gold entities)."""
    if phase == "ner":
        return featurizer.ner_instances(docs)[0]
    return featurizer.re_instances(docs, entities)


# --------------------------------------------------------------------------------------------- batching
def stack(instances: Sequence[Instance], size: Optional[int] = None, like: Optional[Instance] = None
          ) -> dict[str, np.ndarray]:
    """Stack instances into a batch, padding to `size` with zero-weight rows (all PAD, no candidates).

    `like` gives the arrays' shapes when `instances` may be empty (a host whose slice is all padding)."""
    arrays = [inst.arrays for inst in instances]
    size = size or len(arrays)
    if len(arrays) < size:
        empty = {k: np.zeros_like(v) for k, v in (arrays[0] if arrays else like.arrays).items()}
        arrays = list(arrays) + [empty] * (size - len(arrays))
    return {k: np.stack([a[k] for a in arrays]) for k in arrays[0]}


# --------------------------------------------------------------------------------------------- buckets
# Arrays with one entry per token, and with one entry per candidate (NER) or object (RE) slot: what a
# bucket's shape cuts.
TOKEN_ARRAYS = ("input_ids", "position_ids", "token_type_ids", "token_groups", "marker_partner")
SLOT_ARRAYS = ("cand_marker_start", "cand_marker_end", "cand_mask", "cand_weight", "cand_text_start", "cand_text_end",
               "labels")

Shape = tuple[int, int]  # (slots K_b, tokens T_b) of one bucket


def real_length(inst: Instance) -> int:
    """Number of leading non-PAD tokens (all real tokens come first)."""
    return int(np.count_nonzero(inst.arrays["token_groups"] != masks.PAD))


def full_shape(featurizer: Featurizer, phase: str) -> Shape:
    """The static (K, T) every instance of a phase is built at: the largest shape."""
    return featurizer.num_slots(phase), featurizer.seq_len(phase)


def choose_slot_buckets(featurizer: Featurizer, phase: str, docs: Sequence[Document], num_buckets: int
                        ) -> tuple[int, ...]:
    """`num_buckets` slot counts for a phase chosen from the training documents (`lai_jax.data.slots`)."""
    return slots.choose_slot_buckets(featurizer.slot_demand(docs, phase), featurizer.num_slots(phase), num_buckets)


def choose_shapes(instances: Sequence[Instance], slot_buckets: Sequence[int], num_shapes: int = 0
                  ) -> tuple[Shape, ...]:
    """One (K_b, T_b) per slot bucket that holds training instances: T_b is its longest instance, rounded up to 8.

    The last shape is always the full (K, T), so any instance (also of other splits) fits some shape. When there
    are fewer slot buckets than `num_shapes` (few slots, as RE's objects), the instances of the full slot count
    are split further by length, at equal quantiles (multiples of 8).
    """
    T = int(instances[0].arrays["input_ids"].shape[0])
    K = int(slot_buckets[-1])
    longest: dict[int, int] = {}
    full_lengths = []
    for inst in instances:
        b, n = next(b for b in slot_buckets if len(inst.spans) <= b), real_length(inst)
        longest[b] = max(longest.get(b, 0), n)
        if b == K:
            full_lengths.append(n)
    shapes = {(b, min(T, round_up(max(n, 1)))) for b, n in longest.items() if b != K}
    extra = num_shapes - len(shapes) - 1
    if extra > 0 and full_lengths:
        qs = np.quantile(full_lengths, [i / (extra + 1) for i in range(1, extra + 1)], method="higher")
        shapes |= {(K, round_up(int(q))) for q in qs if round_up(int(q)) < T}
    return (*sorted(shapes), (K, T))


def shape_of(inst: Instance, shapes: Sequence[Shape]) -> int:
    """Index of the first shape holding the instance's slots and tokens."""
    k, n = len(inst.spans), real_length(inst)
    for b, (slots_b, tokens_b) in enumerate(shapes):
        if k <= slots_b and n <= tokens_b:
            return b
    raise ValueError(f"instance with {k} slots and {n} tokens exceeds the largest shape {shapes[-1]}")


def cut(batch: dict[str, np.ndarray], shape: Shape) -> dict[str, np.ndarray]:
    """A stacked batch cut to a shape: token arrays to T_b, slot arrays to K_b (real entries come first)."""
    slots_b, tokens_b = shape
    return {k: v[:, :tokens_b] if k in TOKEN_ARRAYS else v[:, :slots_b] if k in SLOT_ARRAYS else v
            for k, v in batch.items()}


def assign(instances: Sequence[Instance], shapes: Sequence[Shape]) -> list[list[int]]:
    """Instance indices per shape, in input order."""
    groups: list[list[int]] = [[] for _ in shapes]
    for i, inst in enumerate(instances):
        groups[shape_of(inst, shapes)].append(i)
    return groups


def plan_buckets(featurizer: Featurizer, phase: str, train_docs: Sequence[Document], num_buckets: int
                 ) -> tuple[Featurizer, list[Instance], tuple[Shape, ...]]:
    """(featurizer splitting slots for the buckets, training instances, bucket shapes) for a run.

    `num_buckets` <= 1: one shape (K, T), candidates in consecutive chunks of K, as in the paper.
    """
    full = full_shape(featurizer, phase)
    if num_buckets <= 1:
        return featurizer, make_instances(featurizer, phase, train_docs), (full,)
    featurizer = featurizer.with_slot_buckets(phase, choose_slot_buckets(featurizer, phase, train_docs, num_buckets))
    instances = make_instances(featurizer, phase, train_docs)
    shapes = choose_shapes(instances, featurizer.slot_buckets(phase), num_buckets) if instances else (full,)
    return featurizer, instances, shapes


def samples(config) -> bool:
    """Whether the config's phase trains on sampled instances (`TrainingSet`), whose batches get their own shapes."""
    if config.phase == "ner":
        return config.ner.train_negatives > 0
    return config.re.negative_subject_rate < 1


def bucket_count(config) -> int:
    """How many shapes `plan_buckets` picks for a run: the evaluation's (`eval_buckets`, 0 = `num_buckets`) when
    training samples, else `num_buckets` (training and evaluation then share the shapes)."""
    if samples(config) and config.eval_buckets > 0:
        return config.eval_buckets
    return config.num_buckets


def length_shapes(instances: Sequence[Instance], num_shapes: int) -> tuple[Shape, ...]:
    """`num_shapes` shapes for instances of similar slot counts (sampled training instances): all with the
    largest slot count (rounded up to 8), token lengths (multiples of 8) chosen to pad the fewest tokens."""
    K = round_up(max(len(inst.spans) for inst in instances))
    counts = np.bincount([round_up(max(real_length(inst), 1)) // 8 for inst in instances])
    sizes = [8 * i for i in np.flatnonzero(counts)]
    n_at = {t: int(counts[t // 8]) for t in sizes}
    best, best_cost = (sizes[-1],), None
    for r in range(0, min(num_shapes - 1, len(sizes) - 1) + 1):
        for combo in itertools.combinations(sizes[:-1], r):
            bounds = (*combo, sizes[-1])
            cost = sum(n * next(b for b in bounds if t <= b) for t, n in n_at.items())
            if best_cost is None or cost < best_cost:
                best, best_cost = bounds, cost
    return tuple((K, int(t)) for t in best)


def save_shapes(path: Path, featurizer: Featurizer, phase: str, shapes: Sequence[Shape],
                train_shapes: Optional[Sequence[Shape]] = None) -> None:
    """What evaluating a run later needs to build and batch instances as training did (`load_shapes`); the
    training batches' own shapes too when they differ (sampled negatives)."""
    saved = {"phase": phase, "slot_buckets": list(featurizer.slot_buckets(phase)), "shapes": [list(s) for s in shapes]}
    if train_shapes is not None and tuple(train_shapes) != tuple(shapes):
        saved["train_shapes"] = [list(s) for s in train_shapes]
    path.write_text(json.dumps(saved, indent=2))


def load_shapes(path: Path, featurizer: Featurizer, phase: str) -> tuple[Featurizer, tuple[Shape, ...]]:
    """The featurizer and shapes a run trained with; one full shape for runs saved before buckets existed."""
    if not path.exists():
        return featurizer, (full_shape(featurizer, phase),)
    saved = json.loads(path.read_text())
    return (featurizer.with_slot_buckets(phase, saved["slot_buckets"]),
            tuple((int(k), int(t)) for k, t in saved["shapes"]))


class TrainingSet:
    """A run's training instances per epoch, the shapes their batches are cut to, and their groups by shape.

    With every candidate and subject (the paper) the instances are built once. Sampling draws anew each epoch
    from (seed, epoch) alone, so a resume rebuilds the same epoch, and weights what it draws by the inverse
    sampling rate (`cand_weight`), so the loss keeps its expectation, or by 1 (`ner.reweight_negatives`,
    `re.reweight_subjects` False):

    * NER, `ner.train_negatives` > 0: every gold span of a window and that many of its other candidates
      (`Featurizer.sampled_ner_instances`). An instance keeps its slots and tokens from epoch to epoch.
    * RE, `re.negative_subject_rate` < 1: every subject instance with a gold relation, and that fraction of
      the others, drawn within each batch shape (shapes by length, `length_shapes`).

    Either way each shape holds the same number of instances every epoch (`groups`: index lists into
    `epoch(e)`), so the batch plan and the step count are fixed.
    """

    def __init__(self, featurizer: Featurizer, phase: str, docs: Sequence[Document], instances: Sequence[Instance],
                 shapes: Sequence[Shape], config):
        self.negatives = config.ner.train_negatives if phase == "ner" else 0
        self.hard = config.ner.hard_negatives
        self.subject_rate = config.re.negative_subject_rate if phase == "re" else 1.0
        self.reweight = config.ner.reweight_negatives if phase == "ner" else config.re.reweight_subjects
        self.seed, self.shapes, self._featurizer = config.seed, tuple(shapes), featurizer
        self._all = list(instances)
        if self.negatives > 0:
            self._windows = featurizer.ner_windows(docs)
            first = self._draw(0)
            self.shapes = length_shapes(first, max(config.num_buckets, 1)) if first else self.shapes
            self.groups = assign(first, self.shapes)
        elif self.subject_rate < 1:
            # A subject's objects are few (K <= 32): shapes by length alone pad less than evaluation's slot buckets.
            self.shapes = length_shapes(self._all, max(config.num_buckets, 1))
            self._strata = [([i for i in g if _has_positive(self._all[i])], [i for i in g if not _has_positive(self._all[i])])
                            for g in assign(self._all, self.shapes)]
            sizes = [len(pos) + _kept(len(neg), self.subject_rate) for pos, neg in self._strata]
            bounds = np.cumsum([0] + sizes)
            self.groups = [list(range(lo, hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
            first = self._draw(0)
        else:
            self.groups, first = assign(self._all, self.shapes), self._all
        self._cache: dict[int, list[Instance]] = {0: first}

    def _draw(self, epoch: int) -> list[Instance]:
        rng = np.random.default_rng([self.seed, epoch, 0x5A3])  # apart from the batch order's stream
        if self.negatives > 0:
            return self._featurizer.sampled_ner_instances(self._windows, self.negatives, rng, self.hard,
                                                          self.reweight)
        out = []
        for pos, neg in self._strata:
            out += [self._all[i] for i in pos]
            k = _kept(len(neg), self.subject_rate)
            if k:
                weight = len(neg) / k if self.reweight else 1.0
                out += [_reweighted(self._all[neg[j]], weight) for j in sorted(rng.choice(len(neg), k, replace=False))]
        return out

    def epoch(self, epoch: int) -> list[Instance]:
        """Epoch `epoch`'s instances (the last two epochs' are kept: the prefetcher may straddle a boundary)."""
        if self.negatives <= 0 and self.subject_rate >= 1:
            return self._all
        if epoch not in self._cache:
            self._cache = {e: v for e, v in self._cache.items() if e >= epoch - 1}
            self._cache[epoch] = self._draw(epoch)
        return self._cache[epoch]

    @property
    def first(self) -> list[Instance]:
        return self.epoch(0)

    @property
    def sampling(self) -> str:
        """How training samples, for the log ("" = every candidate and subject)."""
        if self.negatives > 0:
            hard = f" ({self.hard} of them overlapping a gold span)" if self.hard else ""
            weight = "inverse-rate weights" if self.reweight else "weight 1"
            return f"{self.negatives} sampled negatives per window and epoch{hard}, {weight}"
        if self.subject_rate < 1:
            weight = "inverse-rate weights" if self.reweight else "weight 1"
            return f"{self.subject_rate:g} of the subjects without a relation per epoch, {weight}"
        return ""


def _has_positive(inst: Instance) -> bool:
    return bool(np.any(inst.arrays["labels"] > 0))


def _kept(n: int, rate: float) -> int:
    """How many of n instances a rate keeps: at least one of a non-empty stratum."""
    return 0 if n == 0 else max(1, int(round(rate * n)))


def _reweighted(inst: Instance, weight: float) -> Instance:
    arrays = dict(inst.arrays, cand_weight=inst.arrays["cand_weight"] * np.float32(weight))
    return dataclasses.replace(inst, arrays=arrays)


def epoch_batches(groups: Sequence[Sequence[int]], batch_size: int, seed: int, epoch: int) -> list[tuple[int, list[int]]]:
    """One epoch's batches as (bucket, instance indices), from (seed, epoch) alone so a resume sees the same.

    Each bucket's instances are shuffled and cut into batches (the last one short); the batches of all
    buckets are then shuffled together.
    """
    rng = np.random.default_rng([seed, epoch])
    out = []
    for b, idx in enumerate(groups):
        order = [idx[i] for i in rng.permutation(len(idx))]
        out += [(b, order[lo:lo + batch_size]) for lo in range(0, len(order), batch_size)]
    return [out[i] for i in rng.permutation(len(out))]


class prefetch:  # noqa: N801 (used like a generator function)
    """Iterate `items` with up to `size` items computed ahead in a background thread, in the same order.

    Hides host work (stacking, cutting, the transfer to the devices) behind the running step. An exception in
    the producer is raised at the item where it happened. `size=0` iterates in the caller's thread. `close()`
    stops the producer (also after a crash of the consumer).
    """

    _END = object()

    def __init__(self, items: Iterable, size: int = 2):
        self._items = iter(items)
        self._size = size
        if size > 0:
            self._queue: queue.Queue = queue.Queue(maxsize=size)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._produce, name="lai_jax-prefetch", daemon=True)
            self._thread.start()

    def _produce(self) -> None:
        try:
            for item in self._items:
                while not self._stop.is_set():
                    try:
                        self._queue.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._put_final((True, self._END))
        except BaseException as e:  # re-raised in the consumer, at this item
            self._put_final((False, e))

    def _put_final(self, entry) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> "prefetch":
        return self

    def __next__(self):
        if self._size <= 0:
            return next(self._items)
        ok, item = self._queue.get()
        if not ok:
            raise item
        if item is self._END:
            self._queue.put((True, self._END))  # later calls stop too
            raise StopIteration
        return item

    def close(self) -> None:
        if self._size > 0:
            self._stop.set()
            self._thread.join()


def num_batches(groups: Sequence[Sequence[int]], batch_size: int) -> int:
    return sum(-(-len(g) // batch_size) for g in groups)


def eval_batches(instances: Sequence[Instance], shapes: Sequence[Shape], batch_size: int
                 ) -> Iterator[tuple[dict[str, np.ndarray], list[int]]]:
    """(batch cut to its shape and padded to `batch_size`, instance indices) over every instance once."""
    for b, idx in enumerate(assign(instances, shapes)):
        for lo in range(0, len(idx), batch_size):
            chunk = idx[lo:lo + batch_size]
            yield cut(stack([instances[i] for i in chunk], batch_size), shapes[b]), chunk
