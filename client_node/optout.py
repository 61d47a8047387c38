"""Families who opted out: kept at the node, honoured from the next round on.

An opted-out family is left out of every table the node trains, evaluates or computes
statistics on. The registry is an SQLite table in the node directory holding the family's
pseudonym (school IT types the school's own family id; it is pseudonymized at once, like every
id the node stores), so it matches the node's tables and no raw id is written.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from client_node.pseudonym import Pseudonymizer
from client_node.table import FamilyTable


class OptOutRegistry:
    def __init__(self, path: Path, *, pseudonymizer: Pseudonymizer) -> None:
        self.path = Path(path)
        self.pseudonym = pseudonymizer
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(self.path) as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS opt_outs (family_id TEXT PRIMARY KEY, at TEXT NOT NULL)"
            )

    def opt_out(self, family_id: str) -> bool:
        """Record an opt-out of the school's family `family_id`; False if already recorded."""
        pid = self.pseudonym("family", family_id)
        with sqlite3.connect(self.path) as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO opt_outs VALUES (?, ?)",
                (pid, datetime.now(UTC).isoformat(timespec="seconds")),
            )
            return cursor.rowcount == 1

    def opt_back_in(self, family_id: str) -> bool:
        pid = self.pseudonym("family", family_id)
        with sqlite3.connect(self.path) as db:
            return db.execute("DELETE FROM opt_outs WHERE family_id = ?", (pid,)).rowcount == 1

    def family_ids(self) -> frozenset[str]:
        """Pseudonyms of the families who opted out."""
        with sqlite3.connect(self.path) as db:
            return frozenset(row[0] for row in db.execute("SELECT family_id FROM opt_outs"))

    def exclude(self, table: FamilyTable) -> FamilyTable:
        """`table` without the families who opted out."""
        out = self.family_ids()
        if not out:
            return table
        keep = ~np.isin(table.family_ids, list(out))
        return table.subset(np.flatnonzero(keep))
