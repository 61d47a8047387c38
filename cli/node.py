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

    init = actions.add_parser(
        "init",
        help="a node directory for a real deployment: config, school secret, policy, "
        "the SuperNode's key pair and how to reach the district",
    )
    init.add_argument("--node-dir", type=Path, required=True)
    init.add_argument("--school-id", required=True)
    init.add_argument(
        "--district", type=Path, default=None, help="take address, CA and policy from DIR"
    )
    init.add_argument("--superlink", default=None, help="HOST:PORT of the district's SuperLink")
    init.add_argument("--ca-cert", type=Path, default=None, help="the district's ca.crt")
    init.add_argument("--policy", type=Path, default=None, help="the signed district policy")
    init.add_argument("--trust-anchor", type=Path, default=None, help="the officer's public key")
    init.set_defaults(handler=_init)

    reg = actions.add_parser(
        "register", help="register this node's public key with the district (or print how)"
    )
    reg.add_argument("--node-dir", type=Path, required=True)
    reg.add_argument("--district", type=Path, default=None, help="run it against DIR's SuperLink")
    reg.set_defaults(handler=_register)

    start = actions.add_parser(
        "start", help="compute the family tables from the store and start the SuperNode"
    )
    start.add_argument("--node-dir", type=Path, required=True)
    start.add_argument(
        "--snapshot-week", type=int, default=None, help="week of the records to snapshot at"
    )
    start.set_defaults(handler=_start)
    for name, helptext, handler in (
        ("stop", "stop the SuperNode and its ClientApp executor", _stop),
        ("status", "is the SuperNode running and connected", _node_status),
    ):
        p = actions.add_parser(name, help=helptext)
        p.add_argument("--node-dir", type=Path, required=True)
        p.set_defaults(handler=handler)


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


def _init(args: argparse.Namespace, console: Console) -> int:
    from federation.deployment import district_node_files, init_node
    from federation.errors import DeploymentError

    if args.district is not None:
        superlink, ca, policy, anchor = district_node_files(args.district)
    else:
        missing = [
            flag
            for flag, value in (
                ("--superlink", args.superlink),
                ("--ca-cert", args.ca_cert),
                ("--policy", args.policy),
                ("--trust-anchor", args.trust_anchor),
            )
            if value is None
        ]
        if missing:
            raise DeploymentError(
                f"node init needs {', '.join(missing)} (or --district DIR on the district's machine)"
            )
        superlink, ca, policy, anchor = args.superlink, args.ca_cert, args.policy, args.trust_anchor
    settings = init_node(
        args.node_dir,
        school_id=args.school_id,
        superlink=superlink,
        ca_cert=ca,
        policy=policy,
        trust_anchor=anchor,
    )
    console.print(
        f"node {args.school_id} in {args.node_dir}: SuperLink {settings.superlink}; "
        f"public key {args.node_dir / 'node.pub'} (send it to the district to register)"
    )
    return 0


def _register(args: argparse.Namespace, console: Console) -> int:
    from federation.deployment import register_command, register_node

    public_key = args.node_dir / "node.pub"
    if args.district is None:
        console.print("the district registers this node with:", highlight=False)
        console.print(
            register_command(district_dir=Path("DISTRICT_DIR"), public_key=public_key),
            markup=False,
            highlight=False,
        )
        return 0
    node_id = register_node(district_dir=args.district, public_key=public_key)
    console.print(f"registered: SuperNode {node_id}")
    return 0


def _start(args: argparse.Namespace, console: Console) -> int:
    from client_node.snapshot import write_tables_from_store
    from client_node.store import STORE_FILE
    from federation.deployment import start_node

    if (args.node_dir / STORE_FILE).is_file():
        tables = write_tables_from_store(args.node_dir, week=args.snapshot_week)
        console.print(
            f"family tables at {tables.snapshot}: {tables.train_families} to train on, "
            f"{tables.test_families} held out"
        )
    with console.status("starting the SuperNode"):
        node_id = start_node(args.node_dir)
    console.print(f"SuperNode {node_id} connected (TLS, authenticated)")
    return 0


def _stop(args: argparse.Namespace, console: Console) -> int:
    from federation.deployment import stop_node

    console.print("node stopped" if stop_node(args.node_dir) else "node was not running")
    return 0


def _node_status(args: argparse.Namespace, console: Console) -> int:
    from federation.deployment import NodeState, node_state, read_supernode

    settings = read_supernode(args.node_dir)
    state = node_state(args.node_dir)
    console.print(f"SuperNode: {state} (SuperLink {settings.superlink})")
    return 0 if state == NodeState.CONNECTED else 1
