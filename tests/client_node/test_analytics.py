"""The school's analytics answer: real sensitivity, k-suppression, the differencing attack,
and the analytics ledger."""

import math

import numpy as np
import pandas as pd
import pytest

from client_node.analytics import (
    AnalyticsRequest,
    AnswerStatus,
    analytics_frame,
    answer_query,
    exact_statistics,
    mechanism_for,
    statistic_names,
)
from client_node.node import SchoolNode
from privacy.accountant import epsilon_of
from privacy.mechanisms import noise_generator
from simulations.involvement import involvement_district

REQUEST = AnalyticsRequest(
    query_id="q1",
    epsilon=1.0,
    involvement=("conferences", "volunteering", "meetings", "app_use"),
    context=({"variable": "income"}, {"variable": "parent_education"}),
    describe=({"variables": ("at_risk", "income"), "by": "grade_band", "bins": 4},),
)


@pytest.fixture(scope="module")
def school():
    return involvement_district(schools=1, families=400, seed=3)["school-01"]


def vector(stats, names):
    return np.array([stats.values.get(n, 0.0) for n in names])


def test_one_family_moves_the_answer_by_at_most_the_sensitivity(school):
    # Prepare: Δ² = 2 + 2·4 types + (1 + 2·2 variables) = 15
    assert REQUEST.l2_sensitivity == pytest.approx(math.sqrt(15))
    names = statistic_names(REQUEST, "school-01")
    full = vector(exact_statistics(school, REQUEST, school_id="school-01", k=0), names)
    # Execute: remove each of 300 families in turn, and a family with every value at 1
    moves = []
    for row in range(300):
        without = school.drop(index=row)
        moves.append(
            np.linalg.norm(
                full - vector(exact_statistics(without, REQUEST, school_id="school-01", k=0), names)
            )
        )
    extreme = school.iloc[[0]].copy()
    extreme.loc[:, [c for c in school.columns if c != "family_id"]] = 1.0
    extreme["ALLGRADEX"] = 0.0  # one grade band
    with_extreme = pd.concat([school, extreme], ignore_index=True)
    worst = np.linalg.norm(
        vector(exact_statistics(with_extreme, REQUEST, school_id="school-01", k=0), names) - full
    )
    # Assert: never more than Δ; the worst-case family reaches it exactly
    assert max(moves) <= REQUEST.l2_sensitivity + 1e-9
    assert worst == pytest.approx(REQUEST.l2_sensitivity)


def test_no_cell_with_fewer_than_k_families_is_released(school):
    k = 25
    # a stratum with 20 families, a grade band with 24, and a type almost everybody has
    small = school.copy()
    small["TTLHHINC"] = 0.0
    small.loc[:19, "TTLHHINC"] = 0.9
    small["PARGRADEX"] = 0.0
    small["ALLGRADEX"] = 0.0
    small.loc[:23, "ALLGRADEX"] = 1.0
    small["FSATCNFN"] = 1.0
    small.loc[:9, "FSATCNFN"] = 0.0
    stats = exact_statistics(small, REQUEST, school_id="s", k=k)
    v = stats.values
    assert not any(key.startswith("a/e/h10/") for key in v)  # 20 families: withheld whole
    assert "a/d0/high/n" not in v and "a/d0/elementary/n" in v
    assert "a/e/h00/conferences/n1" not in v  # only 10 not involved
    assert "a/e/h00/volunteering/n1" in v
    # every released count is of at least k families, and so is its complement
    for key, value in v.items():
        if key.endswith("/n") or "/bin" in key:
            assert value >= k, key
        if key.endswith("/n1"):
            stratum_n = v[key.rsplit("/", 2)[0] + "/n"]
            assert value >= k and stratum_n - value >= k, key
    assert stats.suppressed > 0
    assert stats.unavailable == ()


