"""Federated analytics over Flower query messages (`query.analytics`).

The ServerApp sends the researcher's request (JSON in the message's config record) to every
school and collects their answers; the ClientApp handler (`analytics_reply`, registered with
`@app.query("analytics")` in federation/client_app.py) answers through
`client_node.analytics.answer_query`. Replies pass the same egress guard and audit log as
training replies: the guard lets out only the statistics the request asked for.

This is local mode: the district sees every school's noisy answer. A school whose policy
requires secure aggregation refuses it (nothing is charged); the district asks it through
SecAgg+ instead (federation/analytics_secagg.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp.typing import Mod
from flwr.serverapp import Grid, ServerApp
from pydantic import ValidationError

from aggregator.analytics import SchoolAnswer
from client_node.analytics import (
    META_KEYS,
    AnalyticsOutcome,
    AnalyticsRequest,
    AnswerStatus,
    Cost,
    answer_query,
    cost_of,
    statistic_names,
)
from client_node.errors import NodeError
from client_node.node import SchoolNode
from federation import keys
from policies.errors import PolicyError
from privacy.errors import PrivacyError

MESSAGE_TYPE = f"query.{keys.ANALYTICS_ACTION}"
COST_STATUS = "cost"  # a pre-flight reply's status
COST_KEYS = frozenset(
    {"epsilon-query", "epsilon-spent", "epsilon-after", "epsilon-budget", "delta"}
)
PLAIN_ANSWER_REFUSED = (
    "the policy requires secure aggregation (SecAgg+); this query asks for the school's own "
    "answer in plain"
)
__all__ = ["MESSAGE_TYPE", "Mod", "analytics_reply", "build_analytics_server_app"]


def request_from(message: Message) -> AnalyticsRequest:
    """The analytics request a query message carries; NodeError if it is missing or invalid."""
    config = message.content.get(keys.CONFIG)
    if not isinstance(config, ConfigRecord) or not isinstance(config.get(keys.REQUEST), str):
        raise NodeError("the analytics query carries no request")
    try:
        return AnalyticsRequest.model_validate_json(str(config[keys.REQUEST]))
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise NodeError(
            f"analytics request: '{field}' = {err.get('input')!r}: {err['msg']}"
        ) from None


def allowed_metrics(message: Message, school_id: str) -> frozenset[str]:
    """What an analytics reply to `message` may carry (for the egress guard)."""
    try:
        request = request_from(message)
    except NodeError:
        return META_KEYS
    if request.cost_only:
        return COST_KEYS
    return META_KEYS | frozenset(statistic_names(request, school_id))


def _reply(outcome: AnalyticsOutcome, node: SchoolNode | None) -> RecordDict:
    reason = outcome.reason
    if outcome.unavailable and not reason:
        reason = "no column for: " + ", ".join(outcome.unavailable)
    status = ConfigRecord(
        {
            "school-id": outcome.school_id,
            "status": str(outcome.status),
            "reason": reason,
            "policy-id": node.policy.policy_id if node is not None else "",
            "policy-version": str(node.policy.version) if node is not None else "",
        }
    )
    metrics = MetricRecord(
        {
            **outcome.values,
            "noise-std": outcome.noise_std,
            "noise-multiplier": outcome.noise_multiplier,
            "l2-sensitivity": outcome.l2_sensitivity,
            "epsilon-query": outcome.epsilon_query,
            "epsilon-spent": outcome.epsilon_spent,
            "epsilon-budget": outcome.epsilon_budget,
            "delta": outcome.delta,
            "suppressed": outcome.suppressed,
        }
    )
    return RecordDict({keys.METRICS: metrics, keys.STATUS: status})


def _cost_reply(cost: Cost, node: SchoolNode) -> RecordDict:
    status = ConfigRecord(
        {
            "school-id": cost.school_id,
            "status": COST_STATUS,
            "reason": "",
            "policy-id": node.policy.policy_id,
            "policy-version": str(node.policy.version),
        }
    )
    metrics = MetricRecord(
        {
            "epsilon-query": cost.epsilon_query,
            "epsilon-spent": cost.spent,
            "epsilon-after": cost.after,
            "epsilon-budget": cost.budget,
            "delta": cost.delta,
        }
    )
    return RecordDict({keys.METRICS: metrics, keys.STATUS: status})


def analytics_reply(message: Message, node_dir: Path) -> Message:
    """Answer one analytics query at the school in `node_dir` (the ClientApp handler's body);
    a pre-flight request (`cost_only`) gets what the query would cost, and nothing is charged."""
    node: SchoolNode | None = None
    try:
        request = request_from(message)
        node = SchoolNode(node_dir)
        if request.cost_only:  # the pre-flight: no statistic, allowed under any policy
            return Message(_cost_reply(cost_of(node, request), node), reply_to=message)
        if node.policy.secure_aggregation_required:
            outcome = AnalyticsOutcome(
                school_id=node.school_id,
                status=AnswerStatus.REFUSED,
                reason=PLAIN_ANSWER_REFUSED,
                values={},
            )
            node.audit.append(
                "refusal",
                what="analytics",
                status=str(outcome.status),
                reason=PLAIN_ANSWER_REFUSED,
                query_id=request.query_id,
                policy_id=node.policy.policy_id,
                policy_version=node.policy.version,
            )
        else:
            outcome = answer_query(node, request)
    except (NodeError, PolicyError, PrivacyError, ValueError) as exc:
        outcome = AnalyticsOutcome(
            school_id=node.school_id if node is not None else node_dir.name,
            status=AnswerStatus.FAILED,
            reason=str(exc),
            values={},
        )
    return Message(_reply(outcome, node), reply_to=message)


def answer_from(reply: Message) -> SchoolAnswer | None:
    """The district's reading of one reply (None for a reply the egress guard replaced)."""
    if reply.has_error():
        return None
    status = reply.content.get(keys.STATUS)
    metrics = reply.content.get(keys.METRICS)
    if not isinstance(status, ConfigRecord):
        return None
    m: dict[str, Any] = dict(metrics.items()) if isinstance(metrics, MetricRecord) else {}
    return SchoolAnswer(
        school_id=str(status.get("school-id", "")),
        status=str(status.get("status", "")),
        reason=str(status.get("reason", "")),
        values={k: float(v) for k, v in m.items() if k.startswith("a/")},
        noise_std=float(m.get("noise-std", 0.0)),
        epsilon_query=float(m.get("epsilon-query", 0.0)),
        epsilon_spent=float(m.get("epsilon-spent", 0.0)),
        epsilon_budget=float(m.get("epsilon-budget", 0.0)),
        delta=float(m.get("delta", 0.0)),
        suppressed=int(m.get("suppressed", 0)),
    )


def cost_from(reply: Message) -> Cost | None:
    """The district's reading of one pre-flight reply (None if it is not one)."""
    if reply.has_error():
        return None
    status, metrics = reply.content.get(keys.STATUS), reply.content.get(keys.METRICS)
    if not isinstance(status, ConfigRecord) or status.get("status") != COST_STATUS:
        return None
    if not isinstance(metrics, MetricRecord):
        return None
    m: dict[str, Any] = dict(metrics.items())
    return Cost(
        school_id=str(status.get("school-id", "")),
        epsilon_query=float(m.get("epsilon-query", 0.0)),
        spent=float(m.get("epsilon-spent", 0.0)),
        after=float(m.get("epsilon-after", 0.0)),
        budget=float(m.get("epsilon-budget", 0.0)),
        delta=float(m.get("delta", 0.0)),
    )


def _send(grid: Grid, nodes: list[int], request: dict[str, Any], deadline: float) -> list[Message]:
    config = ConfigRecord(
        {keys.RUN_ID: str(request["query_id"]), keys.REQUEST: json.dumps(request)}
    )
    messages = [
        Message(
            content=RecordDict({keys.CONFIG: config}),
            dst_node_id=node_id,
            message_type=MESSAGE_TYPE,
        )
        for node_id in nodes
    ]
    return list(grid.send_and_receive(messages, timeout=max(1.0, deadline - time.monotonic())))


def build_analytics_server_app(
    request: dict[str, Any],
    *,
    num_schools: int,
    on_done: Callable[[list[SchoolAnswer], int], None],
    on_costs: Callable[[list[Cost], int], bool] | None = None,
    timeout: float = 600.0,
) -> ServerApp:
    """A ServerApp that sends `request` to `num_schools` schools once and hands the answers
    (and the count of replies that never came or were stopped) to `on_done`.

    With `on_costs` (the deployment engine, where only the schools can read their ledgers),
    a pre-flight comes first: every school says what the query would cost it; `on_costs`
    gets those costs and the count of schools that did not say, and the query itself goes
    only to the schools that did, and only if `on_costs` returns True."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        deadline = time.monotonic() + timeout
        nodes = list(grid.get_node_ids())
        while len(nodes) < num_schools and time.monotonic() < deadline:
            time.sleep(0.5)
            nodes = list(grid.get_node_ids())
        declined: list[SchoolAnswer] = []  # schools that could not even say (with why)
        if on_costs is not None:
            costs, ready = [], []
            for reply in _send(grid, nodes, {**request, "cost_only": True}, deadline):
                cost = cost_from(reply)
                if cost is not None:
                    costs.append(cost)
                    ready.append(reply.metadata.src_node_id)
                elif (answer := answer_from(reply)) is not None:
                    declined.append(answer)
            if not on_costs(costs, len(nodes) - len(costs) - len(declined)):
                return
            nodes = ready
        replies = _send(grid, nodes, request, deadline) if nodes else []
        answers = [a for a in (answer_from(r) for r in replies) if a is not None]
        on_done(declined + answers, len(nodes) - len(answers))

    return app
