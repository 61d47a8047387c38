"""Combine the aggregate metrics schools send into one figure per metric."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

UNDEFINED = -1.0  # a school sends -1 for a metric it cannot compute (AUC with one class only)


def weighted_mean(records: Sequence[Mapping[str, float]], *, weight_key: str) -> dict[str, float]:
    """Example-weighted mean of every metric; a school's undefined value is left out of its key."""
    keys = {k for r in records for k in r if k != weight_key}
    out: dict[str, float] = {weight_key: float(sum(r.get(weight_key, 0) for r in records))}
    for key in sorted(keys):
        pairs = [
            (float(r[key]), float(r.get(weight_key, 0)))
            for r in records
            if key in r and math.isfinite(float(r[key])) and float(r[key]) != UNDEFINED
        ]
        total = sum(w for _, w in pairs)
        out[key] = sum(v * w for v, w in pairs) / total if total > 0 else float("nan")
    return out
