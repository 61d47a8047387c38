"""District simulations from school exports: each school's export is ingested into its own node
and its family table is computed at the node, through the same pipeline a real school runs.

`--dataset synthetic` first writes a synthetic district (simulations/synth.py) into
OUT/exports/; `--dataset PATH` reads a folder with one export sub-folder per school.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
from sklearn.metrics import roc_auc_score

from client_node.features import (
    NOT_FEATURES,
    LabelRule,
    StoreFrames,
    features_at,
    training_snapshot,
)
from client_node.ingest import ingest_export
from client_node.node import NodeConfig, install_policy, write_node_config
from client_node.pseudonym import Pseudonymizer
from client_node.store import Store
from client_node.table import FAMILY_ID, LABEL
from simulations.errors import DatasetError

SYNTHETIC = "synthetic"
GROUND_TRUTH = "ground_truth.json"


def school_exports(root: Path) -> dict[str, Path]:
    """School id -> export folder (every sub-folder of `root` that has a roster)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"exports folder {root}: not found")
    found = {
        p.name: p
        for p in sorted(root.iterdir())
        if p.is_dir() and ((p / "roster.csv").is_file() or (p / "users.csv").is_file())
    }
    if not found:
        raise DatasetError(
            f"exports folder {root}: no school export in it (a sub-folder with roster.csv or "
            "OneRoster users.csv)"
        )
    return found


def frames_of(store: Store) -> StoreFrames:
    return StoreFrames(**{name: store.frame(name) for name in StoreFrames.__dataclass_fields__})


@dataclass(frozen=True)
class District:
    """What the exports gave: each school's family table, and for the simulator's report the
    snapshot and the schools' rule of thumb ("no event in the last 4 weeks") per family."""

    tables: dict[str, pd.DataFrame]
    rule_of_thumb: dict[str, pd.Series]  # school -> family pseudonym -> 1.0 / 0.0
    snapshots: dict[str, date]


def ingest_district(
    exports: dict[str, Path],
    *,
    nodes_root: Path,
    policy: Path,
    trust_anchor: Path,
    rule: LabelRule | None = None,
    snapshot_week: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> District:
    """Ingest every school's export into its node and compute each school's family table
    (at the latest labelled snapshot, or at `snapshot_week` of the records)."""
    tables, flags, snapshots = {}, {}, {}
    for school_id, export in exports.items():
        node_dir = nodes_root / school_id
        write_node_config(node_dir, NodeConfig(school_id=school_id))
        install_policy(node_dir, policy=policy, trust_anchor=trust_anchor)
        if progress:
            progress(f"ingesting {school_id}")
        ingest_export(export, node_dir=node_dir)
        with Store.for_node(node_dir) as store:
            frames = frames_of(store)
        snapshots[school_id] = training_snapshot(frames, rule=rule, week=snapshot_week)
        table = features_at(frames, snapshot=snapshots[school_id], rule=rule)
        table = table[table[LABEL].notna()].reset_index(drop=True)
        flags[school_id] = table.set_index(FAMILY_ID)["rule_no_event_4w"]
        tables[school_id] = table.assign(**{LABEL: table[LABEL].astype(int)}).drop(
            columns=list(NOT_FEATURES)
        )
    return District(tables, flags, snapshots)


def truly_disengaging(
    truth_file: Path, nodes_root: Path, district: District, *, horizon_weeks: int
) -> dict[str, dict[str, int]]:
    """Per school, family pseudonym -> 1 if the generator made it disengage within the label's
    horizon after the snapshot (its own record, not what the data shows), else 0.

    Only a simulation can do this: it maps the generator's raw family ids to pseudonyms with
    each school's own secret (the generator and the nodes are on one machine).
    """
    truth = json.loads(Path(truth_file).read_text())
    start = date.fromisoformat(truth["parameters"]["start"])
    out: dict[str, dict[str, int]] = {}
    for school_id, snapshot in district.snapshots.items():
        families = truth["schools"].get(school_id, {}).get("families", {})
        week = (snapshot - start).days // 7
        pseudonym = Pseudonymizer.for_node(nodes_root / school_id)
        out[school_id] = {
            pseudonym("family", raw): int(
                bool(info.get("disengages"))
                and info.get("disengage_week") is not None
                and week <= int(info["disengage_week"]) < week + horizon_weeks
            )
            for raw, info in families.items()
        }
    return out


def auc(labels: list[int], scores: list[float]) -> float | None:
    return float(roc_auc_score(labels, scores)) if len(set(labels)) == 2 else None
