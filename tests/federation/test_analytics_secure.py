"""Secure analytics without Flower's engine: the school's share, the noise the district's sum
carries, the differencing attack on that sum, and the guard on what leaves beside it."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_STATE, Key

from client_node.analytics import (
    AnalyticsRequest,
    ExactStatistics,
    exact_statistics,
    mechanism_for,
    secure_statistic_names,
    secure_values,
)
from client_node.errors import NodeError
from client_node.node import SchoolNode
from federation import keys, secagg
from federation.analytics_secagg import secure_analytics_input, secure_total
from federation.egress import check_reply
from simulations.analytics import exact_answers, secure_answer_total
from simulations.involvement import involvement_district

DELTA = 2.5e-6
REQUEST = AnalyticsRequest(
    query_id="sq",
    epsilon=1.0,
    involvement=("conferences", "volunteering", "meetings"),
    context=({"variable": "income"},),
    describe=({"variables": ("at_risk",), "by": "school", "bins": 2},),
)


@pytest.fixture(scope="module")
def district():
    return involvement_district(schools=4, families=300, seed=5)


def test_the_secure_layout_has_the_same_sensitivity(district):
    # Prepare: Δ² = 2 + 2·3 types + (1 + 2·1) = 11, as in local mode
    table = district["school-01"]
    names = secure_statistic_names(REQUEST)

    def vector(frame):
        exact = exact_statistics(frame, REQUEST, school_id="s", k=0)
        values = secure_values(exact, REQUEST, school_id="s")
        return np.array([values.get(n, 0.0) for n in names])

    full = vector(table)
    # Execute: remove each of 150 families in turn
    moves = [np.linalg.norm(full - vector(table.drop(index=row))) for row in range(150)]
    # Assert
    assert REQUEST.l2_sensitivity == pytest.approx(math.sqrt(11))
    assert max(moves) <= REQUEST.l2_sensitivity + 1e-9
    assert max(moves) > 0.9 * math.sqrt(2 + 2 * 3)  # a family moves every type's cell
    assert "a/d0/all-schools/n" in names and not any("school-01" in n for n in names)


@pytest.mark.parametrize(("threshold", "factor"), [(4, 1.0), (2, math.sqrt(2))])
def test_the_pooled_noise_is_sigma_when_the_sum_holds_t_shares(district, threshold, factor):
    # Prepare: 4 schools; t = 4 (every school needed) or t = 2 (a sum of 4 holds 4/2 · σ²)
    exact = exact_answers(district, REQUEST, k=10)
    sigma = mechanism_for(REQUEST, delta=DELTA).sigma
    names = secure_statistic_names(REQUEST)
    pooled_exact = {
        n: sum(
            secure_values(ExactStatistics(v, 0, ()), REQUEST, school_id=s).get(n, 0.0)
            for s, v in exact.items()
        )
        for n in names
    }
    # Execute: 300 seeded repetitions of the district's sum
    noise = []
    for seed in range(300):
        total = secure_answer_total(exact, REQUEST, delta=DELTA, seed=seed, threshold=threshold)
        noise += [total.values[n] - pooled_exact[n] for n in total.values]
        assert total.noise_var == pytest.approx(4 * sigma**2 / threshold, rel=1e-6)
    noise = np.array(noise)
    # Assert: σ (not 4σ as 16 local answers would add, not σ/4), times √(k/t)
    assert len(noise) > 5000
    assert noise.std() == pytest.approx(factor * sigma, rel=0.03)
    assert abs(noise.mean()) < 4 * factor * sigma / math.sqrt(len(noise))


def test_the_differencing_attack_on_the_secure_sum_sees_the_full_noise(district):
    # Prepare: the same query twice, with and without one at-risk volunteering family at one
    # school; the district sees only the sums (t = 4 = every school)
    school = district["school-02"]
    target = school.index[(school["at_risk"] == 1) & (school["FSVOL"] == 1)][0]
    without = dict(district) | {"school-02": school.drop(index=target)}
    a_exact, b_exact = exact_answers(district, REQUEST, k=10), exact_answers(without, REQUEST, k=10)
    sigma = mechanism_for(REQUEST, delta=DELTA).sigma
    # Execute: 1000 seeded repetitions of both releases
    diffs = []
    key = None
    for seed in range(1000):
        a = secure_answer_total(a_exact, REQUEST, delta=DELTA, seed=seed, threshold=4)
        b = secure_answer_total(b_exact, REQUEST, delta=DELTA, seed=10_000 + seed, threshold=4)
        key = key or next(
            k for k in a.values if k.endswith("/volunteering/s1") and k in b.values
            and abs(sum(a_exact[s].get(k.replace("s1", "n1"), 0) for s in a_exact)
                    - sum(b_exact[s].get(k.replace("s1", "n1"), 0) for s in b_exact)) == 1
        )  # fmt: skip
        diffs.append(a.values[key] - b.values[key])
    diffs = np.array(diffs)
    # Assert: the family's 1 plus noise of sd σ√2 — what one school's local answers promise
    assert diffs.std() == pytest.approx(sigma * math.sqrt(2), rel=0.06)
    assert abs(diffs.mean() - 1.0) < 4 * sigma * math.sqrt(2) / math.sqrt(len(diffs))
    assert np.mean(np.abs(diffs - 1.0) < 0.5) < 0.02


def test_the_sum_is_exact_statistics_plus_noise_within_quantization(district):
    exact = exact_answers(district, REQUEST, k=10)
    total = secure_answer_total(exact, REQUEST, delta=DELTA, seed=3, threshold=3)
    again = secure_answer_total(exact, REQUEST, delta=DELTA, seed=3, threshold=3)
    # the seeded shares are the same; only SecAgg+'s stochastic rounding differs
    for name, value in total.values.items():
        assert abs(value - again.values[name]) <= 2 * total.quantization_max
    assert total.quantization_max == pytest.approx(4 * 2 * 10_000 / 2**22)
    assert total.quantization_var < 1e-6 * total.noise_var  # negligible: 8e-8 of it
    released = {n for s, v in exact.items() for n in secure_values(
        ExactStatistics(v, 0, ()), REQUEST, school_id=s)}  # fmt: skip
    assert set(total.values) == released
    assert all(1 <= c <= 4 for c in total.contributors.values())


def test_a_sum_missing_a_noise_share_or_below_t_is_not_used():
    names = secure_statistic_names(REQUEST)
    summed = secagg.AnalyticsSum(np.zeros(len(names)), np.ones(len(names), int), 2, 0, 0)
    with pytest.raises(ValueError, match="2 noise shares in a sum of 3 vectors"):
        secure_total(summed, REQUEST, vectors=3, threshold=2, delta=DELTA, bound=1e4)
    with pytest.raises(ValueError, match="2 vectors in the sum; SecAgg\\+ needs at least t = 3"):
        secure_total(summed, REQUEST, vectors=2, threshold=3, delta=DELTA, bound=1e4)


def _secure_message(request: dict, *, bound: float = 10_000.0) -> Message:
    metadata = Metadata(
        run_id=1, message_id="m1", src_node_id=0, dst_node_id=1, reply_to_message_id="",
        group_id="1", created_at=time.time(), ttl=3600, message_type="train",
    )  # fmt: skip
    config = ConfigRecord(
        {keys.RUN_ID: request["query_id"], keys.REQUEST: json.dumps(request),
         secagg.VALUE_BOUND: bound, "server-round": 1}
    )  # fmt: skip
    content = RecordDict(
        {secagg.FITINS_CONFIG: config, secagg.SECAGG_RECORD: ConfigRecord({Key.STAGE: "x"})}
    )
    return Message(content=content, metadata=metadata)


def _context(threshold: int = 2, max_weight: float = 1.0) -> Context:
    state = RecordDict(
        {RECORD_KEY_STATE: ConfigRecord(
            {"threshold": threshold, "clipping_range": 8.0, "max_weight": max_weight})}
    )  # fmt: skip
    return Context(run_id=1, node_id=1, node_config={}, state=state, run_config={})


def test_a_school_feeds_a_scaled_noisy_share_and_pays_once(west_town):
    request = REQUEST.model_dump(mode="json") | {"seed": 4}
    # Execute
    content = secure_analytics_input(_secure_message(request), west_town, _context())
    # Assert: weight 1, everything inside SecAgg+'s range, the noise share and flags inside
    node = SchoolNode(west_town)
    assert node.analytics_ledger.spent() == pytest.approx(1.0, abs=1e-3)
    num = content[secagg.FITRES_NUM_EXAMPLES]["num_examples"]
    plain = content[secagg.FITRES_METRICS]
    assert num == 1 and plain["status"] == "answered" and plain["threshold"] == 2
    sigma = mechanism_for(REQUEST, delta=DELTA).sigma
    assert plain["noise-std"] == pytest.approx(sigma / math.sqrt(2))
    arrays = content[secagg.FITRES_ARRAYS]
    assert len(arrays) == 3
    values, flags, tail = (a.numpy() * 10_000 / 8.0 for a in arrays.values())
    assert np.abs(values).max() < 10_000 and set(np.round(flags, 9)) <= {0.0, 1.0}
    assert tail[0] == pytest.approx(1.0) and tail[2] == 0.0  # one noise share, nothing clipped
    # a second share for the same query is refused by the ledger: zeros + noise, no charge
    again = secure_analytics_input(_secure_message(request), west_town, _context())
    plain = again[secagg.FITRES_METRICS]
    assert plain["status"] == "refused"
    second, flags, tail = (a.numpy() * 10_000 / 8.0 for a in again[secagg.FITRES_ARRAYS].values())
    assert flags.max() == 0.0 and tail[0] == pytest.approx(1.0)
    assert second.std() == pytest.approx(sigma / math.sqrt(2), rel=0.5)  # noise, no data
    assert SchoolNode(west_town).analytics_ledger.spent() == pytest.approx(1.0, abs=1e-3)


def test_a_school_refuses_terms_that_break_the_sum(west_town):
    request = REQUEST.model_dump(mode="json")
    with pytest.raises(NodeError, match="max weight 3"):
        secure_analytics_input(_secure_message(request), west_town, _context(max_weight=3.0))
    with pytest.raises(NodeError, match="threshold 1 is below 2"):
        secure_analytics_input(_secure_message(request), west_town, _context(threshold=1))
    no_state = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    with pytest.raises(NodeError, match="no SecAgg\\+ protocol state"):
        secure_analytics_input(_secure_message(request), west_town, no_state)
    assert SchoolNode(west_town).analytics_ledger.spent() == 0.0


def test_the_guard_stops_a_statistic_beside_the_masked_vector():
    request = _secure_message(REQUEST.model_dump(mode="json"))
    leaking = RecordDict(
        {
            secagg.SECAGG_RECORD: ConfigRecord({Key.MASKED_PARAMETERS: [b"x"]}),
            secagg.FITRES_METRICS: ConfigRecord(
                {"school-id": "s", "status": "answered", "epsilon-spent": 1.0, "a/e/h0/n": 80.0}
            ),
        }
    )
    reason = check_reply(request, Message(leaking, reply_to=request))
    assert reason == "metric 'a/e/h0/n' is not on the egress allow-list"
    fine = RecordDict(
        {
            secagg.SECAGG_RECORD: ConfigRecord({Key.MASKED_PARAMETERS: [b"x"]}),
            secagg.FITRES_METRICS: ConfigRecord(
                {"school-id": "s", "status": "answered", "epsilon-spent": 1.0, "threshold": 2}
            ),
        }
    )
    assert check_reply(request, Message(fine, reply_to=request)) is None
