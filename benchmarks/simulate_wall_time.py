"""Wall time of the default `schoolfed simulate` (16 schools, 5 rounds, ε = 3), end to end.

    .venv/bin/python benchmarks/simulate_wall_time.py [--repeat 3]

Each repetition runs the console script in a fresh output folder (fresh ledgers), exactly as a
researcher would, and reports the wall time and the federated AUC. The bar (issue #2): 120 s
on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BAR_SECONDS = 120.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    script = shutil.which("schoolfed", path=str(Path(sys.executable).parent)) or "schoolfed"
    times, aucs = [], []
    for i in range(args.repeat):
        out = Path(tempfile.mkdtemp(prefix="schoolfed-bench-"))
        start = time.perf_counter()
        subprocess.run([script, "simulate", "--out", str(out)], check=True, capture_output=True)
        seconds = time.perf_counter() - start
        report = json.loads((out / "report.json").read_text())
        shutil.rmtree(out)
        times.append(seconds)
        aucs.append(report["final"]["federated"]["auc"])
        secagg = report.get("secure_aggregation", {})
        clipped = [r["secagg"]["clipped_share"] for r in report["rounds"] if r.get("secagg")]
        print(
            f"run {i + 1}: {seconds:.1f} s, federated AUC {aucs[-1]:.4f}, SecAgg+ "
            + (
                f"on (failed rounds: {len(secagg.get('failed_rounds', {}))}, largest clipped "
                f"share {max(clipped, default=0.0):.4f})"
                if secagg.get("on")
                else "off"
            ),
            flush=True,
        )
    median = statistics.median(times)
    print(
        f"schoolfed simulate (defaults) on {os.cpu_count()} cores: median {median:.1f} s"
        f" over {len(times)} runs (min {min(times):.1f}, max {max(times):.1f});"
        f" federated AUC {statistics.median(aucs):.4f}; bar {BAR_SECONDS:.0f} s:"
        f" {'met' if median <= BAR_SECONDS else 'NOT met'}"
    )
    return 0 if median <= BAR_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
