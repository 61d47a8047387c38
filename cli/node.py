"""`schoolfed node ...`: for school IT."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path
from typing import Any

from rich.console import Console


def register(sub: Any) -> None:
    node = sub.add_parser("node", help="operate a school node")
    actions = node.add_subparsers(dest="action", required=True, metavar="ACTION")
    opt_out = actions.add_parser(
        "opt-out", help="exclude a family from training, statistics and scoring from the next round"
    )
    opt_out.add_argument("family_id")
    opt_out.add_argument("--node-dir", type=Path, required=True)
    opt_out.add_argument("--undo", action="store_true", help="the family opts back in")
    opt_out.set_defaults(handler=_opt_out)
    ingest = actions.add_parser(
        "ingest",
        help="validate, minimize, pseudonymize and store a school export (all or nothing)",
    )
    ingest.add_argument("export_dir", type=Path, metavar="EXPORT_DIR")
    ingest.add_argument("--node-dir", type=Path, required=True)
    ingest.set_defaults(handler=_ingest)
    retention = actions.add_parser(
        "retention", help="delete what the policy no longer allows to keep (safe to run daily)"
    )
    retention.add_argument("--node-dir", type=Path, required=True)
    retention.add_argument(
        "--date", type=date.fromisoformat, default=None, help="act as if today were YYYY-MM-DD"
    )
    retention.set_defaults(handler=_retention)


def _opt_out(args: argparse.Namespace, console: Console) -> int:
    from client_node.errors import NodeError
    from client_node.node import SchoolNode

    node = SchoolNode(args.node_dir)  # refuses under a policy that fails verification
    if not args.undo and not node.knows_family(args.family_id):
        raise NodeError(
            f"family {args.family_id!r} is not one of this school's families in {args.node_dir};"
            " check the id against the roster the school exported"
        )
    if args.undo:
        changed = node.opt_outs.opt_back_in(args.family_id)
        node.audit.append("opt-in", changed=changed)
        console.print("the family is included again" if changed else "the family had not opted out")
    else:
        changed = node.opt_outs.opt_out(args.family_id)
        node.audit.append("opt-out", changed=changed)
        console.print(
            "the family is excluded from the next round on" if changed else "already opted out"
        )
    return 0


def _ingest(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from client_node.ingest import ingest_export

    bar = Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # piped output: the summary only
    )
    tasks: dict[str, Any] = {}

    def progress(file: str, done: int, total: int) -> None:
        if file not in tasks:
            tasks[file] = bar.add_task(file, total=total)
        bar.update(tasks[file], completed=done, total=total)

    with bar:
        summary = ingest_export(args.export_dir, node_dir=args.node_dir, progress=progress)
    console.print(summary.render(), markup=False, highlight=False)
    return 0


def _retention(args: argparse.Namespace, console: Console) -> int:
    from client_node.retention import apply_retention

    result = apply_retention(args.node_dir, today=args.date)
    for table, rows in result.deleted.items():
        console.print(f"{table}: {rows} row(s) deleted ({result.cutoffs[table]})")
    console.print(f"retention: {result.total} row(s) deleted in all; logged in the audit log")
    return 0
