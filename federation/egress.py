"""The egress guard: a ClientApp mod that lets a reply leave the school only if it is allowed.

A reply may hold the model's arrays (with the shapes the district sent), aggregate metrics with
allow-listed keys, and the school's status. Anything else — another record, an unknown key, a
text where a number belongs — is not sent: the reply is replaced by an error that says what was
stopped. Fail closed.

A reply to a SecAgg+ training message may hold only SecAgg+'s own keys (public keys, encrypted
shares, the masked vector, key shares), the school's status and aggregate metrics beside them
(training figures, and the evaluation of the incoming model when the district asked for it),
and no unmasked array at all; beside a secure analytics vector, only the school's status and
its ε and noise figures (analytics_secagg.SECURE_PLAIN_METRICS), never a statistic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.serde import recorddict_to_proto

from client_node.node import node_audit_log
from federation import analytics_app, analytics_secagg, keys, secagg
from privacy.crypto import sha256_hex

log = logging.getLogger(__name__)

EGRESS_BLOCKED = 403


def check_reply(request: Message, reply: Message) -> str | None:
    """Why `reply` may not leave, or None if it may."""
    if reply.has_error():
        return None
    if secagg.is_secagg_train(request):
        plain = (
            analytics_secagg.SECURE_PLAIN_METRICS
            if analytics_secagg.is_analytics(request)
            else keys.TRAIN_METRICS | keys.TRAIN_EVALUATION_METRICS
        )
        return _check_secagg_reply(reply, plain)
    content = reply.content
    extra = set(content.keys()) - keys.ALLOWED_RECORDS
    if extra:
        return f"record {sorted(extra)[0]!r} is not on the egress allow-list"
    kind = request.metadata.message_type
    if kind.startswith("train"):
        allowed_metrics = keys.TRAIN_METRICS | keys.TRAIN_EVALUATION_METRICS
    elif kind == analytics_app.MESSAGE_TYPE:
        status = content.get(keys.STATUS)
        school = str(status.get("school-id", "")) if isinstance(status, ConfigRecord) else ""
        allowed_metrics = analytics_app.allowed_metrics(request, school)
    else:
        allowed_metrics = keys.EVALUATE_METRICS
    for name, record in content.items():
        if name == keys.ARRAYS:
            if not isinstance(record, ArrayRecord):
                return f"record {name!r} is not an ArrayRecord"
            sent = request.content.get(keys.ARRAYS)
            if not isinstance(sent, ArrayRecord):
                return "the request carried no model arrays to answer with"
            shapes = {k: tuple(v.shape) for k, v in record.items()}
            if shapes != {k: tuple(v.shape) for k, v in sent.items()}:
                return f"model arrays {shapes} do not match the model the district sent"
        elif name == keys.METRICS:
            if not isinstance(record, MetricRecord):
                return f"record {name!r} is not a MetricRecord"
            unknown = set(record.keys()) - allowed_metrics
            if unknown:
                return f"metric {sorted(unknown)[0]!r} is not on the egress allow-list"
            for key, value in record.items():
                if not isinstance(value, int | float):
                    return f"metric {key!r} is not a single number"
        elif name == keys.STATUS:
            if not isinstance(record, ConfigRecord):
                return f"record {name!r} is not a ConfigRecord"
            unknown = set(record.keys()) - keys.STATUS_KEYS
            if unknown:
                return f"status key {sorted(unknown)[0]!r} is not on the egress allow-list"
            if not all(isinstance(v, str) for v in record.values()):
                return "status values must be text"
    return None


def _check_secagg_reply(reply: Message, plain: frozenset[str]) -> str | None:
    content = reply.content
    extra = set(content.keys()) - secagg.SECAGG_REPLY_RECORDS
    if extra:
        return f"record {sorted(extra)[0]!r} is not on the secure-aggregation allow-list"
    for name, record in content.items():
        if isinstance(record, ArrayRecord):
            if len(record) > 0:
                return f"record {name!r} would send unmasked arrays in a secure-aggregation round"
        elif name == secagg.SECAGG_RECORD:
            if not isinstance(record, ConfigRecord):
                return f"record {name!r} is not a ConfigRecord"
            unknown = set(record.keys()) - secagg.SECAGG_REPLY_KEYS
            if unknown:
                return f"SecAgg+ key {sorted(unknown)[0]!r} is not on the egress allow-list"
        elif name == secagg.FITRES_METRICS:
            if not isinstance(record, ConfigRecord):
                return f"record {name!r} is not a ConfigRecord"
            for key, value in record.items():
                if key in keys.STATUS_KEYS:
                    if not isinstance(value, str):
                        return "status values must be text"
                elif key in plain:
                    if not isinstance(value, int | float) or isinstance(value, bool):
                        return f"metric {key!r} is not a single number"
                else:
                    return f"metric {key!r} is not on the egress allow-list"
        elif name == secagg.FITRES_NUM_EXAMPLES:
            if not isinstance(record, MetricRecord) or set(record.keys()) != {"num_examples"}:
                return f"record {name!r} may hold only the weight"
        elif name == secagg.FITRES_STATUS:
            if not isinstance(record, ConfigRecord) or set(record.keys()) != {"code", "message"}:
                return f"record {name!r} may hold only a code and a message"
        else:
            return f"record {name!r} has an unexpected type"
    return None


def egress_guard(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower mod: check every reply before it leaves the node."""
    reply = call_next(message, context)
    reason = check_reply(message, reply)
    if reason is None:
        return reply
    log.error("egress guard stopped a %s reply: %s", message.metadata.message_type, reason)
    return Message(Error(code=EGRESS_BLOCKED, reason=f"egress guard: {reason}"), reply_to=message)


