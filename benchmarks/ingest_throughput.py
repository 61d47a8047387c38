"""Ingestion throughput of a 1,000,000-row platform_activity.csv against plain pandas.read_csv.

    .venv/bin/python benchmarks/ingest_throughput.py [--rows 1000000] [--families 5000] [--repeat 3]

Writes a valid export (a roster of --families families with one or two children each, and
platform_activity.csv with --rows distinct family/day/platform/feature rows) to a temporary
folder, then times `pandas.read_csv` of the activity file and `ingest_export` of the export
into a fresh node directory (signed district policy, test officer key), --repeat times each.
Prints the median rows/s of both and their ratio. The bar (the ingestion issue): ingestion at
least half as fast as read_csv; the exit status is 1 when it is not met.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client_node.export_format import PLATFORMS  # noqa: E402
from client_node.ingest import ingest_export  # noqa: E402
from client_node.node import NodeConfig, install_policy, write_node_config  # noqa: E402
from client_node.store import Store  # noqa: E402
from policies.loader import default_policy_path  # noqa: E402
from privacy.signing import generate_keypair, sign_file  # noqa: E402

BAR = 0.5
FEATURES = ("homework", "calendar", "messages", "grades", "lunch", "library", "forms", "events")


def policy_text() -> str:
    """The shipped district policy, valid around today (as tests/conftest.py does)."""
    today = date.today()
    text = default_policy_path().read_text()
    text = text.replace("valid_from: 2026-08-01", f"valid_from: {today - timedelta(days=30)}")
    return text.replace("valid_until: 2027-07-31", f"valid_until: {today + timedelta(days=300)}")


def make_node(root: Path, officer: tuple[Path, Path]) -> Path:
    node_dir = root / "node"
    write_node_config(node_dir, NodeConfig(school_id="bench-school"))
    folder = root / "policy"
    folder.mkdir(exist_ok=True)
    policy = folder / "policy.yaml"
    policy.write_text(policy_text())
    sign_file(policy, key=officer[0])
    install_policy(node_dir, policy=policy, trust_anchor=officer[1])
    return node_dir


def write_export(folder: Path, *, rows: int, families: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    family_ids = np.array([f"F{i:06d}" for i in range(families)], dtype=object)
    children = rng.integers(1, 3, size=families)
    owner = np.repeat(np.arange(families), children)
    pd.DataFrame(
        {
            "student_id": [f"S{i:07d}" for i in range(len(owner))],
            "family_id": family_ids[owner],
            "grade_level": rng.integers(-1, 13, size=len(owner)),
            "guardian_name": [f"Guardian {i}" for i in owner],
        }
    ).to_csv(folder / "roster.csv", index=False)
    days = 365
    start = date.today() - timedelta(days=days + 1)
    day_text = np.array([(start + timedelta(days=d)).isoformat() for d in range(days)], object)
    per_family = days * len(PLATFORMS) * len(FEATURES)
    if rows > families * per_family:
        raise SystemExit(f"--rows {rows} is more than {families} families can have distinct")
    cell = rng.choice(families * per_family, size=rows, replace=False)
    f, rest = np.divmod(cell, per_family)
    d, rest = np.divmod(rest, len(PLATFORMS) * len(FEATURES))
    p, e = np.divmod(rest, len(FEATURES))
    pd.DataFrame(
        {
            "family_id": family_ids[f],
            "date": day_text[d],
            "platform": np.array(PLATFORMS, dtype=object)[p],
            "feature": np.array(FEATURES, dtype=object)[e],
            "sessions": rng.integers(0, 20, size=rows),
            "minutes": np.round(rng.gamma(2.0, 10.0, size=rows), 1).clip(0, 1440),
        }
    ).to_csv(folder / "platform_activity.csv", index=False)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--families", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="schoolfed-ingest-bench-"))
    try:
        officer = generate_keypair(root / "officer", name="officer")
        export = write_export(root / "export", rows=args.rows, families=args.families)
        activity = export / "platform_activity.csv"
        size = activity.stat().st_size / 1e6
        print(f"platform_activity.csv: {args.rows:,} rows, {size:.1f} MB", flush=True)
        read_times, ingest_times = [], []
        for i in range(args.repeat):
            start = time.perf_counter()
            frame = pd.read_csv(activity)
            read_times.append(time.perf_counter() - start)
            assert len(frame) == args.rows
            del frame
            run = root / f"run-{i}"
            node_dir = make_node(run, officer)
            start = time.perf_counter()
            summary = ingest_export(export, node_dir=node_dir)
            ingest_times.append(time.perf_counter() - start)
            report = summary.files["platform_activity.csv"]
            assert report.added == args.rows and report.quarantined == 0, summary.render()
            with Store.for_node(node_dir) as store:
                assert store.counts()["platform_activity"] == args.rows
            print(
                f"run {i + 1}: read_csv {read_times[-1]:.2f} s, ingest {ingest_times[-1]:.2f} s",
                flush=True,
            )
            shutil.rmtree(run)
        read_rate = args.rows / statistics.median(read_times)
        ingest_rate = args.rows / statistics.median(ingest_times)
        ratio = ingest_rate / read_rate
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(
            f"on {os.cpu_count()} cores (load average {load}), median of {args.repeat}: "
            f"pandas.read_csv {read_rate:,.0f} rows/s; ingest_export {ingest_rate:,.0f} rows/s; "
            f"ratio {ratio:.2f}; bar {BAR}: {'met' if ratio >= BAR else 'NOT met'}"
        )
        return 0 if ratio >= BAR else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
