"""Seeded, stratified train/test split of each school's families."""

from __future__ import annotations

import numpy as np
import pandas as pd

from client_node.table import LABEL


def split_families(
    table: pd.DataFrame, *, test_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test): `test_fraction` of each label's families go to test, chosen by `seed`."""
    rng = np.random.default_rng(seed)
    test_rows: list[int] = []
    for label in (0, 1):
        rows = np.flatnonzero(table[LABEL].to_numpy() == label)
        rng.shuffle(rows)
        test_rows.extend(rows[: int(round(test_fraction * len(rows)))].tolist())
    is_test = np.zeros(len(table), dtype=bool)
    is_test[test_rows] = True
    return table[~is_test].reset_index(drop=True), table[is_test].reset_index(drop=True)
