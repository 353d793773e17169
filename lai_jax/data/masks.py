"""Partial attention masks (SPEC §4): token groups and a 3x3 visibility table.

The mask is built from per-token group ids, so the host ships T integers per instance instead of a
T x T boolean, and the device expands it. The same function serves numpy (inspection, tests) and jnp.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

PAD, TEXT, ANNO, MARKER = 0, 1, 2, 3
GROUP_NAMES = ("pad", "text", "anno", "marker")

# Rows: query group (TEXT, ANNO, MARKER); columns: key group (TEXT, ANNO, MARKER). 1 = query sees key.
PRESETS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "invisible": ((1, 0, 1), (0, 1, 1), (1, 1, 1)),
    "visible": ((1, 1, 1), (1, 1, 0), (1, 0, 1)),
    "full": ((1, 1, 1), (1, 1, 1), (1, 1, 1)),
    "plmarker": ((1, 0, 0), (0, 1, 0), (1, 0, 1)),
    # The paper's interaction without the routes by which one candidate's markers reach another candidate:
    # text and annotations read no marker and a marker reads the text, the annotations and its own partner.
    # A candidate's encoding then does not depend on which other candidates share its instance, so a sampled
    # training instance (gold spans always present, negatives drawn) is the same context as evaluation's.
    "isolated": ((1, 0, 0), (1, 1, 0), (1, 1, 1)),
}
# Presets in which a marker sees only itself and its partner among the markers (PL-Marker's rule).
PARTNER_ONLY = frozenset({"plmarker", "isolated"})


def visibility_table(preset: str, visibility: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """The 4x4 group table (PAD row/column included, all zero) for a preset or an explicit 3x3 table."""
    if visibility is not None and len(visibility):
        table = np.asarray(visibility, dtype=bool)
        if table.shape != (3, 3):
            raise ValueError(f"config field 'visibility' must be a 3x3 table (TEXT, ANNO, MARKER), got {table.shape}")
    elif preset in PRESETS:
        table = np.asarray(PRESETS[preset], dtype=bool)
    else:
        raise ValueError(f"config field 'attention_mask': unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    full = np.zeros((4, 4), dtype=bool)
    full[1:, 1:] = table
    return full


def attention_mask(groups, partner, table, partner_only: bool, xp=np):
    """[..., T, T] boolean mask: query row sees key column.

    groups: [..., T] int group ids; partner: [..., T] int, for a marker the index of its partner marker
    (its own index otherwise); table: 4x4 bool from `visibility_table`.
    """
    table = xp.asarray(table)
    mask = table[groups[..., :, None], groups[..., None, :]]
    t = groups.shape[-1]
    idx = xp.arange(t)
    eye = idx[:, None] == idx[None, :]
    if partner_only:
        both_markers = (groups[..., :, None] == MARKER) & (groups[..., None, :] == MARKER)
        is_partner = partner[..., :, None] == idx[None, :]
        mask = xp.where(both_markers, eye | is_partner, mask)
    # PAD sees and is seen by nothing but itself, which keeps the softmax finite.
    return mask | eye
