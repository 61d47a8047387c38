"""`schoolfed synth`: for district researchers and developers — a synthetic district of exports."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.options import positive_int, seed


def register(sub: Any) -> None:
    synth = sub.add_parser(
        "synth",
        help="write a synthetic district: one export folder per school, plus its ground truth",
        description="Generate a synthetic school district in the school export format v1 "
        "(one folder per school under --out) and --out/ground_truth.json (latent engagement, "
        "disengagement weeks, channel preferences, true effects on grades, calibration to "
        "NHES 2019). The same seed gives the same bytes.",
    )
    synth.add_argument("--schools", type=positive_int, default=20, help="schools (default 20)")
    synth.add_argument(
        "--families", type=positive_int, default=500,
        help="mean families per school; sizes vary (default 500)",
    )  # fmt: skip
    synth.add_argument(
        "--weeks", type=positive_int, default=40, help="school weeks to simulate (default 40)"
    )
    synth.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    synth.add_argument(
        "--out", type=Path, required=True,
        help="folder to write into: new, empty, or an earlier synth district (replaced)",
    )  # fmt: skip
    synth.set_defaults(handler=run)


def run(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from simulations.synth import generate_district

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task("starting", total=None)

    def progress(description: str, done: int, total: int) -> None:
        if not bar.live.is_started:  # started on the first step: bad options show only the error
            bar.start()
        bar.update(task, description=description, completed=done, total=total)

    try:
        out = generate_district(
            schools=args.schools,
            families=args.families,
            weeks=args.weeks,
            seed=args.seed,
            out=args.out,
            progress=progress,
        )
    finally:
        if bar.live.is_started:
            bar.stop()
    _print_summary(out, console)
    return 0


def _print_summary(out: Path, console: Console) -> None:
    import json

    from simulations.synth import GROUND_TRUTH

    truth = json.loads((out / GROUND_TRUTH).read_text(encoding="utf-8"))
    calibration = truth["calibration"]
    table = Table(title="Calibration to NHES 2019: share of families attending at least once")
    for column in ("NHES item", "event types", "NHES", "achieved", "difference"):
        table.add_column(
            column, justify="left" if column in ("NHES item", "event types") else "right"
        )
    for item, row in sorted(calibration["items"].items()):
        table.add_row(
            item, " or ".join(row["event_types"]), f"{row['nhes_share']:.3f}",
            f"{row['achieved_share']:.3f}", f"{row['achieved_share'] - row['nhes_share']:+.3f}",
        )  # fmt: skip
    console.print(table)
    district = truth["district"]
    console.print(
        f"{len(truth['schools'])} schools, {district['families']} families, "
        f"{district['students']} students, {truth['parameters']['weeks']} weeks "
        f"(tolerance ±{calibration['tolerance'] * 100:.0f} points on a 20 × 500 district)"
    )
    console.print(
        f"exports: {escape(str(out))}/<school_id>/, truth: {escape(str(out / GROUND_TRUTH))}"
    )
