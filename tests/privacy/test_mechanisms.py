import math

import numpy as np
import pytest
from scipy.stats import norm

from privacy.accountant import Spend, epsilon_of
from privacy.errors import InvalidBudget
from privacy.mechanisms import (
    GaussianMechanism,
    LaplaceMechanism,
    calibrate_gaussian,
    noise_generator,
)
from tests.privacy import rdp_reference


def exact_gaussian_delta(*, z: float, epsilon: float) -> float:
    """The exact δ(ε) of the Gaussian mechanism with σ/Δ = z (Balle & Wang 2018, Thm 8)."""
    return norm.cdf(1 / (2 * z) - epsilon * z) - math.exp(epsilon) * norm.cdf(
        -1 / (2 * z) - epsilon * z
    )


@pytest.mark.parametrize(("epsilon", "delta"), [(1.0, 2.5e-6), (0.5, 1e-5), (3.0, 1e-6)])
def test_calibration_meets_the_target_by_an_independent_computation(epsilon, delta):
    mech = calibrate_gaussian(l2_sensitivity=2.0, epsilon=epsilon, delta=delta)
    # the RDP bound from a reference written from the paper, integer orders only (looser)
    reference = rdp_reference.epsilon([(mech.noise_multiplier, 1.0, 1)], delta=delta)
    assert epsilon * 0.97 <= reference <= epsilon * 1.03
    # the exact privacy curve of the Gaussian mechanism: the guarantee holds, not far from tight
    assert exact_gaussian_delta(z=mech.noise_multiplier, epsilon=epsilon) <= delta
    assert exact_gaussian_delta(z=mech.noise_multiplier * 0.8, epsilon=epsilon) > delta
    assert mech.sigma == pytest.approx(2.0 * mech.noise_multiplier)
    assert mech.epsilon(delta=delta) == pytest.approx(epsilon, abs=1e-3)
    assert mech.epsilon(delta=delta) <= epsilon


def test_calibration_accounts_for_what_was_spent():
    history = [Spend(8.0, 1.0, 1)]
    mech = calibrate_gaussian(l2_sensitivity=1.0, epsilon=1.0, delta=2.5e-6, history=history)
    assert epsilon_of([*history, mech.spend], delta=2.5e-6) <= 1.0
    alone = calibrate_gaussian(l2_sensitivity=1.0, epsilon=1.0, delta=2.5e-6)
    assert mech.noise_multiplier > alone.noise_multiplier


def test_calibration_refuses_a_spent_budget():
    with pytest.raises(InvalidBudget, match="too small"):
        calibrate_gaussian(
            l2_sensitivity=1.0, epsilon=0.5, delta=1e-5, history=[Spend(0.5, 1.0, 1)]
        )


def test_noise_has_the_calibrated_spread():
    mech = GaussianMechanism(l2_sensitivity=3.0, noise_multiplier=2.0)
    noisy = mech.release(np.zeros(200_000), generator=noise_generator(seed=1))
    assert noisy.std() == pytest.approx(6.0, rel=0.01)
    lap = LaplaceMechanism(l1_sensitivity=1.0, epsilon=0.5)
    noisy = lap.release(np.zeros(200_000), generator=noise_generator(seed=2))
    assert np.mean(np.abs(noisy)) == pytest.approx(2.0, rel=0.01)
    assert lap.sigma == pytest.approx(2 * math.sqrt(2))


def test_unseeded_generators_differ_and_seeded_ones_repeat():
    a, b = noise_generator(), noise_generator()
    assert a.normal(size=4).tolist() != b.normal(size=4).tolist()
    x = noise_generator(seed=5, label="s1").normal(size=4)
    assert x.tolist() == noise_generator(seed=5, label="s1").normal(size=4).tolist()
    assert x.tolist() != noise_generator(seed=5, label="s2").normal(size=4).tolist()
