"""The family tables a deployed node trains and evaluates on, computed at the node from its store.

`schoolfed node ingest` fills the store from the school's exports; before the node joins a
run, its features are computed at a snapshot (the latest one whose label horizon the store has
fully observed, or a chosen week) and its families are split, stratified by label, into the
training table and the held-out table. Nothing here leaves the node.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from client_node.errors import NodeError
from client_node.features import (
    NOT_FEATURES,
    LabelRule,
    StoreFrames,
    features_at,
    training_snapshot,
)
from client_node.node import read_node_config
from client_node.store import STORE_FILE, Store
from client_node.table import LABEL, write_table


@dataclass(frozen=True)
class Tables:
    """What was written: family counts (aggregates only)."""

    snapshot: str
    train_families: int
    test_families: int
    n_features: int


def stratified_split(
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


def write_tables_from_store(
    node_dir: Path,
    *,
    week: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    rule: LabelRule | None = None,
) -> Tables:
    """Compute the node's family table from its store and write train and test tables."""
    node_dir = Path(node_dir)
    if not 0 < test_fraction < 1:
        raise NodeError(f"test fraction {test_fraction} is not allowed; it must be in (0, 1)")
    if not (node_dir / STORE_FILE).is_file():
        raise NodeError(
            f"node directory {node_dir}: no {STORE_FILE}; ingest the school's export first "
            f"(schoolfed node ingest EXPORT_DIR --node-dir {node_dir})"
        )
    config = read_node_config(node_dir)
    with Store.for_node(node_dir) as store:
        frames = StoreFrames(
            **{name: store.frame(name) for name in StoreFrames.__dataclass_fields__}
        )
    if frames.families.empty:
        raise NodeError(f"node directory {node_dir}: the store holds no families yet")
    snapshot = training_snapshot(frames, rule=rule, week=week)
    table = features_at(frames, snapshot=snapshot, rule=rule)
    table = table[table[LABEL].notna()].reset_index(drop=True)
    if table.empty:
        raise NodeError(
            f"node directory {node_dir}: no family is labelled at the snapshot {snapshot} "
            "(the store does not cover the label's horizon after it)"
        )
    table = table.assign(**{LABEL: table[LABEL].astype(int)}).drop(columns=list(NOT_FEATURES))
    train, test = stratified_split(table, test_fraction=test_fraction, seed=seed)
    write_table(train, node_dir / config.train_table)
    write_table(test, node_dir / config.test_table)
    return Tables(
        snapshot=snapshot.isoformat(),
        train_families=len(train),
        test_families=len(test),
        n_features=table.shape[1] - 2,
    )
