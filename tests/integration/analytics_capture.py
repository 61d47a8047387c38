"""`python -m tests.integration.analytics_capture NODES_ROOT OUT CAPTURED SEED`: run the example
query through Flower's simulation engine over the node directories in NODES_ROOT, keeping the
exact bytes of every reply (in its own process: Ray stays out of the test process)."""

from __future__ import annotations

import sys
from pathlib import Path

from aggregator.analytics import load_query
from aggregator.analytics_report import write_analytics_report
from simulations.analytics import run_query
from tests.integration.capture import CaptureReplies


def main() -> None:
    nodes_root, out, captured, seed = sys.argv[1:5]
    query = load_query(Path(__file__).parents[2] / "queries" / "involvement-effects.yaml")
    query = type(query).model_validate(
        query.model_dump() | {"describe": [{"variables": ["at_risk", "volunteering"]}]}
    )
    result, _ = run_query(
        query,
        node_dirs=sorted(p for p in Path(nodes_root).iterdir() if p.is_dir()),
        seed=int(seed),
        extra_mods=[CaptureReplies(Path(captured))],
    )
    write_analytics_report(result, Path(out))


if __name__ == "__main__":
    main()
