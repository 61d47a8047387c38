"""An analytics query that no school answered writes no report and says why."""

import pytest

from aggregator.analytics import SchoolAnswer
from simulations.analytics import QueryFailed, _some_answered


def test_no_answer_is_an_error_with_the_first_reason():
    answers = [
        SchoolAnswer("west-town", "refused", "analytics budget: requested ε 1.0, remains 0.0", {}),
        SchoolAnswer("east-rural", "excluded", "12 families is below the minimum 50", {}),
    ]
    with pytest.raises(QueryFailed) as info:
        _some_answered("q-1", answers)
    assert str(info.value) == (
        "query q-1: no school answered (2 replied), so there is no report; "
        "east-rural excluded: 12 families is below the minimum 50"
    )


def test_one_answer_is_enough():
    _some_answered("q-1", [SchoolAnswer("west-town", "answered", "", {"a/e/h/n": 3.0})])
