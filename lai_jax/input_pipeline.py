"""Host side of training and evaluation: documents from files, instances, and batches for the devices.

Reading: `load_splits` gives a config's train/dev/test documents (bundled datasets and ACE05 through the
tensorflow-datasets builders, anything else through `lai_jax.data.readers`), after limits and ADE's dev
hold-out. Featurizing: `make_instances` turns documents into fixed-shape instances
(`lai_jax.data.features`). Batching: `stack` pads a batch with zero-weight rows.

Length buckets: every instance is built at the config's static length T, but most are much shorter: the
text budget C is sized for the longest sentence and the marker block for the fullest one. Markers are
packed right after the text and annotations, so an instance's real tokens are a prefix of its T slots and
can be cut to any length that holds them. A few bucket lengths chosen from the training data
(`num_buckets`, the largest always T) give each batch the shortest of them that fits all its instances:
at most `num_buckets` compiles per phase and split, and far less padding to compute on.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from lai_jax.data import masks
from lai_jax.data.documents import Document, Entity, Sentence
from lai_jax.data.features import Featurizer, Instance, round_up
from lai_jax.data.labels import LabelSet

DATA_ROOT = Path(os.environ.get("LAI_JAX_DATA", Path(__file__).resolve().parents[1] / "data"))
BUNDLED = ("scierc", "ade", "conll04")


# --------------------------------------------------------------------------------------------- reading
def labels_path(config) -> Path:
    """The config's label annotation file (default: the bundled one of its dataset)."""
    return Path(config.data.labels) if config.data.labels else DATA_ROOT / config.dataset / "labels.json"


def load_docs(config, split: str, labels: LabelSet) -> list[Document]:
    """One split as documents: bundled/ACE05 through the tfds builders, anything else through the readers."""
    from lai_jax.data import readers, tfds_builders
    ds = config.dataset
    if config.data.use_tfds and (ds in BUNDLED and not config.data.dir or ds == "ace05"):
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
    names = {config.data.train_split: "train", config.data.dev_split or "dev": "dev", config.data.test_split: "test"}
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
def stack(instances: Sequence[Instance], size: Optional[int] = None) -> dict[str, np.ndarray]:
    """Stack instances into a batch, padding to `size` with zero-weight rows (all PAD, no candidates)."""
    arrays = [inst.arrays for inst in instances]
    size = size or len(arrays)
    if len(arrays) < size:
        empty = {k: np.zeros_like(v) for k, v in arrays[0].items()}
        arrays = list(arrays) + [empty] * (size - len(arrays))
    return {k: np.stack([a[k] for a in arrays]) for k in arrays[0]}


# Arrays with one entry per token: the only ones a bucket cuts.
TOKEN_ARRAYS = ("input_ids", "position_ids", "token_type_ids", "token_groups", "marker_partner")


def real_length(inst: Instance) -> int:
    """Number of leading non-PAD tokens (all real tokens come first)."""
    return int(np.count_nonzero(inst.arrays["token_groups"] != masks.PAD))


def bucket_lengths(instances: Sequence[Instance], num_buckets: int) -> tuple[int, ...]:
    """`num_buckets` lengths (multiples of 8, ascending, the last = T) at equal quantiles of the real lengths.

    `instances` must not be empty (their common length T is the largest bucket)."""
    T = int(instances[0].arrays["input_ids"].shape[0])
    if num_buckets <= 1:
        return (T,)
    lengths = np.array([real_length(i) for i in instances])
    qs = np.quantile(lengths, [k / num_buckets for k in range(1, num_buckets)], method="higher")
    return tuple(sorted({min(T, round_up(int(q))) for q in qs} | {T}))


def bucket_of(length: int, buckets: Sequence[int]) -> int:
    """Index of the shortest bucket holding `length` tokens."""
    for b, size in enumerate(buckets):
        if length <= size:
            return b
    raise ValueError(f"instance of {length} tokens exceeds the largest bucket {buckets[-1]}")


def cut(batch: dict[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
    """A stacked batch with its token arrays cut to `length` (marker partners always point inside it)."""
    return {k: (v[:, :length] if k in TOKEN_ARRAYS else v) for k, v in batch.items()}


def assign(instances: Sequence[Instance], buckets: Sequence[int]) -> list[list[int]]:
    """Instance indices per bucket, in input order."""
    groups: list[list[int]] = [[] for _ in buckets]
    for i, inst in enumerate(instances):
        groups[bucket_of(real_length(inst), buckets)].append(i)
    return groups


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


def num_batches(groups: Sequence[Sequence[int]], batch_size: int) -> int:
    return sum(-(-len(g) // batch_size) for g in groups)


def eval_batches(instances: Sequence[Instance], buckets: Sequence[int], batch_size: int
                 ) -> Iterator[tuple[dict[str, np.ndarray], list[int]]]:
    """(batch cut to its bucket and padded to `batch_size`, instance indices) over every instance once."""
    for b, idx in enumerate(assign(instances, buckets)):
        for lo in range(0, len(idx), batch_size):
            chunk = idx[lo:lo + batch_size]
            yield cut(stack([instances[i] for i in chunk], batch_size), buckets[b]), chunk
