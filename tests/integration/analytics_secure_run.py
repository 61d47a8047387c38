"""`python -m tests.integration.analytics_secure_run SPEC.json`: secure analytics queries through
Flower's simulation engine (in its own process: Ray stays out of the test process).

SPEC: {"nodes": [node dirs], "out": dir, "queries": [{"query_id", "epsilon", "seed",
"drop": [partition ids that crash at SecAgg+'s masked-vector stage]}]}. For each query OUT
receives <query_id>/ (the report, captured/ with the exact bytes of every reply, total.json
with the decoded sum, or failed.txt with the reason).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from aggregator.analytics import load_query
from aggregator.analytics_report import write_analytics_report
from simulations.analytics import QueryFailed, run_query
from tests.federation.secagg_run import DropOut
from tests.integration.capture import CaptureReplies

QUERY = Path(__file__).parents[2] / "queries" / "involvement-effects.yaml"


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    nodes = [Path(n) for n in spec["nodes"]]
    base = load_query(QUERY)
    base = type(base).model_validate(
        base.model_dump() | {"describe": [{"variables": ["at_risk"], "by": "school"}]}
    )
    for q in spec["queries"]:
        out = Path(spec["out"]) / q["query_id"]
        (out / "captured").mkdir(parents=True)
        query = base.model_copy(update={"epsilon": q["epsilon"]})
        mods = [CaptureReplies(out / "captured"), DropOut({"1": q["drop"]}, {})]
        try:
            result, _ = run_query(
                query, node_dirs=nodes, seed=q["seed"], query_id=q["query_id"], extra_mods=mods
            )
        except QueryFailed as exc:
            (out / "failed.txt").write_text(str(exc))
            continue
        write_analytics_report(result, out)


if __name__ == "__main__":
    main()
