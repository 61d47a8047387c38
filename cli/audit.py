"""`schoolfed audit ...`: for privacy officers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

EXIT_TAMPERED = 1


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="verify and summarise a node's audit log")
    actions = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = actions.add_parser("verify", help="find any change, deletion, insertion or reordering")
    verify.add_argument("--node-dir", type=Path, required=True)
    verify.set_defaults(handler=_verify)
    report = actions.add_parser("report", help="ε against budget, what left, refusals, deletions")
    report.add_argument("--node-dir", type=Path, required=True)
    report.add_argument("--json", action="store_true", help="print JSON instead of tables")
    report.set_defaults(handler=_report)


def _node_dir(path: Path) -> Path:
    from client_node.errors import NodeError

    if not (path / "node.yaml").is_file():
        raise NodeError(f"--node-dir {path}: not a node directory (no node.yaml)")
    return path


def _verify(args: argparse.Namespace, console: Console) -> int:
    from client_node.node import node_audit_log

    log = node_audit_log(_node_dir(args.node_dir))
    result = log.verify()
    if result.ok:
        console.print(f"ok: {log.path} has {result.entries} entries, chain and head intact")
        return 0
    print(
        f"schoolfed audit verify: {log.path} entry {result.first_bad} is bad: {result.reason}"
        f" ({result.entries} entries before it verify)",
        file=sys.stderr,
    )
    return EXIT_TAMPERED


def _report(args: argparse.Namespace, console: Console) -> int:
    from client_node.audit_report import summarize

    summary = summarize(_node_dir(args.node_dir))
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    log = summary["audit_log"]
    console.print(
        f"[bold]{summary['school_id']}[/] under {summary['policy']['policy_id']}"
        f" v{summary['policy']['version']}; audit log: {log['entries']} entries, "
        + ("verified" if log["verified"] else f"[red]NOT verified[/]: {log['problem']}")
    )
    budget = Table(title="ε per period")
    for col in ("period", "purpose", "ε spent", "ε budget", "uses"):
        budget.add_column(
            col, justify="right" if col in ("ε spent", "ε budget", "uses") else "left"
        )
    for period, parts in sorted(summary["periods"].items()):
        for purpose, row in parts.items():
            uses = row.get("rounds", row.get("queries", 0))
            budget.add_row(
                period,
                purpose,
                f"{row['epsilon_spent']:.3f}",
                f"{row['epsilon_budget']:.3f}",
                str(uses),
            )
    console.print(budget)
    traffic = Table(title="What left the school")
    for col in ("month", "message", "count", "bytes"):
        traffic.add_column(col, justify="right" if col in ("count", "bytes") else "left")
    for month, kinds in sorted(summary["traffic"].items()):
        for kind, row in sorted(kinds.items()):
            traffic.add_row(month, kind, str(row["messages"]), f"{row['bytes']:,}")
    console.print(traffic)
    refusals = ", ".join(f"{k} ×{v}" for k, v in summary["refusals"].items()) or "none"
    console.print(f"refusals: {refusals}; deletions: {summary['deletions']}")
    return 0 if log["verified"] else EXIT_TAMPERED
