"""The district's side: the query schema, combining answers, and interval coverage."""

import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import client_node.analytics as school
from aggregator import analytics
from aggregator.analytics import Query, load_query
from aggregator.errors import QueryError
from client_node.analytics import AnalyticsRequest
from simulations.analytics import coverage_study, exact_answers, exact_result
from simulations.involvement import TRUE_EFFECTS, involvement_district

EXAMPLE = Path(__file__).parents[2] / "queries" / "involvement-effects.yaml"


def test_the_example_query_loads_and_becomes_a_school_request():
    query = load_query(EXAMPLE)
    request = AnalyticsRequest.model_validate(query.request(seed=4))
    assert request.epsilon == 1.0 and request.seed == 4
    assert len(request.strata) == 4 and "volunteering" in request.involvement


def test_district_and_school_name_the_same_involvement_types_and_variables():
    for name in ("InvolvementType", "ContextVariable", "GroupBy", "Outcome"):
        assert typing.get_args(getattr(analytics, name)) == typing.get_args(getattr(school, name))
    assert set(typing.get_args(analytics.InvolvementType)) == set(school.INVOLVEMENT)
    assert set(typing.get_args(analytics.ContextVariable)) == set(school.CONTEXT)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("query_id: q\ntitle: t\nepsilon: 1\neffects: {involvment: [conferences]}\n",
         "effects.involvment = ['conferences']: Extra inputs are not permitted"),
        ("query_id: q\ntitle: t\nepsilon: 1\neffects: {involvement: [phone_calls]}\n",
         "effects.involvement.0 = 'phone_calls': Input should be 'conferences'"),
        ("query_id: q\ntitle: t\nepsilon: -1\ndescribe: [{variables: [income]}]\n",
         "epsilon = -1: Input should be greater than 0"),
        ("query_id: q\ntitle: t\nepsilon: 1\n", "the query asks for nothing"),
        ("- a\n- b\n", "expected a mapping of fields, got list"),
    ],
)  # fmt: skip
def test_a_bad_query_file_is_refused_with_field_and_value(tmp_path, text, message):
    path = tmp_path / "q.yaml"
    path.write_text(text)
    with pytest.raises(QueryError) as info:
        load_query(path)
    assert str(info.value).startswith(f"query file {path}: ")
    assert message in str(info.value)


def test_combining_exact_answers_gives_the_pooled_rates_and_the_standardized_effect():
    # Prepare: two schools, one context split; effects computed here by hand from the rows
    tables = involvement_district(schools=2, families=500, seed=11)
    query = Query(
        query_id="q", title="t", epsilon=1.0,
        effects={"involvement": ["volunteering"], "adjust_for": [{"variable": "income"}]},
    )  # fmt: skip
    request = AnalyticsRequest.model_validate(query.request())
    # Execute
    result = exact_result(query, exact_answers(tables, request, k=10))
    # Assert
    rows = pd.concat(tables.values())
    high, vol, y = rows["TTLHHINC"] >= 0.5, rows["FSVOL"] == 1, rows["at_risk"]
    raw = y[vol].mean() - y[~vol].mean()
    adjusted = sum((h.mean()) * (y[h & vol].mean() - y[h & ~vol].mean()) for h in (high, ~high))
    (effect,) = result.effects
    assert effect["raw"]["value"] == pytest.approx(raw)
    assert effect["adjusted"]["value"] == pytest.approx(adjusted)
    assert effect["adjusted"]["noise_sd"] == 0.0
    r1 = y[vol].mean()
    assert effect["rate_involved"] == pytest.approx(r1)
    sampling = np.sqrt(
        r1 * (1 - r1) / vol.sum() + y[~vol].mean() * (1 - y[~vol].mean()) / (~vol).sum()
    )
    assert effect["raw"]["sampling_sd"] == pytest.approx(sampling)
    assert set(result.per_school["volunteering"]) == set(tables)


