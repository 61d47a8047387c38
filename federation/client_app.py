"""The Flower ClientApp: a thin adapter from Flower messages to `client_node.SchoolNode`.

The node directory comes from the SuperNode's node config (`node-dir`) in deployment; a
simulation builds the app with a resolver that maps each virtual node to its school's folder.
Every reply passes the egress guard.

Analytics queries come as `query.analytics` messages (local mode) or, under a policy that
requires secure aggregation, as a SecAgg+ round (federation/analytics_secagg.py) whose masked
vector is the school's noise share of the sum; a school under such a policy declines a plain
analytics query, as it declines a plain training request.

Training comes in two forms: a plain request (Message API) answered with the trained model, and
Flower's SecAgg+ protocol (`federation.secagg`), where this app only computes the school's
delta at the masked-vector stage and `secaggplus_mod` masks it before it leaves. A school whose
policy requires secure aggregation declines every plain training request.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    MetricRecordValues,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod
from flwr.common import parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from client_node.errors import NodeError
from client_node.node import RoundOutcome, RoundStatus, SchoolNode
from client_node.training import Evaluation, TrainSettings
from federation import analytics_secagg, keys, secagg
from federation.analytics_app import analytics_reply
from federation.egress import audit_egress, egress_guard
from policies.errors import PolicyError
from privacy.errors import PrivacyError

NodeDirResolver = Callable[[Context], Path]
log = logging.getLogger(__name__)
PLAIN_UPDATE_REFUSED = (
    "the policy requires secure aggregation (SecAgg+); this request asks for a plain, "
    "unmasked update"
)


class TrainRequest(BaseModel):
    """A training request as the school reads it: unknown or ill-typed keys are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str = Field(min_length=1)
    server_round: int = Field(ge=1)
    planned_rounds: int = Field(ge=1)
    target_epsilon: float = Field(ge=0, allow_inf_nan=False)
    local_epochs: int = Field(ge=1, le=100)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0, allow_inf_nan=False)
    momentum: float = Field(ge=0, lt=1)
    seed: int | None = None
    evaluate_first: bool = False

    @classmethod
    def from_record(cls, record: object) -> TrainRequest:
        if not isinstance(record, ConfigRecord):
            raise NodeError("the training request carries no config record")
        try:
            return cls.model_validate({k.replace("-", "_"): v for k, v in record.items()})
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]).replace("_", "-")
            raise NodeError(
                f"training request: '{field}' = {err.get('input')!r}: {err['msg']}"
            ) from None

    @property
    def settings(self) -> TrainSettings:
        return TrainSettings(
            local_epochs=self.local_epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            momentum=self.momentum,
        )


def _arrays(content: RecordDict) -> ArrayRecord:
    record = content.get(keys.ARRAYS)
    if not isinstance(record, ArrayRecord):
        raise NodeError("the request carries no model arrays")
    return record


def node_dir_from_config(context: Context) -> Path:
    """Deployment: `flower-supernode --node-config 'node-dir="/srv/schoolfed/node"'`."""
    value = context.node_config.get("node-dir")
    if not isinstance(value, str) or not value:
        raise NodeError("this SuperNode has no 'node-dir' in its node config")
    return Path(value)


def arrays_to_weights(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in record.items()}