def test_the_differencing_attack_sees_only_calibrated_noise(school):
    # Prepare: the same query on a group with and without one at-risk, involved family
    target = school.index[(school["at_risk"] == 1) & (school["FSVOL"] == 1)][0]
    with_family = exact_statistics(school, REQUEST, school_id="s", k=10).values
    without = exact_statistics(school.drop(index=target), REQUEST, school_id="s", k=10).values
    key = next(k for k in with_family if k.endswith("/volunteering/s1") and k in without)
    true_difference = with_family[key] - without[key]
    mech = mechanism_for(REQUEST, delta=2.5e-6)
    # Execute: 4000 seeded repetitions of both releases, through the school's mechanism
    diffs = []
    for seed in range(4000):
        a = mech.release(
            np.array([with_family[key]]), generator=noise_generator(seed=seed, label="a")
        )
        b = mech.release(np.array([without[key]]), generator=noise_generator(seed=seed, label="b"))
        diffs.append(float(a[0] - b[0]))
    diffs = np.array(diffs)
    # Assert: the difference is the family's value plus noise of the calibrated scale σ√2
    assert true_difference in (0.0, 1.0)
    expected_sd = mech.sigma * math.sqrt(2)
    assert diffs.std() == pytest.approx(expected_sd, rel=0.05)
    assert abs(diffs.mean() - true_difference) < 4 * expected_sd / math.sqrt(len(diffs))
    # one pair of answers says next to nothing: P(|noise| < 0.5) — reading the value off it
    assert np.mean(np.abs(diffs - true_difference) < 0.5) < 0.02
    assert mech.sigma > 15  # ε = 1 at δ 2.5e-6 with Δ = √15


def test_a_node_answers_charges_its_analytics_pool_and_refuses_past_the_budget(west_town):
    node = SchoolNode(west_town)
    request = REQUEST.model_copy(update={"epsilon": 0.8, "seed": 1})
    # Execute
    first = answer_query(node, request)
    second = answer_query(node, request.model_copy(update={"query_id": "q2"}))
    # Assert: answered, charged exactly the calibrated spend, training pool untouched
    mech = mechanism_for(request, delta=2.5e-6)
    assert first.status == AnswerStatus.ANSWERED
    assert node.analytics_ledger.history() == [mech.spend]
    assert first.epsilon_spent == pytest.approx(epsilon_of([mech.spend], delta=2.5e-6))
    assert first.epsilon_query == pytest.approx(0.8, abs=1e-3)
    assert node.ledger.history() == []
    assert first.noise_std == pytest.approx(mech.sigma) and first.unavailable == ("app_use",)
    assert set(first.values) <= set(statistic_names(request, node.school_id))
    # the second would take the pool to ε 1.16 (RDP composition) > 1: refused with figures, nothing released or recorded
    assert second.status == AnswerStatus.REFUSED and second.values == {}
    assert "only 0." in second.reason and "of the budget 1.0000" in second.reason
    assert len(node.analytics_ledger.history()) == 1
    refusal = [e for e in node.audit.entries() if e["kind"] == "refusal"][-1]
    assert refusal["data"]["what"] == "analytics" and refusal["data"]["query_id"] == "q2"


def test_a_seed_from_the_district_does_not_let_it_reproduce_the_noise(west_town, tmp_path):
    # Prepare: the district sends seed 5 and knows the mechanism, the query and the code
    request = REQUEST.model_copy(update={"epsilon": 0.3, "seed": 5})
    node = SchoolNode(west_town)
    exact = exact_statistics(
        analytics_frame(node), request, school_id=node.school_id, k=node.policy.min_cohort_k
    )
    # Execute
    answered = answer_query(node, request)
    # Assert: its best guess of the noise (the seed without the school's secret) is wrong
    mech = mechanism_for(request, delta=2.5e-6)
    names = list(exact.values)
    guess = mech.release(
        np.array([exact.values[n] for n in names]),
        generator=noise_generator(seed=5, label=f"q1/{node.school_id}"),
    )
    noisy = np.array([answered.values[n] for n in names])
    exact_vector = np.array([exact.values[n] for n in names])
    assert not np.allclose(noisy, guess)
    assert np.std(noisy - exact_vector) == pytest.approx(mech.sigma, rel=0.35)


def test_the_audit_report_shows_the_analytics_pool(west_town):
    from client_node.audit_report import summarize

    node = SchoolNode(west_town)
    answered = answer_query(node, REQUEST.model_copy(update={"epsilon": 0.5, "seed": 1}))
    periods = summarize(west_town)["periods"][node.policy.period]
    assert periods["analytics"] == {
        "epsilon_spent": pytest.approx(answered.epsilon_spent),
        "epsilon_budget": 1.0,
        "queries": 1,
    }
    assert periods["training"]["rounds"] == 0 and periods["training"]["epsilon_spent"] == 0.0
