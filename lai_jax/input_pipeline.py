"""Host-side batching: length buckets and the seeded, resumable order of training batches.

Every instance is built at the config's static length T (`lai_jax.data.features`), but most are much
shorter: the text budget C is sized for the longest sentence and the marker block for the fullest one.
Markers are packed right after the text and annotations, so an instance's real tokens are a prefix of its
T slots and can be cut to any length that holds them. A few bucket lengths chosen from the training data
(`num_buckets`, the largest always T) give each batch the shortest of them that fits all its instances:
at most `num_buckets` compiles per phase and split, and far less padding to compute on.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from lai_jax.data import masks
from lai_jax.data.features import Instance, round_up, stack

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