def weights_to_arrays(weights: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({name: Array(np.ascontiguousarray(v)) for name, v in weights.items()})


def _status(
    school_id: str, status: RoundStatus, reason: str, node: SchoolNode | None = None
) -> ConfigRecord:
    return ConfigRecord(
        {
            "school-id": school_id,
            "status": str(status),
            "reason": reason,
            "policy-id": node.policy.policy_id if node is not None else "",
            "policy-version": str(node.policy.version) if node is not None else "",
        }
    )


def _train_metrics(outcome: RoundOutcome) -> dict[str, MetricRecordValues]:
    return {
        keys.NUM_EXAMPLES: outcome.n_families,
        "epsilon-spent": outcome.epsilon_spent,
        "epsilon-budget": outcome.epsilon_budget,
        "delta": outcome.delta,
        "noise-multiplier": outcome.noise_multiplier,
        "sample-rate": outcome.sample_rate,
        "steps": outcome.steps,
        "train-loss": outcome.train_loss if math.isfinite(outcome.train_loss) else -1.0,
    }


def _evaluation_metrics(result: Evaluation, prefix: str = "") -> dict[str, Any]:
    return {
        prefix + keys.NUM_EXAMPLES: result.n,
        prefix + "loss": result.loss,
        prefix + "accuracy": result.accuracy,
        prefix + "auc": result.auc if math.isfinite(result.auc) else -1.0,
    }


def _train_reply(
    outcome: RoundOutcome, node: SchoolNode, evaluation: Evaluation | None = None
) -> RecordDict:
    metrics = {
        **(_evaluation_metrics(evaluation, keys.EVAL_PREFIX) if evaluation else {}),
        **_train_metrics(outcome),
    }
    content = RecordDict(
        {
            keys.METRICS: MetricRecord(metrics),
            keys.STATUS: _status(outcome.school_id, outcome.status, outcome.reason, node),
        }
    )
    if outcome.weights is not None:
        content[keys.ARRAYS] = weights_to_arrays(outcome.weights)
    return content


def _failure(node_dir: Path, exc: Exception) -> RecordDict:
    return RecordDict({keys.STATUS: _status(node_dir.name, RoundStatus.FAILED, str(exc))})


def _secagg_train(message: Message, node_dir: Path) -> RecordDict:
    """The masked-vector stage of SecAgg+: train, and hand the scaled delta to the mod.

    A school that declines or fails still answers, with weight 0 and a zero vector, so the
    round keeps its masks; its status says why."""
    arrays = message.content.get(secagg.FITINS_ARRAYS)
    if not isinstance(arrays, ArrayRecord):
        raise NodeError("the secure-aggregation request carries no model arrays")
    terms, rest = secagg.SecAggTerms.split(message.content.get(secagg.FITINS_CONFIG))
    received = parameters_to_ndarrays(compat.arrayrecord_to_parameters(arrays, keep_input=True))
    if len(received) != len(terms.names):
        raise NodeError(f"{len(received)} model arrays for the names {terms.names}")
    start = dict(zip(terms.names, received, strict=True))
    zero = secagg.zero_update({k: v.shape for k, v in start.items()}, terms.names)
    node: SchoolNode | None = None
    evaluation: Evaluation | None = None
    try:
        request = TrainRequest.from_record(rest)
        node = SchoolNode(node_dir)
        if request.evaluate_first and request.server_round > 1:
            # the model it carries is last round's aggregate: evaluated here, it saves the
            # district a separate evaluation exchange (aggregate figures, sent in plain)
            evaluation = node.evaluate(weights=start)
        families = len(node.train_table())
        if families > terms.max_weight:
            outcome = node.decline(
                reason=f"{families} training families is above the run's SecAgg+ max weight "
                f"{terms.max_weight:g}; the district must raise it"
            )
        else:
            outcome = node.train_round(
                weights=start,
                run_id=request.run_id,
                server_round=request.server_round,
                planned_rounds=request.planned_rounds,
                target_epsilon=request.target_epsilon,
                settings=request.settings,
                seed=request.seed,
            )
    except (NodeError, PolicyError, PrivacyError, ValueError) as exc:
        status = _status(node_dir.name, RoundStatus.FAILED, str(exc), node)
        return secagg.masked_input(zero, 0, dict(status))
    plain = {
        **(_evaluation_metrics(evaluation, keys.EVAL_PREFIX) if evaluation else {}),
        **_status(outcome.school_id, outcome.status, outcome.reason, node),
        **_train_metrics(outcome),
    }
    if outcome.weights is None:
        return secagg.masked_input(zero, 0, plain)
    update = {k: outcome.weights[k].astype(np.float64) - start[k] for k in terms.names}
    vector, clipped = secagg.encode_update(
        update, names=terms.names, bound=terms.update_bound, scale=terms.update_scale
    )
    if clipped > 0:  # the district sees only the weighted share over all schools
        log.warning(
            "school %s: %.2f %% of its update was clipped to ±%g for secure aggregation",
            outcome.school_id, 100 * clipped, terms.update_bound,
        )  # fmt: skip
    return secagg.masked_input(vector, outcome.n_families, plain)


def build_client_app(
    node_dir_of: NodeDirResolver = node_dir_from_config, extra_mods: Sequence[Mod] = ()
) -> ClientApp:
    """The ClientApp. Every reply passes the egress guard, then is audited as it leaves;
    `extra_mods` run outermost (they see exactly what leaves). SecAgg+ training messages go
    through Flower's `secaggplus_mod`, innermost, so the guard sees the masked reply."""
    app = ClientApp(
        mods=[*extra_mods, audit_egress(node_dir_of), egress_guard, secagg.secure_aggregation_mod]
    )

    @app.train()
    def train(message: Message, context: Context) -> Message:
        node_dir = node_dir_of(context)
        if secagg.is_secagg_train(message) and analytics_secagg.is_analytics(message):
            # a secure analytics query: the school's noise share of a SecAgg+ sum
            content = analytics_secagg.secure_analytics_input(message, node_dir, context)
            return Message(content, reply_to=message)
        if secagg.is_secagg_train(message):
            return Message(_secagg_train(message, node_dir), reply_to=message)
        try:
            request = TrainRequest.from_record(message.content.get(keys.CONFIG))
            node = SchoolNode(node_dir)
            if node.policy.secure_aggregation_required:
                return Message(
                    _train_reply(node.decline(reason=PLAIN_UPDATE_REFUSED), node),
                    reply_to=message,
                )
            incoming = arrays_to_weights(_arrays(message.content))
            evaluation = (  # last round's model, on this school's held-out families
                node.evaluate(weights=incoming)
                if request.evaluate_first and request.server_round > 1
                else None
            )
            outcome = node.train_round(
                weights=incoming,
                run_id=request.run_id,
                server_round=request.server_round,
                planned_rounds=request.planned_rounds,
                target_epsilon=request.target_epsilon,
                settings=request.settings,
                seed=request.seed,
            )
        except (NodeError, PolicyError, PrivacyError, ValueError) as exc:
            return Message(_failure(node_dir, exc), reply_to=message)
        return Message(_train_reply(outcome, node, evaluation), reply_to=message)

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        node_dir = node_dir_of(context)
        try:
            node = SchoolNode(node_dir)
            result = node.evaluate(weights=arrays_to_weights(_arrays(message.content)))
        except (NodeError, PolicyError, PrivacyError, ValueError) as exc:
            return Message(_failure(node_dir, exc), reply_to=message)
        if result is None:
            status = _status(
                node.school_id, RoundStatus.EXCLUDED, "below the minimum school size", node
            )
            return Message(RecordDict({keys.STATUS: status}), reply_to=message)
        metrics = MetricRecord(_evaluation_metrics(result))
        status = _status(node.school_id, RoundStatus.TRAINED, "", node)
        return Message(RecordDict({keys.METRICS: metrics, keys.STATUS: status}), reply_to=message)

    @app.query(keys.ANALYTICS_ACTION)
    def analytics(message: Message, context: Context) -> Message:
        return analytics_reply(message, node_dir_of(context))

    return app


app = build_client_app()
