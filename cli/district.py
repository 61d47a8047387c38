"""`schoolfed district ...`: for the district's IT and researchers (a real deployment)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from cli import options


def register(sub: Any) -> None:
    district = sub.add_parser("district", help="run the district's SuperLink and federated runs")
    actions = district.add_subparsers(dest="action", required=True, metavar="ACTION")

    init = actions.add_parser(
        "init", help="district CA, SuperLink certificate, policy and the flwr connection"
    )
    init.add_argument("--dir", type=Path, required=True)
    init.add_argument("--host", default="127.0.0.1", help="address the SuperLink listens on")
    init.add_argument("--port", type=options.port, default=None, help="default: a free port")
    init.add_argument("--schools", type=options.positive_int, default=3, help="schools per run")
    init.add_argument("--policy", type=Path, default=None, help="default: the shipped policy")
    init.add_argument("--trust-anchor", type=Path, default=None, help="the officer's public key")
    init.set_defaults(handler=_init)

    for name, helptext, handler in (
        ("up", "start flower-superlink (TLS, SuperNode authentication, state database)", _up),
        ("status", "is the SuperLink up, which SuperNodes are registered and online", _status),
        ("down", "stop the SuperLink and everything it started", _down),
    ):
        p = actions.add_parser(name, help=helptext)
        p.add_argument("--dir", type=Path, required=True)
        p.set_defaults(handler=handler)

    run = actions.add_parser("run", help="a federated training run on the deployment")
    run.add_argument("--dir", type=Path, required=True)
    run.add_argument("--rounds", type=options.positive_int, default=2)
    run.add_argument("--epsilon", type=options.epsilon, default=None)
    run.add_argument("--run-id", default="", help="resume a SchoolFed run (its ledger plan)")
    run.add_argument("--timeout", type=options.positive_int, default=1800, help="seconds")
    run.set_defaults(handler=_run)

    local = actions.add_parser(
        "local",
        help="a whole district on this machine: one SuperLink, a SuperNode per synthetic "
        "school, a run, the report; everything stopped at the end",
    )
    local.add_argument("--out", type=Path, required=True)
    local.add_argument("--schools", type=options.positive_int, default=3)
    local.add_argument("--families", type=options.positive_int, default=120)
    local.add_argument("--weeks", type=options.positive_int, default=20)
    local.add_argument("--rounds", type=options.positive_int, default=2)
    local.add_argument("--seed", type=options.seed, default=0)
    local.set_defaults(handler=_local)


def _init(args: argparse.Namespace, console: Console) -> int:
    from federation.deployment import init_district
    from policies.loader import default_policy_path, default_trust_anchor

    settings = init_district(
        args.dir,
        policy=args.policy or default_policy_path(),
        trust_anchor=args.trust_anchor or default_trust_anchor(),
        host=args.host,
        port=args.port,
        num_schools=args.schools,
    )
    console.print(
        f"district in {args.dir}: SuperLink {settings.host}:{settings.port}, "
        f"{settings.num_schools} schools per run"
    )
    console.print(f"give each school: {args.dir / 'certs' / 'ca.crt'} and the address")
    return 0


def _up(args: argparse.Namespace, console: Console) -> int:
    from federation.deployment import district_up

    with console.status("starting flower-superlink"):
        settings = district_up(args.dir)
    console.print(
        f"SuperLink up on {settings.host}:{settings.port} (TLS, SuperNode authentication)"
    )
    return 0


def _status(args: argparse.Namespace, console: Console) -> int:
    from federation.deployment import read_district, superlink_process, supernodes

    settings = read_district(args.dir)
    proc = superlink_process(args.dir)
    if not proc.running():
        console.print(f"SuperLink: down ({settings.host}:{settings.port})")
        return 1
    console.print(f"SuperLink: up, pid {proc.pid()}, {settings.host}:{settings.port}")
    for node in supernodes(args.dir):
        console.print(f"  SuperNode {node.node_id}: {node.status}")
    return 0


def _down(args: argparse.Namespace, console: Console) -> int:
    from federation.deployment import district_down

    console.print("SuperLink stopped" if district_down(args.dir) else "SuperLink was not running")
    return 0


def _print_report(report: dict, console: Console) -> None:
    from aggregator.report import fmt

    for r in report["rounds"]:
        console.print(
            f"round {r['round']}: federated AUC {fmt(r['auc'])} ({fmt(r.get('seconds'), 1)} s)"
        )
    for s in report["schools"]:
        reason = f": {s['reason']}" if s["reason"] else ""
        console.print(
            f"  {s['school_id']}: {s['status']}{reason}; ε spent {fmt(s['epsilon_spent'])}"
            f" of {fmt(s['epsilon_budget'])}"
        )
    if report.get("schools_missing"):
        console.print(f"[yellow]{report['schools_missing']} school(s) never replied[/]")
    if not report.get("model_saved"):
        console.print("[yellow]no school trained[/]: no model was saved (exit status 1)")


def _exit_status(report: dict) -> int:
    """0 when the run trained a model; 1 when it finished but no school could train."""
    return 0 if report.get("model_saved") else 1


def _run(args: argparse.Namespace, console: Console) -> int:
    from federation.deployment import RunRequest, start_run, wait_run

    run = start_run(
        args.dir,
        RunRequest(
            rounds=args.rounds,
            target_epsilon=args.epsilon or 0.0,
            run_id=args.run_id,
        ),
    )
    console.print(f"Flower run {run} submitted")
    report = wait_run(args.dir, run, timeout=args.timeout, progress=console.print)
    _print_report(report, console)
    console.print(f"report: {args.dir / 'report.md'}")
    return _exit_status(report)


def _local(args: argparse.Namespace, console: Console) -> int:
    from simulations.local_district import LocalDistrictRequest, run_local_district

    report = run_local_district(
        LocalDistrictRequest(
            out=args.out,
            schools=args.schools,
            families=args.families,
            weeks=args.weeks,
            rounds=args.rounds,
            seed=args.seed,
        ),
        progress=console.print,
    )
    _print_report(report, console)
    console.print(f"report: {args.out / 'district' / 'report.md'}")
    return _exit_status(report)
