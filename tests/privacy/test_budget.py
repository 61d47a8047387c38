import math

import pytest

from privacy.budget import Budget
from privacy.errors import InvalidBudget


@pytest.mark.parametrize("epsilon", [-1.0, 0.0, math.nan, math.inf, "three"])
def test_budget_rejects_unusable_epsilon(epsilon):
    with pytest.raises(InvalidBudget, match="ε must be finite and > 0"):
        Budget(epsilon=epsilon, delta=1e-5)


@pytest.mark.parametrize("delta", [0.0, 1.0, -1e-5, math.nan])
def test_budget_rejects_unusable_delta(delta):
    with pytest.raises(InvalidBudget, match=r"δ must be in \(0, 1\)"):
        Budget(epsilon=1.0, delta=delta)


def test_budget_keeps_valid_values():
    budget = Budget(epsilon=3, delta=1e-5)
    assert (budget.epsilon, budget.delta) == (3.0, 1e-5)
    with pytest.raises(AttributeError):
        budget.epsilon = 10  # type: ignore[misc]
