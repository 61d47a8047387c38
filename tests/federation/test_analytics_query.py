"""Analytics replies pass the egress guard only with the statistics the request asked for."""

import json
import time

import pytest
from flwr.app import ConfigRecord, Message, Metadata, MetricRecord, RecordDict

from client_node.analytics import AnalyticsRequest, mechanism_for, statistic_names
from client_node.node import SchoolNode
from federation import keys
from federation.analytics_app import (
    MESSAGE_TYPE,
    PLAIN_ANSWER_REFUSED,
    analytics_reply,
    answer_from,
    cost_from,
)
from federation.egress import check_reply
from tests.conftest import current_policy_text, make_node


@pytest.fixture
def local_town(tmp_path, nhes_tables, officer):
    """West town under a policy that does not require secure aggregation (local mode)."""
    text = current_policy_text().replace(
        "secure_aggregation_required: true", "secure_aggregation_required: false"
    )
    assert "secure_aggregation_required: false" in text
    return make_node(
        tmp_path, "west-town", nhes_tables["west-town"], officer=officer, policy_text=text
    )


REQUEST = {
    "query_id": "q1",
    "epsilon": 0.3,
    "involvement": ["volunteering"],
    "context": [{"variable": "income"}],
    "seed": 2,
}


def query_message(request=REQUEST):
    metadata = Metadata(
        run_id=1, message_id="m1", src_node_id=0, dst_node_id=1, reply_to_message_id="",
        group_id="1", created_at=time.time(), ttl=3600, message_type=MESSAGE_TYPE,
    )  # fmt: skip
    config = ConfigRecord({keys.RUN_ID: "q1", keys.REQUEST: json.dumps(request)})
    return Message(content=RecordDict({keys.CONFIG: config}), metadata=metadata)


def reply(req, metrics, school="west-town"):
    status = ConfigRecord({"school-id": school, "status": "answered", "reason": ""})
    return Message(
        RecordDict({keys.METRICS: MetricRecord(metrics), keys.STATUS: status}), reply_to=req
    )


def test_requested_statistics_pass_and_anything_else_is_stopped():
    req = query_message()
    names = statistic_names(AnalyticsRequest.model_validate(REQUEST), "west-town")
    assert names[:2] == ["a/e/h0/n", "a/e/h0/s"]
    allowed = {n: 12.5 for n in names} | {"noise-std": 20.0, "epsilon-spent": 1.0}
    assert check_reply(req, reply(req, allowed)) is None
    # a statistic the request did not ask for (a per-family value in disguise) is stopped
    extra = allowed | {"a/e/h0/family-20191000012": 1.0}
    assert "metric 'a/e/h0/family-20191000012' is not on the egress allow-list" in check_reply(
        req, reply(req, extra)
    )
    # a training metric does not ride along on an analytics reply
    assert "metric 'train-loss'" in check_reply(req, reply(req, allowed | {"train-loss": 0.1}))


def test_a_node_answers_a_query_message(local_town):
    west_town = local_town
    req = query_message()
    answered = analytics_reply(req, west_town)
    assert check_reply(req, answered) is None
    answer = answer_from(answered)
    assert answer.school_id == "west-town" and answer.status == "answered"
    assert set(answer.values) <= set(
        statistic_names(AnalyticsRequest.model_validate(REQUEST), "west-town")
    )
    assert abs(answer.epsilon_query - 0.3) < 1e-3 and answer.noise_std > 0
    # the same message again: the query id is charged once only, the node says so
    again = answer_from(analytics_reply(req, west_town))
    assert again.status == "failed" and "already charged" in again.reason
    bad = answer_from(analytics_reply(query_message(REQUEST | {"epsilon": "lots"}), west_town))
    assert bad.status == "failed" and "'epsilon' = 'lots'" in bad.reason


def test_a_pre_flight_says_what_the_query_costs_charges_nothing_and_carries_no_statistic(
    west_town,
):
    from client_node.node import SchoolNode

    node = SchoolNode(west_town)
    history = node.analytics_ledger.history()
    req = query_message(REQUEST | {"query_id": "q-cost", "cost_only": True})

    preflight = analytics_reply(req, west_town)

    assert check_reply(req, preflight) is None
    cost = cost_from(preflight)
    spent, after = node.analytics_ledger.after(
        mechanism_for(AnalyticsRequest.model_validate(REQUEST), delta=2.5e-6).spend
    )
    assert (cost.school_id, cost.spent, cost.after) == ("west-town", spent, after)
    assert cost.budget == 1.0 and cost.delta == 2.5e-6 and cost.fits
    assert not any(k.startswith("a/") for k in preflight.content[keys.METRICS])
    assert node.analytics_ledger.history() == history  # nothing charged
    # a statistic riding along on a pre-flight reply is stopped
    sneaky = reply(req, {"epsilon-spent": 0.0, "a/e/h0/n": 140.0})
    assert "metric 'a/e/h0/n' is not on the egress allow-list" in check_reply(req, sneaky)


def test_under_a_secagg_policy_a_plain_query_is_refused_and_costs_nothing(west_town):
    reply = analytics_reply(query_message(), west_town)
    answer = answer_from(reply)
    assert (answer.status, answer.reason) == ("refused", PLAIN_ANSWER_REFUSED)
    assert answer.values == {}
    node = SchoolNode(west_town)
    assert node.analytics_ledger.spent() == 0.0
    refusals = [e for e in node.audit.entries() if e["kind"] == "refusal"]
    assert refusals[-1]["data"]["reason"] == PLAIN_ANSWER_REFUSED
