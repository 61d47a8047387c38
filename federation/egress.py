"""The egress guard: a ClientApp mod that lets a reply leave the school only if it is allowed.

A reply may hold the model's arrays (with the shapes the district sent), aggregate metrics with
allow-listed keys, and the school's status. Anything else — another record, an unknown key, a
text where a number belongs — is not sent: the reply is replaced by an error that says what was
stopped. Fail closed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.serde import recorddict_to_proto

from client_node.node import node_audit_log
from federation import keys
from privacy.crypto import sha256_hex

log = logging.getLogger(__name__)

EGRESS_BLOCKED = 403


def check_reply(request: Message, reply: Message) -> str | None:
    """Why `reply` may not leave, or None if it may."""
    if reply.has_error():
        return None
    content = reply.content
    extra = set(content.keys()) - keys.ALLOWED_RECORDS
    if extra:
        return f"record {sorted(extra)[0]!r} is not on the egress allow-list"
    allowed_metrics = (
        keys.TRAIN_METRICS | keys.TRAIN_EVALUATION_METRICS
        if request.metadata.message_type.startswith("train")
        else keys.EVALUATE_METRICS
    )
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
                if isinstance(metrics, MetricRecord) and "epsilon-spent" in metrics
                else None
            ),
            policy_id=str(status.get("policy-id", "")) if isinstance(status, ConfigRecord) else "",
            policy_version=(
                str(status.get("policy-version", "")) if isinstance(status, ConfigRecord) else ""
            ),
        )
        return reply

    return mod