@pytest.mark.parametrize("mode", ["local", "secure"])
def test_nhes_intervals_cover_the_noise_free_estimate(nhes_tables, mode):
    """Acceptance (reduced): ε 1 per school, 16 schools, 40 seeded repetitions (the benchmark
    runs 100): each involvement type's interval covers the estimate computed without noise on
    the pooled data in at least 90 % of repetitions — with local noise, and through SecAgg+
    (noise shares σ²/t, t = 11 of 16, with SecAgg+'s quantization)."""
    study = coverage_study(
        load_query(EXAMPLE), nhes_tables, repetitions=40, k=10, delta=2.5e-6, mode=mode
    )
    assert study.reference_ranking[:3] == ["volunteering", "meetings", "newsletters"]
    assert len(study.coverage) == 6  # app_use: no NHES column, reported unavailable
    for kind, shares in study.coverage.items():
        assert shares["adjusted"] >= 0.9, kind
        assert shares["raw"] >= 0.875, kind


@pytest.mark.parametrize("mode", ["local", "secure"])
def test_synthetic_district_intervals_cover_the_true_effects(mode):
    """Acceptance: the generator's true effect lies inside the adjusted interval for at least
    90 % of involvement types (on average over 30 seeded repetitions, and in the first one)."""
    base = load_query(EXAMPLE)
    query = base.model_copy(
        update={"effects": base.effects.model_copy(update={"involvement": tuple(TRUE_EFFECTS)})}
    )
    study = coverage_study(
        query, involvement_district(seed=0), repetitions=30, k=10, delta=2.5e-6,
        truth=TRUE_EFFECTS, mode=mode,
    )  # fmt: skip
    shares = [c["adjusted"] for c in study.coverage.values()]
    assert len(shares) == len(TRUE_EFFECTS)
    assert np.mean(shares) >= 0.9
    first = coverage_study(
        query, involvement_district(seed=0), repetitions=1, k=10, delta=2.5e-6,
        truth=TRUE_EFFECTS, mode=mode,
    )  # fmt: skip
    assert np.mean([c["adjusted"] for c in first.coverage.values()]) >= 0.9


def test_descriptions_by_grade_band_pool_counts_means_and_histograms():
    tables = involvement_district(schools=3, families=400, seed=5)
    query = Query(
        query_id="q", title="t", epsilon=1.0,
        describe=[{"variables": ["at_risk", "income"], "by": "grade_band", "bins": 2}],
    )  # fmt: skip
    request = AnalyticsRequest.model_validate(query.request())
    (described,) = exact_result(query, exact_answers(tables, request, k=10)).describe
    rows = pd.concat(tables.values())
    middle = rows[(rows["ALLGRADEX"] >= 6.5 / 13) & (rows["ALLGRADEX"] < 9.5 / 13)]
    (cell,) = [g for g in described["groups"] if g["group"] == "middle"]
    assert cell["families"] == len(middle)
    assert cell["variables"]["at_risk"]["mean"]["value"] == pytest.approx(middle["at_risk"].mean())
    income = cell["variables"]["income"]
    assert income["mean"]["value"] == pytest.approx(middle["TTLHHINC"].mean())
    low = (middle["TTLHHINC"] < 0.5).sum()
    assert income["histogram"] == {"bin0": low, "bin1": len(middle) - low}


def test_a_type_no_school_has_a_column_for_is_not_available_not_suppressed():
    from aggregator.analytics_report import markdown

    query = load_query(EXAMPLE)
    answers = [
        analytics.SchoolAnswer(s, "answered", "no column for: app_use, homework_help", {})
        for s in ("a", "b")
    ] + [analytics.SchoolAnswer("c", "answered", "no column for: app_use", {})]

    result = analytics.combine(query, answers)

    assert result.unavailable() == {"app_use"}  # homework_help: one school has it
    assert result.as_dict()["unavailable"] == ["app_use"]
    text = markdown(result)
    assert "| – | app_use | not available | not available | – | – |" in text
    assert "| – | homework_help | suppressed | suppressed |" in text
