"""A real analytics query through Flower's simulation engine in local mode (a policy without
secure aggregation; the secure mode has its own test, test_analytics_secure.py), and a refused
one."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from client_node.analytics import AnalyticsRequest, mechanism_for, statistic_names
from client_node.node import SchoolNode
from client_node.table import read_table
from federation import keys
from federation.analytics_app import MESSAGE_TYPE
from simulations.analytics import QueryRefused, prepare_nodes, run_query
from tests.conftest import current_policy_text, signed_policy
from tests.integration import capture

SCHOOLS = ("west-town", "west-rural", "northeast-rural")


@pytest.fixture(scope="module")
def answered(tmp_path_factory, officer, nhes_tables):
    root = tmp_path_factory.mktemp("analytics")
    text = current_policy_text().replace(
        "secure_aggregation_required: true", "secure_aggregation_required: false"
    )
    policy = signed_policy(tmp_path_factory.mktemp("policy"), text, officer[0])
    nodes = prepare_nodes(
        root, {s: nhes_tables[s] for s in SCHOOLS}, policy=policy, trust_anchor=officer[1]
    )
    out, captured = root / "report", root / "captured"
    captured.mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "tests.integration.analytics_capture", str(root / "nodes"),
         str(out), str(captured), "7"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return nodes, out, capture.load(captured)


def test_every_school_answers_through_flower_and_spends_from_its_analytics_pool(answered):
    nodes, out, replies = answered
    report = json.loads((out / "analytics.json").read_text())
    # Assert: three schools answered at ε 1, from the analytics pool only
    assert {s: v["status"] for s, v in report["schools"].items()} == dict.fromkeys(
        SCHOOLS, "answered"
    )
    for node_dir in nodes:
        node = SchoolNode(node_dir)
        (spend,) = node.analytics_ledger.history()
        assert spend.sample_rate == 1.0 and spend.steps == 1
        assert node.analytics_ledger.spent() == pytest.approx(1.0, abs=1e-3)
        assert node.ledger.history() == []
        (egress,) = [e for e in node.audit.entries() if e["kind"] == "egress"]
        assert egress["data"]["message_type"] == MESSAGE_TYPE
        assert egress["data"]["epsilon_spent"] == pytest.approx(1.0, abs=1e-3)
    effects = {e["type"]: e for e in report["effects"]}
    assert effects["app_use"]["adjusted"] is None  # no NHES column: reported, not estimated
    # three small schools: only types whose cells stand clear of the noise are ranked
    assert report["ranking"] == [t for t, e in effects.items() if e["adjusted"] is not None]
    assert report["ranking"] and "app_use" not in report["ranking"]
    for name in ("analytics.md", "analytics.html", "effects.png", "per_school.png", "epsilon.png"):
        assert (out / name).stat().st_size > 500, name


def test_replies_carry_only_requested_noisy_statistics_and_no_family(answered, nhes_tables):
    nodes, _, replies = answered
    assert len(replies) == len(SCHOOLS)
    for data, message in replies:
        status = message.content[keys.STATUS]
        school = str(status["school-id"])
        node = SchoolNode(next(n for n in nodes if n.name == school))
        request = AnalyticsRequest(
            query_id="x", epsilon=1.0,
            involvement=("conferences", "meetings", "volunteering", "newsletters",
                         "teacher_messages", "homework_help", "app_use"),
            context=({"variable": "income"}, {"variable": "parent_education"}),
            describe=({"variables": ("at_risk", "volunteering"), "by": "school"},),
        )  # fmt: skip
        metrics = message.content[keys.METRICS]
        stats = {k: v for k, v in metrics.items() if k.startswith("a/")}
        assert stats and set(stats) <= set(statistic_names(request, school))
        # noisy: the released family count is not the school's count
        families = len(read_table(node.dir / "data/train.csv")) + len(
            read_table(node.dir / "data/test.csv")
        )
        assert stats[f"a/d0/{school}/n"] != families
        assert metrics["noise-std"] == pytest.approx(mechanism_for(request, delta=2.5e-6).sigma)
        for table in ("data/train.csv", "data/test.csv"):
            for pid in read_table(node.dir / table).family_ids[:50]:
                assert str(pid).encode() not in data
        for raw_id in nhes_tables[school]["family_id"].astype(str)[:50]:
            assert raw_id.encode() not in data


def test_a_query_past_the_budget_is_refused_before_anything_is_sent(answered):
    nodes, _, _ = answered
    from aggregator.analytics import load_query
    from tests.aggregator.test_analytics import EXAMPLE

    entries = {n: len(SchoolNode(n).audit.entries()) for n in nodes}
    with pytest.raises(QueryRefused) as info:
        run_query(load_query(EXAMPLE), node_dirs=nodes, seed=1)
    message = str(info.value)
    assert "refused before anything was sent: 3 of 3 schools" in message
    assert "needs ε 1.0000 but has 0.0000 of 1.0000 left (spent 1.0000" in message
    for n in nodes:  # nothing sent, nothing charged, nothing logged
        assert len(SchoolNode(n).audit.entries()) == entries[n]
        assert len(SchoolNode(n).analytics_ledger.history()) == 1
