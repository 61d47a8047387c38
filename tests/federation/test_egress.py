import time

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict

from federation import keys
from federation.client_app import weights_to_arrays
from federation.egress import EGRESS_BLOCKED, check_reply, egress_guard

WEIGHTS = {"weight": np.zeros((1, 3), np.float32), "bias": np.zeros(1, np.float32)}


def request(kind="train"):
    metadata = Metadata(
        run_id=1, message_id="m1", src_node_id=0, dst_node_id=1, reply_to_message_id="",
        group_id="1", created_at=time.time(), ttl=3600, message_type=kind,
    )  # fmt: skip
    content = RecordDict({keys.ARRAYS: weights_to_arrays(WEIGHTS), keys.CONFIG: ConfigRecord({})})
    return Message(content=content, metadata=metadata)


def reply_to(req, content):
    return Message(RecordDict(content), reply_to=req)


def good_train_content():
    return {
        keys.ARRAYS: weights_to_arrays(WEIGHTS),
        keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 10, "epsilon-spent": 1.0}),
        keys.STATUS: ConfigRecord({"school-id": "s", "status": "trained", "reason": ""}),
    }


def test_an_allowed_reply_passes():
    req = request()
    assert check_reply(req, reply_to(req, good_train_content())) is None


def test_an_extra_record_is_stopped():
    req = request()
    content = good_train_content() | {"rows": ConfigRecord({"family": "F-1"})}
    assert "record 'rows' is not on the egress allow-list" in check_reply(
        req, reply_to(req, content)
    )


def test_an_unknown_metric_is_stopped():
    req = request()
    content = good_train_content()
    content[keys.METRICS] = MetricRecord({keys.NUM_EXAMPLES: 10, "family-20191000012": 1.0})
    assert "metric 'family-20191000012'" in check_reply(req, reply_to(req, content))


def test_arrays_of_another_shape_are_stopped():
    req = request()
    content = good_train_content()
    content[keys.ARRAYS] = ArrayRecord(
        {"weight": weights_to_arrays({"w": np.zeros((50, 3), np.float32)})["w"]}
    )
    assert "do not match the model" in check_reply(req, reply_to(req, content))


def test_evaluate_replies_may_not_carry_training_metrics():
    req = request("evaluate")
    content = {keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 10, "epsilon-spent": 1.0})}
    assert "metric 'epsilon-spent'" in check_reply(req, reply_to(req, content))


def test_the_guard_replaces_a_stopped_reply_with_an_error():
    req = request()
    bad = good_train_content() | {"rows": ConfigRecord({"family": "F-1"})}
    out = egress_guard(req, None, lambda m, c: reply_to(m, bad))
    assert out.has_error()
    assert out.error.code == EGRESS_BLOCKED
    assert "egress guard" in out.error.reason
