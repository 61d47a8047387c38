"""FedAvg weighted by families, which also keeps each school's status and privacy figures.

A school that declines a round (budget spent, too small, policy says no) replies with its status
and reason but no arrays; the strategy records it and averages the others, so the run goes on
without that school.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from aggregator.metrics import weighted_mean
from federation import keys

log = logging.getLogger(__name__)


@dataclass
class SchoolStatus:
    """The latest word from one school (aggregate figures only)."""

    school_id: str
    status: str
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    rounds_trained: int = 0


def _numbers(record: object) -> dict[str, float]:
    """A MetricRecord's scalar values as floats (SchoolFed metrics are all scalars)."""
    if not isinstance(record, MetricRecord):
        return {}
    return {k: float(v) for k, v in record.items() if isinstance(v, int | float)}


def _aggregate(contents: list[RecordDict], weight_key: str) -> MetricRecord:
    records = [_numbers(c.get(keys.METRICS)) for c in contents]
    return MetricRecord(dict(weighted_mean(records, weight_key=weight_key)))


class SchoolFedAvg(FedAvg):
    """FedAvg over the schools that trained; a record of every school's status."""

    def __init__(self, *, on_evaluate: Callable[[int, dict[str, float]], None] | None = None, **kw):
        super().__init__(
            weighted_by_key=keys.NUM_EXAMPLES,
            arrayrecord_key=keys.ARRAYS,
            configrecord_key=keys.CONFIG,
            train_metrics_aggr_fn=_aggregate,
            evaluate_metrics_aggr_fn=_aggregate,
            **kw,
        )
        self.schools: dict[str, SchoolStatus] = {}
        self.on_evaluate = on_evaluate
        self.stopped = ""  # why the remaining rounds are skipped, once no school can train

    def _note(self, message: Message) -> bool:
        """Record a reply's school status; True if it carries a usable result."""
        if message.has_error():
            sid = f"node-{message.metadata.src_node_id}"
            self.schools[sid] = SchoolStatus(sid, "failed", message.error.reason or "")
            log.warning("school %s failed: %s", sid, message.error.reason)
            return False
        status = message.content.get(keys.STATUS)
        if not isinstance(status, ConfigRecord):
            return False
        sid = str(status["school-id"])
        school = self.schools.setdefault(sid, SchoolStatus(sid, "", ""))
        school.status, school.reason = str(status["status"]), str(status["reason"])
        metrics = message.content.get(keys.METRICS)
        if message.metadata.message_type.startswith("train"):
            school.metrics = _numbers(metrics)
        if school.status != "trained":
            log.info("school %s %s: %s", sid, school.status, school.reason)
        return school.status == "trained"

    def configure_train(self, server_round, arrays, config, grid):  # type: ignore[no-untyped-def]
        return [] if self.stopped else super().configure_train(server_round, arrays, config, grid)

    def configure_evaluate(self, server_round, arrays, config, grid):  # type: ignore[no-untyped-def]
        return (
            [] if self.stopped else super().configure_evaluate(server_round, arrays, config, grid)
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        usable = [m for m in replies if self._note(m) and keys.ARRAYS in m.content]
        for m in usable:
            self.schools[str(m.content[keys.STATUS]["school-id"])].rounds_trained += 1
        declined = [s for s in self.schools.values() if s.status in ("refused", "excluded")]
        if replies and not usable and len(declined) == len(replies):
            # Refusals hold for the rest of the run (the budget only shrinks): stop asking.
            self.stopped = f"no school can train from round {server_round} on"
            log.warning("%s; the remaining rounds are skipped", self.stopped)
        return super().aggregate_train(server_round, usable)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        usable = [
            m
            for m in replies
            if not m.has_error()
            and keys.METRICS in m.content
            and m.content[keys.STATUS]["status"] == "trained"
        ]
        metrics = super().aggregate_evaluate(server_round, usable)
        if self.on_evaluate is not None and metrics is not None:
            self.on_evaluate(server_round, _numbers(metrics))
        return metrics


class FusedSchoolFedAvg(SchoolFedAvg):
    """SchoolFedAvg with one exchange per round: each training request (from round 2 on) asks
    the school to evaluate the model it carries, which is the previous round's aggregate, and
    the evaluation comes back with the training reply. Only the last round has a separate
    evaluation exchange. The figures are the ones the separate exchange would have produced
    (same model, same held-out families, same weighting); they arrive one exchange later.

    Deployment pays a polling delay per exchange (BENCHMARKS.md), so halving the exchanges
    nearly halves a round.
    """

    def __init__(self, *, num_rounds: int, **kw) -> None:
        super().__init__(**kw)
        self.num_rounds = num_rounds

    def configure_evaluate(self, server_round, arrays, config, grid):  # type: ignore[no-untyped-def]
        if server_round < self.num_rounds:
            return []  # evaluated by the next round's training request
        return super().configure_evaluate(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        if server_round > 1 and self.on_evaluate is not None:
            evaluations = []
            for m in replies:
                if m.has_error():
                    continue
                found = _numbers(m.content.get(keys.METRICS))
                if keys.EVAL_PREFIX + keys.NUM_EXAMPLES in found:
                    n = len(keys.EVAL_PREFIX)
                    evaluations.append(
                        {k[n:]: v for k, v in found.items() if k.startswith(keys.EVAL_PREFIX)}
                    )
            if evaluations:
                mean = weighted_mean(evaluations, weight_key=keys.NUM_EXAMPLES)
                self.on_evaluate(server_round - 1, {k: float(v) for k, v in mean.items()})
        return super().aggregate_train(server_round, replies)
