"""Slot buckets: a few candidate-slot counts K_b (the largest = the config's K) and how a window's candidates
are split into instances that fill them.

A NER instance carries up to K candidate spans (RE: up to K objects of one subject), each as a pair of
marker tokens; with one static K most slots are padding (a short sentence has few spans). Instances are
instead built for one of a few slot counts, and a window's spans are split into chunks whose sizes fit
them. The split costs tokens: every chunk repeats the text and annotations (`overhead` tokens) and
carries two markers per slot of its bucket, so `split_slots` picks the chunk sizes with the fewest tokens
among splits into as many chunks as K forces, or one more. `choose_slot_buckets` picks the bucket sizes
(multiples of 8) that minimise the tokens of a whole training split.
"""
from __future__ import annotations

import functools
import itertools
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

SLOT_MULTIPLE = 8  # bucket sizes are multiples of this (of 4 for K <= 32, as RE's objects)


def num_candidates(num_words: int, max_span_len: int) -> int:
    """|Psi| for a sentence of m words: m*L + (L - L^2)/2 when m >= L (the paper's formula), else m(m+1)/2."""
    l = min(num_words, max_span_len)
    return num_words * l + (l - l * l) // 2


def enumerate_spans(num_words: int, max_span_len: int) -> list[tuple[int, int]]:
    """All spans of <= max_span_len words, sorted by (start, end) so neighbours share an instance."""
    return [(i, j) for i in range(num_words) for j in range(i, min(num_words, i + max_span_len))]


def _cost(sizes: Sequence[int], overhead: int) -> int:
    return len(sizes) * overhead + 2 * sum(sizes)


@functools.lru_cache(maxsize=65536)
def _best_split(k: int, buckets: tuple[int, ...], overhead: int) -> tuple[int, ...]:
    """Bucket sizes (ascending) of the cheapest split of k slots into ceil(k / K) or one more chunks."""
    if k <= 0:
        return (buckets[0],)
    n0 = -(-k // buckets[-1])
    best: tuple[int, ...] = ()
    for n in (n0, n0 + 1):
        for sizes in itertools.combinations_with_replacement(buckets, n):
            if sum(sizes) >= k and n <= k and (not best or _cost(sizes, overhead) < _cost(best, overhead)):
                best = sizes
    return best


def split_slots(k: int, buckets: Sequence[int], overhead: int) -> list[int]:
    """How many of a window's k slots go to each of its instances (in order, every one >= 1 when k > 0).

    `buckets` are the slot counts instances can have (ascending, the last = K); `overhead` the tokens an
    instance spends besides its markers. Chunks are filled in proportion to their bucket's size.
    """
    sizes = _best_split(int(k), tuple(buckets), int(overhead))
    if k <= 0:
        return [0]
    total = sum(sizes)
    counts = [k * s // total for s in sizes]
    for i in range(k - sum(counts)):  # the remainder, one each, to chunks that still have room
        j = max(range(len(sizes)), key=lambda c: (sizes[c] - counts[c], -c))
        counts[j] += 1
    return counts


def total_tokens(demand: Iterable[tuple[int, int]], buckets: Sequence[int]) -> int:
    """Tokens (markers + overhead) of instances for every (k, overhead) window under `buckets`."""
    return _total(Counter(demand), tuple(buckets))


def _total(counted: Counter, buckets: tuple[int, ...]) -> int:
    return sum(n * _cost(_best_split(k, buckets, o), o) for (k, o), n in counted.items())


def choose_slot_buckets(demand: Sequence[tuple[int, int]], max_slots: int, num_buckets: int) -> tuple[int, ...]:
    """`num_buckets` slot counts (ascending multiples of 8, or of 4 for max_slots <= 32; the last = max_slots)
    with the fewest total tokens for windows with (k slots, overhead tokens) each; (max_slots,) when
    num_buckets <= 1."""
    if num_buckets <= 1 or not demand:
        return (max_slots,)
    step = SLOT_MULTIPLE if max_slots > 32 else SLOT_MULTIPLE // 2
    sizes = list(range(step, max_slots, step))
    counted = Counter(demand)
    best, best_cost = (max_slots,), None
    for r in range(1, min(num_buckets - 1, len(sizes)) + 1):
        for combo in itertools.combinations(sizes, r):
            buckets = (*combo, max_slots)
            cost = _total(counted, buckets)
            if best_cost is None or cost < best_cost:
                best, best_cost = buckets, cost
    return best


def spans_overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two inclusive word spans share a word."""
    return a[0] <= b[1] and b[0] <= a[1]


def sample_negatives(spans: Sequence[tuple[int, int]], gold: Iterable[tuple[int, int]], negatives: int,
                     rng: np.random.Generator, hard: int = 0, reweight: bool = True
                     ) -> tuple[list[tuple[int, int]], list[float]]:
    """Every gold span of `spans` and `negatives` of its other spans drawn without replacement, in `spans`'
    order, each with a weight: 1 for gold, the inverse of its stratum's sampling rate for a drawn negative.

    With `hard` = 0 the negatives are drawn uniformly (one stratum). With `hard` > 0 they are stratified:
    `hard` of them from the negatives that share a word with a gold span (boundary errors, the ones a
    sample of uniform draws rarely holds) and the rest, at least one, from the others; a stratum too small
    to fill its share is taken whole and the other fills the gap, so the count stays `negatives` whatever
    the draw.
    The weights make a weighted sum over the sample equal the sum over all `spans` in expectation, and
    the weights of a window add up to its number of candidates exactly (the loss normaliser is
    unchanged). `negatives` <= 0 keeps every span with weight 1 (no sampling). `reweight=False` gives the drawn
    negatives weight 1 (the same draws; SpERT's sampled negatives).
    """
    gold = set(gold)
    neg = [i for i, sp in enumerate(spans) if sp not in gold]
    if negatives <= 0 or len(neg) <= negatives:
        return list(spans), [1.0] * len(spans)
    near, far = [], []
    for i in neg:
        (near if hard > 0 and any(spans_overlap(spans[i], g) for g in gold) else far).append(i)
    if near and far and negatives >= 2:
        # Every stratum keeps at least one draw: one never drawn would be missing from the expectation.
        h = min(len(near), max(hard, negatives - len(far)), negatives - 1)
        strata = [(near, h), (far, negatives - h)]
    else:
        strata = [(neg, negatives)]
    weight: dict[int, float] = {}
    for members, k in strata:
        if k > 0:
            for j in rng.choice(len(members), k, replace=False).tolist():
                weight[members[j]] = len(members) / k if reweight else 1.0
    keep = [i for i, sp in enumerate(spans) if sp in gold or i in weight]
    return [spans[i] for i in keep], [weight.get(i, 1.0) for i in keep]
