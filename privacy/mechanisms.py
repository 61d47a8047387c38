"""DP mechanisms for released statistics: calibrated Gaussian and Laplace noise.

A Gaussian mechanism of L2 sensitivity Δ and noise standard deviation σ is accounted exactly like
one full-batch DP-SGD step: `Spend(noise_multiplier=σ/Δ, sample_rate=1, steps=1)`, with the
same Opacus RDP accountant as training, so a ledger composes queries and nothing else is needed.
The Laplace mechanism (L1 sensitivity Δ₁, scale b = Δ₁/ε) is pure ε-DP; it is offered for a
single statistic and accounted as ε directly by the caller.

Noise comes from a generator seeded from the operating system's CSPRNG (`secrets`); a fixed
seed is only for simulations and tests, and must be asked for explicitly.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import brentq

from privacy.accountant import Spend, epsilon_of
from privacy.budget import check_delta, check_epsilon
from privacy.errors import InvalidBudget

Mechanism = Literal["gaussian", "laplace"]
# Beyond these noise multipliers a query's answers are noise; below, ε would be meaningless.
_SIGMA_LOW, _SIGMA_HIGH = 0.05, 5000.0


def noise_generator(*, seed: int | None = None, label: str = "") -> np.random.Generator:
    """A numpy generator for DP noise: from `secrets` (the OS CSPRNG) unless `seed` is given.

    `label` separates the streams of several parties sharing one simulation seed.
    """
    if seed is None:
        return np.random.default_rng(secrets.randbits(128))
    digest = hashlib.sha256(f"{seed}/{label}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


@dataclass(frozen=True, slots=True)
class GaussianMechanism:
    """Gaussian noise of standard deviation `sigma` for statistics of L2 sensitivity `l2`."""

    l2_sensitivity: float
    noise_multiplier: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.l2_sensitivity) and self.l2_sensitivity > 0):
            raise InvalidBudget(f"l2_sensitivity: {self.l2_sensitivity!r} must be finite and > 0")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise InvalidBudget(f"noise_multiplier: {self.noise_multiplier!r} must be > 0")

    @property
    def sigma(self) -> float:
        """Standard deviation of the noise on every statistic."""
        return self.noise_multiplier * self.l2_sensitivity

    @property
    def spend(self) -> Spend:
        """What one release costs, for the ledger (one step at sample rate 1)."""
        return Spend(self.noise_multiplier, 1.0, 1)

    def epsilon(self, *, delta: float) -> float:
        return epsilon_of([self.spend], delta=delta)

    def release(self, values: np.ndarray, *, generator: np.random.Generator) -> np.ndarray:
        """`values` plus independent N(0, σ²) noise on each entry."""
        values = np.asarray(values, dtype=float)
        return values + generator.normal(0.0, self.sigma, size=values.shape)


def calibrate_gaussian(
    *,
    l2_sensitivity: float,
    epsilon: float,
    delta: float,
    history: Sequence[Spend] = (),
    tolerance: float = 1e-4,
) -> GaussianMechanism:
    """The least-noise Gaussian mechanism such that `history` plus one release stays ≤ ε at δ.

    With an empty history, the release alone costs (ε, δ) (within `tolerance`, never above).
    Raises InvalidBudget if the history has already spent ε or no usable noise level fits.
    """
    check_epsilon(epsilon)
    check_delta(delta)

    def total(z: float) -> float:
        return epsilon_of([*history, Spend(z, 1.0, 1)], delta=delta)

    if total(_SIGMA_HIGH) > epsilon:
        raise InvalidBudget(
            f"epsilon: {epsilon!r} at delta {delta!r} is too small to release anything"
            f" after ε {epsilon_of(history, delta=delta):.4f} already spent"
        )
    if total(_SIGMA_LOW) <= epsilon:
        return GaussianMechanism(l2_sensitivity, _SIGMA_LOW)
    z = float(brentq(lambda s: total(s) - epsilon, _SIGMA_LOW, _SIGMA_HIGH, xtol=tolerance / 4))
    while total(z) > epsilon:
        z += tolerance
    return GaussianMechanism(l2_sensitivity, z)


@dataclass(frozen=True, slots=True)
class LaplaceMechanism:
    """Laplace noise of scale Δ₁/ε: pure ε-DP for statistics of L1 sensitivity Δ₁."""

    l1_sensitivity: float
    epsilon: float

    def __post_init__(self) -> None:
        check_epsilon(self.epsilon)
        if not (math.isfinite(self.l1_sensitivity) and self.l1_sensitivity > 0):
            raise InvalidBudget(f"l1_sensitivity: {self.l1_sensitivity!r} must be finite and > 0")

    @property
    def scale(self) -> float:
        return self.l1_sensitivity / self.epsilon

    @property
    def sigma(self) -> float:
        """Standard deviation of the noise (√2 · scale)."""
        return math.sqrt(2.0) * self.scale

    def release(self, values: np.ndarray, *, generator: np.random.Generator) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        return values + generator.laplace(0.0, self.scale, size=values.shape)
