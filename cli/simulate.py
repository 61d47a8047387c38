"""`schoolfed simulate`: for district researchers."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aggregator.report import fmt
from cli.options import epsilon, positive_int


def register(sub: Any) -> None:
    sim = sub.add_parser(
        "simulate",
        help="a simulated district trains the DP disengagement model on real data",
        description="Run a federated DP training of the disengagement model over a simulated "
        "district built from a real dataset, and write the report into --out.",
    )
    sim.add_argument(
        "--dataset", default="nhes-pfi-2019",
        help="nhes-pfi-2019 (default) or uci-student (real surveys); synthetic (a district "
        "`schoolfed synth` writes into OUT/exports); or a folder with one school export per "
        "sub-folder, ingested into each school's node",
    )  # fmt: skip
    sim.add_argument(
        "--synthetic", type=positive_int, nargs=3, default=(20, 500, 40),
        metavar=("SCHOOLS", "FAMILIES", "WEEKS"),
        help="size of the synthetic district (default: 20 500 40)",
    )  # fmt: skip
    sim.add_argument("--rounds", type=positive_int, default=5, help="federated rounds (default 5)")
    sim.add_argument(
        "--epsilon", type=epsilon, default=None,
        help="ε this run may spend per school (default: what remains of the training budget)",
    )  # fmt: skip
    sim.add_argument("--seed", type=int, default=0, help="seed for splits and noise (default 0)")
    sim.add_argument("--out", type=Path, default=Path("runs/latest"), help="output folder")
    sim.add_argument(
        "--policy", type=Path, default=None,
        help="signed policy file, FILE.sig beside it (default: the shipped district policy)",
    )  # fmt: skip
    sim.add_argument(
        "--pubkey", type=Path, default=None,
        help="the privacy officer's public key that signed --policy (default: the shipped one)",
    )  # fmt: skip
    sim.add_argument(
        "--data-dir", type=Path, default=None, help="dataset folder (default: bundled)"
    )
    sim.add_argument("--schools", default=None, help="comma-separated school ids (default: all)")
    sim.add_argument(
        "--families-per-school", type=positive_int, default=None,
        help="use a seeded sample of at most this many families per school",
    )  # fmt: skip
    sim.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    sim.set_defaults(handler=run)


def run(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from simulations.runner import SimulationRequest, simulate

    request = SimulationRequest(
        dataset=args.dataset,
        rounds=args.rounds,
        epsilon=args.epsilon,
        seed=args.seed,
        out=args.out,
        policy=args.policy,
        trust_anchor=args.pubkey,
        data_dir=args.data_dir,
        schools=tuple(s.strip() for s in args.schools.split(",")) if args.schools else None,
        families_per_school=args.families_per_school,
        synthetic=tuple(args.synthetic),
    )
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=args.rounds)

        def on_round(server_round: int, metrics: dict[str, float]) -> None:
            bar.console.print(
                f"round {server_round}/{args.rounds}: pooled AUC {metrics.get('auc', math.nan):.3f},"
                f" accuracy {metrics.get('accuracy', math.nan):.3f}"
            )
            bar.update(task, completed=server_round, description="federated rounds")

        report = simulate(
            request,
            progress=lambda msg: bar.update(task, description=msg),
            on_round=on_round,
            verbose=args.verbose,
        )
    _print_summary(report, console)
    secagg = report["secure_aggregation"]
    console.print(
        "secure aggregation (SecAgg+): "
        + ("[green]on[/]" if secagg["on"] else "[yellow]off[/] (the policy does not require it)")
    )
    for r, why in secagg.get("failed_rounds", {}).items():
        console.print(f"[yellow]round {r} failed[/]: {escape(why)}", soft_wrap=True)
    if report["stopped_early"]:
        console.print(f"[yellow]{report['stopped_early']}[/]: the remaining rounds were skipped")
    if not report["model_saved"]:
        console.print(
            "[yellow]no school trained[/]: the previous model.npz (if any) is kept (exit status 1)"
        )
    console.print(f"report: {Path(args.out) / 'report.md'} (and report.json, auc.png, model.npz)")
    return 0 if report["model_saved"] else 1


def _print_summary(report: dict, console: Console) -> None:
    schools = Table(title="Schools")
    schools.add_column("school", no_wrap=True)
    for col in ("families", "status", "ε spent", "ε budget", "σ", "q", "steps"):
        schools.add_column(col, justify="left" if col == "status" else "right")
    for s in report["schools"]:
        schools.add_row(
            s["school_id"], str(s["n_families"]), s["status"], fmt(s["epsilon_spent"]),
            fmt(s["epsilon_budget"]), fmt(s["noise_multiplier"] or None), fmt(s["sample_rate"] or None, 4),
            str(s["steps"]),
        )  # fmt: skip
    console.print(schools)
    for s in report["schools"]:
        if s["reason"]:
            console.print(
                f"[yellow]{s['school_id']} {s['status']}[/]: {escape(s['reason'])}", soft_wrap=True
            )
    final = report["final"]
    result = Table(
        title=f"{report['dataset']}: held-out AUC ({report['test_split']['families']} families)"
    )
    result.add_column("model")
    result.add_column("AUC", justify="right")
    result.add_row("federated, DP", fmt(final["federated"]["auc"]))
    result.add_row("centralized, non-private", fmt(final["centralized"]["auc"]))
    result.add_row("each school alone, same ε (mean)", fmt(final["local_only"]["auc_mean"]))
    console.print(result)
    if "disengagement" in report:
        d = report["disengagement"]
        table = Table(
            title=f"Disengagement: {d['disengaging']} of {d['families']} held-out families"
        )
        table.add_column("score")
        table.add_column("AUC, observed label", justify="right")
        has_truth = "ground_truth" in d
        if has_truth:
            table.add_column("AUC, generator's truth", justify="right")
        truth = d.get("ground_truth", {})
        for name, key in (
            ("federated model", "model_auc"),
            (d["rule_of_thumb"], "rule_of_thumb_auc"),
        ):
            row = [name, fmt(d[key])] + ([fmt(truth.get(key))] if has_truth else [])
            table.add_row(*row)
        console.print(table)
