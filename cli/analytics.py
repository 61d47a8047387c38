"""`schoolfed analytics run`: for district researchers."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.options import seed


def register(sub: Any) -> None:
    group = sub.add_parser(
        "analytics",
        help="federated, differentially private analytics queries",
        description="District analytics answered by every school with DP noise, on a "
        "simulated district (--dataset) or a deployed one (--dir): through SecAgg+ (the "
        "district sees only the sum) when the policy requires secure aggregation, else each "
        "school's own noisy answer.",
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    run_parser = actions.add_parser(
        "run",
        help="answer a query file across the schools and write the report",
        description="Check what QUERY_FILE costs each school against its analytics budget, "
        "send it to every school (Flower query messages), combine the noisy answers and write "
        "analytics.json, analytics.md, analytics.html and charts into --out.",
    )
    run_parser.add_argument("query_file", type=Path, metavar="QUERY_FILE", help="query (YAML)")
    where = run_parser.add_mutually_exclusive_group()
    where.add_argument(
        "--dataset", default="nhes-pfi-2019",
        help="simulated district: nhes-pfi-2019 (default) or synthetic-involvement",
    )  # fmt: skip
    where.add_argument(
        "--dir", type=Path, default=None, metavar="D",
        help="a deployed district (district up, its schools' nodes started)",
    )  # fmt: skip
    run_parser.add_argument(
        "--out", type=Path, default=Path("runs/analytics"), help="output folder"
    )
    run_parser.add_argument(
        "--seed", type=seed, default=None,
        help="seed the schools' noise (simulations only; default: the OS's CSPRNG). Each "
        "school mixes the seed with its own secret, so whoever chose it cannot reproduce the "
        "noise: new node directories (a fresh --out) give different noise",
    )  # fmt: skip
    run_parser.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    run_parser.set_defaults(handler=run)


def _costs_table(found: list[Any]) -> Table:
    table = Table(title="What the query costs each school (analytics budget)")
    for col in ("school", "ε query", "spent", "after", "budget", ""):
        table.add_column(col, justify="left" if col in ("school", "") else "right")
    for c in found:
        table.add_row(
            escape(c.school_id),
            f"{c.epsilon_query:.3f}",
            f"{c.spent:.3f}",
            f"{c.after:.3f}",
            f"{c.budget:.3f}",
            "ok" if c.fits else "[red]over budget[/]",
        )
    return table


def run(args: argparse.Namespace, console: Console) -> int:
    from aggregator.analytics import load_query
    from simulations.analytics import run_and_report, run_on_district
    from simulations.errors import SimulationError

    query = load_query(args.query_file)
    if args.dir is not None and args.seed is not None:
        raise SimulationError(
            f"--seed {args.seed}: seeds are for simulated districts only; a deployed "
            "district's schools draw their noise from the OS"
        )
    with console.status("preparing the schools") as status:

        def say(message: str) -> None:
            status.update(escape(message))
            console.log(escape(message))

        def show(found: list[Any]) -> None:
            console.print(_costs_table(found))

        if args.dir is not None:
            result = run_on_district(
                query, district_dir=args.dir, out=args.out, say=say, on_costs=show
            )
        else:
            result = run_and_report(
                query,
                dataset=args.dataset,
                out=args.out,
                seed=args.seed,
                say=say,
                on_costs=show,
                verbose=args.verbose,
            )
    ranked = Table(title=escape(query.title))
    for col in ("rank", "involvement", "adjusted (pp)", f"{query.confidence:.0%} interval"):
        ranked.add_column(col, justify="left" if col == "involvement" else "right")
    missing = result.unavailable()
    for i, e in enumerate(result.effects, 1):
        adj = e["adjusted"]
        if adj is None:
            ranked.add_row(
                "–", e["type"], "not available" if e["type"] in missing else "suppressed", ""
            )
            continue
        ranked.add_row(
            str(i),
            e["type"],
            f"{100 * adj['value']:+.1f}",
            f"[{100 * adj['low']:+.1f}, {100 * adj['high']:+.1f}]",
        )
    if result.effects:
        console.print(ranked)
    if result.mode == "secure" and result.secure is not None:
        console.print(
            f"secure aggregation (SecAgg+): the district saw only the sum of "
            f"{result.secure['vectors']} schools (t = {result.secure['threshold']}); "
            "per-school spread is not available by design"
        )
    else:
        console.print("local noise: each school's own noisy answer reached the district")
    console.print(f"report: {escape(str(args.out / 'analytics.md'))} (and .json, .html, charts)")
    return 0
