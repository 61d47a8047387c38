"""Secure analytics through Flower's SecAgg+ on the simulation engine, with real schools.

One process runs two queries over 3 NHES schools under the district policy (SecAgg+ required;
t = max(2, round(2/3 · 3)) = 2):
- "full": every school answers (ε 0.5);
- "thin": schools 0 and 1 crash at the masked-vector stage, 1 of 3 remains (below t): the
  round fails and nothing is revealed (ε 0.5).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import Key

from client_node.analytics import (
    AnalyticsRequest,
    _noise_label,
    analytics_frame,
    exact_statistics,
    mechanism_for,
    secure_noise_std,
    secure_share,
    secure_statistic_names,
    secure_values,
)
from client_node.node import SchoolNode
from federation import keys, secagg
from federation.analytics_secagg import SECURE_PLAIN_METRICS
from privacy.mechanisms import noise_generator
from simulations.analytics import prepare_nodes
from tests.conftest import current_policy_text, signed_policy
from tests.integration import capture

SCHOOLS = ("west-town", "west-rural", "northeast-rural")
QUERIES = [
    {"query_id": "full", "epsilon": 0.5, "seed": 5, "drop": []},
    {"query_id": "thin", "epsilon": 0.5, "seed": 6, "drop": [0, 1]},
]


@pytest.fixture(scope="module")
def secure(tmp_path_factory, officer, nhes_tables):
    root = tmp_path_factory.mktemp("secure-analytics")
    policy = signed_policy(tmp_path_factory.mktemp("policy"), current_policy_text(), officer[0])
    nodes = prepare_nodes(
        root, {s: nhes_tables[s] for s in SCHOOLS}, policy=policy, trust_anchor=officer[1]
    )
    spec = root / "spec.json"
    spec.write_text(
        json.dumps({"nodes": [str(n) for n in nodes], "out": str(root / "out"), "queries": QUERIES})
    )
    run = subprocess.run(
        [sys.executable, "-m", "tests.integration.analytics_secure_run", str(spec)],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return nodes, root / "out"


def _wire(query_id: str) -> AnalyticsRequest:
    from aggregator.analytics import load_query
    from tests.integration.analytics_secure_run import QUERY

    base = load_query(QUERY)
    base = type(base).model_validate(
        base.model_dump() | {"describe": [{"variables": ["at_risk"], "by": "school"}]}
    )
    q = next(q for q in QUERIES if q["query_id"] == query_id)
    query = base.model_copy(update={"epsilon": q["epsilon"]})
    return AnalyticsRequest.model_validate(query.request(seed=q["seed"], query_id=query_id))


def test_the_secure_sum_is_the_schools_statistics_plus_their_noise_within_quantization(secure):
    nodes, out = secure
    report = json.loads((out / "full" / "analytics.json").read_text())
    assert report["mode"] == "secure"
    summary = report["secure_aggregation"]
    assert (summary["vectors"], summary["threshold"], summary["clipped_entries"]) == (3, 2, 0)
    # Prepare: each school's share recomputed here from its own table, seed and secret
    request = _wire("full")
    names = secure_statistic_names(request)
    sigma = mechanism_for(request, delta=2.5e-6).sigma
    exact_sum, shares_sum, released = (
        np.zeros(len(names)),
        np.zeros(len(names)),
        np.zeros(len(names)),
    )
    for node_dir in nodes:
        node = SchoolNode(node_dir)
        exact = exact_statistics(
            analytics_frame(node), request, school_id=node.school_id, k=node.policy.min_cohort_k
        )
        values = secure_values(exact, request, school_id=node.school_id)
        label = _noise_label(node, request, f"{request.query_id}/{node.school_id}/secure")
        share = secure_share(
            values, names, noise_std=secure_noise_std(mechanism_for(request, delta=2.5e-6), 2),
            generator=noise_generator(seed=request.seed, label=label),
        )  # fmt: skip
        exact_sum += [values.get(n, 0.0) for n in names]
        shares_sum += share.values
        released += share.released
    # Assert: the district's sum = Σ (exact + noise share), within SecAgg+'s quantization bound
    got = report["secure_aggregation"]["released"]
    assert set(got) == {n for n, c in zip(names, released, strict=True) if c > 0}
    bound = summary["quantization_max_error"]
    assert bound == pytest.approx(3 * 2 * 10_000 / 2**22)  # 0.014 families
    for i, name in enumerate(names):
        if name in got:
            assert abs(got[name]["sum"] - shares_sum[i]) <= bound, name
            assert got[name]["schools"] == released[i]
    noise = np.array([got[n]["sum"] for n in got]) - np.array(
        [exact_sum[names.index(n)] for n in got]
    )
    assert 0.5 * sigma < noise.std() < 2 * sigma  # σ√(3/2) expected: noise is there
    assert summary["noise_sd_per_entry"] == pytest.approx(sigma * np.sqrt(3 / 2), rel=1e-6)


def test_the_district_receives_only_masked_vectors_and_plain_figures(secure):
    nodes, out = secure
    replies = capture.load(out / "full" / "captured")
    masked = [
        m for _, m in replies
        if secagg.SECAGG_RECORD in m.content
        and Key.MASKED_PARAMETERS in m.content[secagg.SECAGG_RECORD]
    ]  # fmt: skip
    assert len(masked) == len(SCHOOLS)
    for message in masked:
        arrays = [
            bytes_to_ndarray(b)
            for b in message.content[secagg.SECAGG_RECORD][Key.MASKED_PARAMETERS]
        ]
        values = np.concatenate([a.astype(np.float64).ravel() for a in arrays[1:]])
        # a quantized share lies in [0, 2^22]; masked values spread over [0, 2^32)
        assert values.max() > 2**26 and np.median(values) > 2**28
        plain = message.content[secagg.FITRES_METRICS]
        assert set(plain.keys()) <= SECURE_PLAIN_METRICS | keys.STATUS_KEYS
        assert not any(str(k).startswith("a/") for k in plain)
        assert len(message.content[secagg.FITRES_ARRAYS]) == 0  # nothing unmasked
        assert plain["status"] == "answered" and plain["threshold"] == 2
    for _, message in replies:
        assert keys.METRICS not in message.content  # no plain analytics reply at all
    # the school's exact family count is nowhere in plain
    for node_dir in nodes:
        n = float(len(analytics_frame(SchoolNode(node_dir))))
        for data, _ in replies:
            assert np.float64(n).tobytes() not in data


def test_each_school_is_charged_the_querys_epsilon_and_the_report_says_secure(secure):
    nodes, out = secure
    report = json.loads((out / "full" / "analytics.json").read_text())
    assert report["per_school"] == {}
    for _school, s in report["schools"].items():
        assert s["status"] == "answered"
        assert s["epsilon_query"] == pytest.approx(0.5, abs=1e-3)
        assert s["suppressed"] is None  # only the pooled count is known
    text = (out / "full" / "analytics.md").read_text()
    assert "secure aggregation (SecAgg+)" in text
    assert "Per-school spread is not available" in text
    for node_dir in nodes:
        node = SchoolNode(node_dir)
        history = node.analytics_ledger.history()
        assert history[0].sample_rate == 1.0 and history[0].steps == 1
        assert node.ledger.history() == []
    groups = {g["group"] for d in report["describe"] for g in d["groups"]}
    assert groups == {"all-schools"}  # by school, pooled: no school's own description


def test_below_the_threshold_the_query_fails_and_nothing_is_revealed(secure):
    nodes, out = secure
    failed = (out / "thin" / "failed.txt").read_text()
    assert "secure aggregation failed, nothing was revealed" in failed
    assert "halted at the masked-vectors stage: 1 of 3 schools still answering" in failed
    assert "need 2" in failed
    assert not (out / "thin" / "analytics.json").exists()
    replies = capture.load(out / "thin" / "captured")
    unmask = [
        m for _, m in replies
        if secagg.SECAGG_RECORD in m.content and Key.SHARE_LIST in m.content[secagg.SECAGG_RECORD]
    ]  # fmt: skip
    assert unmask == []  # no school was asked for the shares that would unmask a sum
