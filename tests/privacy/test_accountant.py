import pytest
from opacus.accountants import RDPAccountant

from privacy.accountant import Spend, calibrate_noise_multiplier, epsilon_of
from privacy.errors import BudgetExceeded
from tests.privacy import rdp_reference


def test_epsilon_matches_opacus_accountant():
    history = [Spend(1.2, 1 / 12, 24), Spend(2.0, 0.05, 100)]
    accountant = RDPAccountant()
    accountant.history = [(s.noise_multiplier, s.sample_rate, s.steps) for s in history]
    assert epsilon_of(history, delta=1e-5) == pytest.approx(
        accountant.get_epsilon(delta=1e-5), rel=1e-9
    )


def test_epsilon_agrees_with_independent_reference():
    # Integer orders only give a slightly looser bound: the two agree within 3 %.
    history = [(1.457, 1 / 17, 170)]
    ours = epsilon_of([Spend(*history[0])], delta=1e-5)
    reference = rdp_reference.epsilon(history, delta=1e-5)
    assert ours <= reference * 1.0001
    assert ours == pytest.approx(reference, rel=0.03)


def test_empty_history_spends_nothing():
    assert epsilon_of([], delta=1e-5) == 0.0


def test_calibration_lands_just_under_the_target():
    sigma = calibrate_noise_multiplier(
        history=[], target_epsilon=3.0, delta=1e-5, sample_rate=0.1, steps=100
    )
    spent = epsilon_of([Spend(sigma, 0.1, 100)], delta=1e-5)
    assert spent <= 3.0
    assert spent > 2.98
    assert epsilon_of([Spend(sigma - 0.01, 0.1, 100)], delta=1e-5) > 3.0 - 1e-3


def test_calibration_accounts_for_history():
    history = [Spend(1.5, 0.1, 100)]
    already = epsilon_of(history, delta=1e-5)
    sigma = calibrate_noise_multiplier(
        history=history, target_epsilon=already + 1.0, delta=1e-5, sample_rate=0.1, steps=100
    )
    total = epsilon_of([*history, Spend(sigma, 0.1, 100)], delta=1e-5)
    assert already + 0.98 < total <= already + 1.0


def test_calibration_refuses_when_nothing_useful_remains():
    history = [Spend(1.0, 0.1, 200)]
    spent = epsilon_of(history, delta=1e-5)
    with pytest.raises(BudgetExceeded) as info:
        calibrate_noise_multiplier(
            history=history, target_epsilon=spent + 1e-6, delta=1e-5, sample_rate=0.5, steps=100
        )
    assert info.value.budget == pytest.approx(spent + 1e-6)
    assert "remains" in str(info.value)
