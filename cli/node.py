"""`schoolfed node ...`: for school IT."""

from __future__ import annotations

import argparse
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


def _opt_out(args: argparse.Namespace, console: Console) -> int:
    from client_node.node import SchoolNode

    node = SchoolNode(args.node_dir)  # refuses under a policy that fails verification
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
