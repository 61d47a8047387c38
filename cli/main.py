"""`schoolfed`: one command, subcommands by user.

Every expected failure (bad option, bad file, bad policy, budget) is shown as one line on stderr
with exit status 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

EXIT_USAGE = 2


def _epsilon(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; ε must be finite and > 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; it must be at least 1")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="schoolfed", description="Privacy-preserving federated analytics for schools."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sim = sub.add_parser(
        "simulate",
        help="a simulated district trains the DP disengagement model on real data",
        description="Run a federated DP training of the disengagement model over a simulated "
        "district built from a real dataset, and write the report into --out.",
    )
    sim.add_argument(
        "--dataset", default="nhes-pfi-2019", help="nhes-pfi-2019 (default) or uci-student"
    )
    sim.add_argument("--rounds", type=_positive_int, default=5, help="federated rounds (default 5)")
    sim.add_argument(
        "--epsilon", type=_epsilon, default=None,
        help="ε this run may spend per school (default: what remains of the policy's budget)",
    )  # fmt: skip
    sim.add_argument("--seed", type=int, default=0, help="seed for splits and noise (default 0)")
    sim.add_argument("--out", type=Path, default=Path("runs/latest"), help="output folder")
    sim.add_argument("--policy", type=Path, default=None, help="policy file (default: district)")
    sim.add_argument(
        "--data-dir", type=Path, default=None, help="dataset folder (default: bundled)"
    )
    sim.add_argument("--schools", default=None, help="comma-separated school ids (default: all)")
    sim.add_argument(
        "--families-per-school", type=_positive_int, default=None,
        help="use a seeded sample of at most this many families per school",
    )  # fmt: skip
    sim.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    return parser


def _simulate(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from simulations.runner import SimulationRequest, simulate

    request = SimulationRequest(
        dataset=args.dataset,
        rounds=args.rounds,
        epsilon=args.epsilon,
        seed=args.seed,
        out=args.out,
        policy=args.policy,
        data_dir=args.data_dir,
        schools=tuple(s.strip() for s in args.schools.split(",")) if args.schools else None,
        families_per_school=args.families_per_school,
    )
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("starting", total=args.rounds)

        def on_round(server_round: int, metrics: dict[str, float]) -> None:
            auc = metrics.get("auc", float("nan"))
            bar.console.print(
                f"round {server_round}/{args.rounds}: AUC {auc:.3f}"
                f" (federated evaluation {metrics.get('auc', float('nan')):.3f})"
                if "loss" not in metrics
                else f"round {server_round}/{args.rounds}: pooled AUC {auc:.3f}, "
                f"accuracy {metrics.get('accuracy', float('nan')):.3f}"
            )
            bar.update(task, completed=server_round, description="federated rounds")

        report = simulate(
            request,
            progress=lambda msg: bar.update(task, description=msg),
            on_round=on_round,
            verbose=args.verbose,
        )
    _print_summary(report, console)
    console.print(f"report: {Path(args.out) / 'report.md'} (and report.json, auc.png, model.npz)")
    return 0


def _print_summary(report: dict, console: Console) -> None:
    def f(v: object, d: int = 3) -> str:
        return (
            "–"
            if v is None or (isinstance(v, float) and not math.isfinite(v))
            else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
        )

    schools = Table(title="Schools", show_lines=False)
    for col in ("school", "families", "status", "ε spent", "ε budget", "σ", "q", "steps"):
        schools.add_column(col, justify="left" if col in ("school", "status") else "right")
    for s in report["schools"]:
        schools.add_row(
            s["school_id"], str(s["n_families"]), s["status"], f(s["epsilon_spent"]),
            f(s["epsilon_budget"]), f(s["noise_multiplier"]), f(s["sample_rate"], 4), str(s["steps"]),
        )  # fmt: skip
    console.print(schools)
    for s in report["schools"]:
        if s["reason"]:
            console.print(f"[yellow]{s['school_id']} {s['status']}[/]: {s['reason']}")
    final = report["final"]
    result = Table(
        title=f"{report['dataset']}: held-out AUC ({report['test_split']['families']} families)"
    )
    result.add_column("model")
    result.add_column("AUC", justify="right")
    result.add_row("federated, DP", f(final["federated"]["auc"]))
    result.add_row("centralized, non-private", f(final["centralized"]["auc"]))
    result.add_row("each school alone, same ε (mean)", f(final["local_only"]["auc_mean"]))
    console.print(result)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from client_node.errors import NodeError
    from policies.errors import PolicyError
    from privacy.errors import PrivacyError
    from simulations.errors import SimulationError

    try:
        if args.command == "simulate":
            return _simulate(args, console)
    except (SimulationError, PolicyError, PrivacyError, NodeError) as exc:
        # One plain line (no wrapping, no markup): operators grep and paste these.
        print(f"schoolfed {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"schoolfed {args.command}: interrupted", file=sys.stderr)
        return 130
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
