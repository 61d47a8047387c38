"""Retention: delete what the policy no longer allows the node to keep. Safe to run daily.

A record older than its category's `retention_days` (by the date it is about) is deleted; a
category the policy disables is emptied. Each run appends one `retention` audit entry with the
number of rows deleted per table (never which ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from client_node.node import SchoolNode
from client_node.store import Store

# policy category -> the store tables that hold it
TABLES = {
    "event_attendance": ("event_attendance", "events"),
    "communications": ("communications",),
    "platform_activity": ("platform_activity",),
    "grades": ("grades",),
    "attendance": ("attendance",),
    "wearables": ("wearables",),
}


@dataclass(frozen=True)
class RetentionResult:
    deleted: dict[str, int]  # table -> rows deleted
    cutoffs: dict[str, str]  # table -> "before YYYY-MM-DD" or "all (category disabled)"

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


def apply_retention(node_dir: Path, *, today: date | None = None) -> RetentionResult:
    # The policy must verify, but may have expired: deleting under the last policy a node
    # had is always allowed (keeping data because a policy lapsed would be the wrong way round).
    node = SchoolNode(node_dir, today=today, in_force=False)
    day = today or date.today()
    store = Store.for_node(node_dir)
    deleted: dict[str, int] = {}
    cutoffs: dict[str, str] = {}
    for category, tables in TABLES.items():
        rule = node.policy.categories.get(category)  # type: ignore[call-overload]
        if rule is None or not rule.enabled:
            cutoff, why = date.max, "all (category not allowed)"
        elif rule.retention_days is None:
            continue  # lint flags a category without retention; nothing to enforce
        else:
            cutoff = day - timedelta(days=rule.retention_days)
            why = f"before {cutoff}"
        for table in tables:
            deleted[table] = store.delete_older_than(table, cutoff)
            cutoffs[table] = why
    node.audit.append(
        "retention",
        deleted=sum(deleted.values()),
        per_table=deleted,
        policy_id=node.policy.policy_id,
        policy_version=node.policy.version,
    )
    return RetentionResult(deleted, cutoffs)