def audit_egress(node_dir_of: Callable[[Context], Path]) -> Mod:
    """Flower mod (outside the guard): every reply that leaves is appended to the audit log
    with its type, size, SHA-256, the ε spent and the policy it was sent under."""

    def mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(message, context)
        audit = node_audit_log(node_dir_of(context))
        kind = message.metadata.message_type
        if reply.has_error():
            audit.append("refusal", what="egress", message_type=kind, reason=reply.error.reason)
            return reply
        payload = recorddict_to_proto(reply.content).SerializeToString()
        status = reply.content.get(keys.STATUS)
        metrics = reply.content.get(keys.METRICS)
        config = message.content.get(keys.CONFIG)
        extra = {}
        if secagg.is_secagg_train(message):
            # status and metrics travel in one record beside the masked vector
            status = metrics = reply.content.get(secagg.FITRES_METRICS)
            config = message.content.get(secagg.FITINS_CONFIG)
            stage = reply.content.get(secagg.SECAGG_RECORD)
            extra["secagg_keys"] = sorted(stage.keys()) if isinstance(stage, ConfigRecord) else []
        audit.append(
            "egress",
            message_type=kind,
            run_id=str(config.get(keys.RUN_ID, "")) if isinstance(config, ConfigRecord) else "",
            round=int(config.get("server-round", 0)) if isinstance(config, ConfigRecord) else 0,  # type: ignore[arg-type]
            bytes=len(payload),
            sha256=sha256_hex(payload),
            records=sorted(reply.content.keys()),
            status=str(status.get("status", "")) if isinstance(status, ConfigRecord) else "",
            epsilon_spent=(
                float(metrics["epsilon-spent"])  # type: ignore[arg-type]
                if isinstance(metrics, MetricRecord | ConfigRecord) and "epsilon-spent" in metrics
                else None
            ),
            policy_id=str(status.get("policy-id", "")) if isinstance(status, ConfigRecord) else "",
            policy_version=(
                str(status.get("policy-version", "")) if isinstance(status, ConfigRecord) else ""
            ),
            **extra,
        )
        return reply

    return mod
