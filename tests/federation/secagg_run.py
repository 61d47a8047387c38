"""A SecAgg+ run on Flower's simulation engine, for tests, in its own process (Ray stays out of
the test process).

    python -m tests.federation.secagg_run SPEC.json

SPEC: {"nodes": [node dirs, in partition order], "out": dir, "rounds": n, "seed": s,
"max_weight": w, "drop": {"round": [partition ids that drop at the masked-vector stage]},
"drop_at_setup": {"round": [partition ids that are down when the round starts]}}.
OUT receives outcome.json, round-<r>.npz (the global model after each round) and captured/
(the exact bytes of every reply that left a school).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
from flwr.app import Context, Message
from flwr.common.secure_aggregation.secaggplus_constants import Key, Stage

from federation import secagg
from federation.client_app import build_client_app
from federation.server_app import RunOutcome, RunSettings, SecAggSettings, build_server_app
from federation.simulation import run_in_simulation
from tests.integration.capture import CaptureReplies


class DropOut:
    """A school that crashes at a SecAgg+ stage (in the rounds listed): at the masked-vector
    stage (`drop`) or at setup, as a SuperNode that is down when a round starts (`drop_at_setup`).
    """

    def __init__(self, drop: dict[str, list[int]], drop_at_setup: dict[str, list[int]]) -> None:
        self.drop = {Stage.COLLECT_MASKED_VECTORS: drop, Stage.SETUP: drop_at_setup}

    def __call__(self, message: Message, context: Context, call_next) -> Message:
        if secagg.is_secagg_train(message):
            stage = message.content[secagg.SECAGG_RECORD].get(Key.STAGE)
            partition = int(context.node_config["partition-id"])
            if partition in self.drop.get(stage, {}).get(message.metadata.group_id, []):
                raise RuntimeError(f"school {partition} dropped out at {stage}")
        return call_next(message, context)


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(spec["out"])
    (out / "captured").mkdir(parents=True, exist_ok=True)
    nodes = spec["nodes"]
    n_features = int(spec["n_features"])
    settings = RunSettings(
        run_id="secagg-test",
        num_rounds=spec["rounds"],
        n_features=n_features,
        num_schools=len(nodes),
        seed=spec["seed"],
        secure_aggregation=True,
        secagg=SecAggSettings(max_weight=float(spec["max_weight"])),
    )

    def keep(server_round: int, weights: dict[str, np.ndarray]) -> dict[str, float]:
        np.savez(out / f"round-{server_round}.npz", **weights)
        return {"auc": 0.5}

    outcomes: list[RunOutcome] = []
    server_app = build_server_app(settings, on_done=outcomes.append, central_evaluation=keep)
    client_app = build_client_app(
        node_dir_of=lambda context: Path(nodes[int(context.node_config["partition-id"])]),
        extra_mods=[CaptureReplies(out / "captured"), DropOut(spec["drop"], spec["drop_at_setup"])],
    )
    run_in_simulation(server_app=server_app, client_app=client_app, num_nodes=len(nodes))
    outcome = outcomes[0]
    result = {
        "secure_aggregation": outcome.secure_aggregation,
        "secagg_rounds": {str(r): v for r, v in outcome.secagg_rounds.items()},
        "federated": {str(r): v for r, v in outcome.federated.items()},
        "schools": {s: asdict(v) for s, v in outcome.schools.items()},
        "stopped": outcome.stopped,
        "trained": outcome.weights is not None,
    }
    (out / "outcome.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
