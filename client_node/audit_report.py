"""What a node's audit log and ledger say, summarised for a privacy officer."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from client_node.node import SchoolNode, node_audit_log
from privacy.accountant import epsilon_of


def summarize(node_dir: Path) -> dict[str, Any]:
    """Budget per period (training, analytics), traffic per month, refusals and deletions."""
    audit = node_audit_log(node_dir)
    verification = audit.verify()
    entries = audit.entries() if verification.ok else []
    node = SchoolNode(node_dir)
    training, analytics = node.policy.training_budget, node.policy.analytics_budget
    trained, queried = node.ledger.periods(), node.analytics_ledger.periods()
    periods = {
        period: {
            "training": {
                "epsilon_spent": epsilon_of(trained.get(period, []), delta=training.delta),
                "epsilon_budget": training.epsilon,
                "rounds": len(trained.get(period, [])),
            },
            "analytics": {
                "epsilon_spent": epsilon_of(queried.get(period, []), delta=analytics.delta),
                "epsilon_budget": analytics.epsilon,
                "queries": len(queried.get(period, [])),
            },
        }
        for period in sorted({*trained, *queried})
    }
    periods.setdefault(
        node.policy.period,
        {
            "training": {"epsilon_spent": 0.0, "epsilon_budget": training.epsilon, "rounds": 0},
            "analytics": {"epsilon_spent": 0.0, "epsilon_budget": analytics.epsilon, "queries": 0},
        },
    )
    traffic: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
    refusals: Counter[str] = Counter()
    deletions, ingestions = 0, 0
    for entry in entries:
        month, data = entry["at"][:7], entry["data"]
        if entry["kind"] == "egress":
            row = traffic[month].setdefault(data["message_type"], {"messages": 0, "bytes": 0})
            row["messages"] += 1
            row["bytes"] += int(data["bytes"])
        elif entry["kind"] == "refusal":
            refusals[f"{data.get('what', '?')}: {data.get('status', 'refused')}"] += 1
        elif entry["kind"] == "retention":
            deletions += int(data.get("deleted", 0))
        elif entry["kind"] == "ingestion":
            ingestions += 1
    return {
        "school_id": node.school_id,
        "policy": {"policy_id": node.policy.policy_id, "version": node.policy.version},
        "audit_log": {
            "entries": verification.entries,
            "verified": verification.ok,
            "problem": verification.reason,
        },
        "periods": periods,
        "traffic": dict(traffic),
        "refusals": dict(refusals),
        "deletions": deletions,
        "ingestions": ingestions,
    }
