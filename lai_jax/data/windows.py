"""Word windows of long sentences: overlapping windows of whole words that fit the text budget.

Used by the featurizer for training, evaluation and prediction alike (see `lai_jax.data.features`).
"""
from __future__ import annotations

from typing import Optional, Sequence

Span = tuple[int, int]


def plan_windows(piece_counts: Sequence[int], budget: int, max_span_len: int) -> list[tuple[int, int]]:
    """Word windows [lo, hi) of a sentence: each fits `budget` wordpieces, together they cover every word.

    Consecutive windows share ``2 * max_span_len`` words (fewer for windows of under 4 * max_span_len
    words, but at least ``max_span_len - 1`` unless the pieces of that overlap plus the next word exceed
    the budget), and each window reaches further than the one before. So every word is covered, there
    are at most as many windows as words, and each span of at most ``max_span_len`` words whose pieces fit
    the budget lies wholly inside some window. The last window is stretched backwards to use the whole
    budget. A count above ``budget`` is treated as ``budget`` (the featurizer shortens such words).
    """
    if budget < 1:
        raise ValueError(f"budget must be positive, got {budget}")
    counts = [min(max(int(c), 1), budget) for c in piece_counts]
    n = len(counts)
    if sum(counts) <= budget:
        return [(0, n)] if n else []
    min_overlap = max(max_span_len - 1, 0)
    windows: list[tuple[int, int]] = []
    lo = 0
    while True:
        hi, total = lo, 0
        while hi < n and total + counts[hi] <= budget:
            total += counts[hi]
            hi += 1
        if hi == n:
            while lo > 0 and total + counts[lo - 1] <= budget:
                lo -= 1
                total += counts[lo]
            windows.append((lo, n))
            return windows
        windows.append((lo, hi))
        overlap = max(min_overlap, min(2 * max_span_len, (hi - lo) // 2))
        lo = max(lo + 1, hi - overlap)
        # The next window must take in word `hi`: drop overlap that would leave it no room. (A span
        # starting before the new `lo` and reaching `hi` has more pieces than the budget anyway.)
        total = sum(counts[lo:hi + 1])
        while total > budget:
            total -= counts[lo]
            lo += 1


def centrality(lo: int, hi: int, start: int, end: int) -> int:
    """Words of context between the span [start, end] and the nearer edge of the window [lo, hi)."""
    return min(start - lo, hi - 1 - end)


def best_window(windows: Sequence[tuple[int, int]], start: int, end: int) -> Optional[int]:
    """Index of the window holding the words [start, end] where they are most central (ties: the first
    such window), None when no window holds them all."""
    best, score = None, -1
    for k, (lo, hi) in enumerate(windows):
        if lo <= start and end < hi:
            c = centrality(lo, hi, start, end)
            if c > score:
                best, score = k, c
    return best


def fit_window(piece_counts: Sequence[int], start: int, end: int, budget: int, toward: int = 0
               ) -> Optional[tuple[int, int]]:
    """A window [lo, hi) around the words [start, end] that fits `budget` (counts above the budget count as
    the budget); None if those words alone do not fit. It grows a word at a time on alternate sides
    (``toward=0``: centred), or first as far right (``toward=1``) or left (``toward=-1``) as it can."""
    counts = [min(max(int(c), 1), budget) for c in piece_counts]
    total = sum(counts[start:end + 1])
    if total > budget:
        return None
    lo, hi = start, end + 1
    sides = {0: ((-1, 1),), 1: ((1,), (-1,)), -1: ((-1,), (1,))}[toward]
    for steps in sides:
        grew = True
        while grew:
            grew = False
            for step in steps:
                if step < 0 and lo > 0 and total + counts[lo - 1] <= budget:
                    lo, total, grew = lo - 1, total + counts[lo - 1], True
                if step > 0 and hi < len(counts) and total + counts[hi] <= budget:
                    hi, total, grew = hi + 1, total + counts[hi], True
    return lo, hi


def pair_windows(counts: Sequence[int], spans: Sequence[Span], budget: int
                 ) -> tuple[list[tuple[int, int]], dict, dict]:
    """RE windows of a sentence too long for one: (windows, window index of each ordered pair within reach,
    window index of each subject), for words of `counts` wordpieces.

    Each subject x has its own window centred on it (`fit_window`); an object y outside it goes to x's window
    reaching as far right (y after x) or left (y before x) as the budget allows, so the pair has a slot
    whenever the words from one entity to the other fit the budget: at most three windows per subject. A
    pair beyond that is unreachable (left out of the dict); a subject too long for any window has none.
    """
    wins: list[tuple[int, int]] = []
    index: dict[tuple[int, int], int] = {}

    def window_id(w: tuple[int, int]) -> int:
        if w not in index:
            index[w] = len(wins)
            wins.append(w)
        return index[w]

    def holds(w: Optional[tuple[int, int]], span: Span) -> bool:
        return w is not None and w[0] <= span[0] and span[1] < w[1]

    assign: dict[tuple[Span, Span], int] = {}
    home: dict[Span, int] = {}
    for x in spans:
        own = fit_window(counts, x[0], x[1], budget)
        if own is None:
            continue
        home[x] = window_id(own)
        for y in spans:
            if y == x:
                continue
            w = own
            if not holds(w, y):
                toward = 1 if y[0] >= x[0] else -1 if y[1] <= x[1] else 0
                w = fit_window(counts, min(x[0], y[0]), max(x[1], y[1]), budget, toward)
            if holds(w, y):
                assign[(x, y)] = window_id(w)
    return wins, assign, home
