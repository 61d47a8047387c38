"""Seconds per round for 3 schools: Flower's deployment engine against its simulation engine.

    .venv/bin/python benchmarks/deployment_round.py [--rounds 4] [--families 120] [--weeks 20]

One synthetic district (3 schools), two copies of it: the simulation runs `simulate` on the
schools' exports; the deployment runs the local district (one SuperLink, three SuperNodes with
TLS and authentication, each with the long-running ClientApp executor). Round 1 carries start-up
(Ray, the ServerApp process, the noise calibration), so the figures are the mean of rounds 2..R.
Both run under the shipped district policy, so both use SecAgg+ (four exchanges per training
round, then one for the federated evaluation). The ClientApp's share is the busiest school's
ClientApp seconds over the whole run (from the executors' logs) against all rounds' seconds.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from federation import deployment as dep  # noqa: E402
from simulations.local_district import (  # noqa: E402
    LocalDistrictRequest,
    build_local_district,
    running,
)
from simulations.runner import SimulationRequest, simulate  # noqa: E402

TASK = re.compile(r"task (train|evaluate): pull ([\d.]+) s, app ([\d.]+) s, push ([\d.]+) s")


def simulation_rounds(exports: Path, out: Path, rounds: int, seed: int) -> list[float]:
    marks = [time.monotonic()]

    def on_round(_r: int, _m: dict[str, float]) -> None:
        marks.append(time.monotonic())

    simulate(
        SimulationRequest(dataset=str(exports), rounds=rounds, out=out, seed=seed),
        on_round=on_round,
    )
    return [b - a for a, b in zip(marks, marks[1:], strict=False)]


def clientapp_seconds(node_dirs: list[Path]) -> list[dict[str, float]]:
    """Per school, the ClientApp's seconds of each exchange in order (train, evaluate, ...)."""
    out = []
    for node in node_dirs:
        text = (node / "run" / "executor.log").read_text()
        out.append([float(m.group(3)) for m in TASK.finditer(text)])
    return out  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--families", type=int, default=120)
    parser.add_argument("--weeks", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="schoolfed-bench-") as tmp:
        root = Path(tmp)
        request = LocalDistrictRequest(
            out=root / "deploy",
            families=args.families,
            weeks=args.weeks,
            rounds=args.rounds,
            seed=args.seed,
        )
        district = build_local_district(request)
        sim = simulation_rounds(root / "deploy" / "exports", root / "sim", args.rounds, args.seed)
        with running(district):
            run = dep.start_run(
                district.district_dir, dep.RunRequest(rounds=args.rounds, seed=args.seed)
            )
            report = dep.wait_run(district.district_dir, run, timeout=900)
        deploy = [r["seconds"] for r in report["rounds"]]
        apps = clientapp_seconds(list(district.node_dirs.values()))
        # SecAgg+ (the district policy requires it) takes four training exchanges per round
        # and the evaluation one more: the ClientApp's share is the busiest school's ClientApp
        # seconds over the whole run, against the run's round seconds
        app_total = max(sum(a) for a in apps)
        print(f"exchanges: {report.get('exchanges')}")
        sim_mean = statistics.mean(sim[1:])
        dep_mean = statistics.mean(deploy[1:])
        print(f"simulation  s/round: {', '.join(f'{s:.2f}' for s in sim)}")
        print(f"deployment  s/round: {', '.join(f'{s:.2f}' for s in deploy)}")
        print(
            f"rounds 2..{args.rounds}: simulation {sim_mean:.2f} s, deployment {dep_mean:.2f} s "
            f"({dep_mean / sim_mean:.1f}×); ClientApp work {app_total:.2f} s of "
            f"{sum(deploy):.2f} s in all rounds ({100 * app_total / sum(deploy):.0f} %); "
            f"final federated AUC {report['final']['federated']['auc']:.3f}"
        )


if __name__ == "__main__":
    main()
