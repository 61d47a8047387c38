"""ε for a history of DP-SGD steps, and the noise multiplier that fits a remaining budget.

Both use Opacus' RDP analysis, so the figures match what Opacus itself would report.
A history is a list of `Spend(noise_multiplier, sample_rate, steps)`: the Poisson-subsampled
Gaussian mechanism applied `steps` times. Different entries compose under RDP, which is tighter
than adding their ε values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis
from scipy.optimize import brentq

from privacy.errors import BudgetExceeded, InvalidBudget

# Beyond this noise multiplier a round teaches a model next to nothing (the noise on a batch's
# mean gradient passes the clipping bound itself for batches under 10 families): refuse rather
# than spend the last scraps of a budget on noise.
MAX_USEFUL_NOISE_MULTIPLIER = 10.0
# Opacus' default RDP orders plus a few higher ones, which large noise multipliers need.
ALPHAS = (*RDPAccountant.DEFAULT_ALPHAS, 64, 80, 96, 128, 160, 192, 256)


@dataclass(frozen=True, slots=True)
class Spend:
    """One application of DP-SGD: `steps` Poisson-sampled steps at rate q with noise σ."""

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise InvalidBudget(
                f"noise_multiplier: {self.noise_multiplier!r} is not allowed; it must be > 0"
            )
        if not (0 < self.sample_rate <= 1):
            raise InvalidBudget(f"sample_rate: {self.sample_rate!r} is not in (0, 1]")
        if self.steps < 0:
            raise InvalidBudget(f"steps: {self.steps!r} is negative")


@lru_cache(maxsize=4096)
def _rdp_per_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    """RDP of one Poisson-subsampled Gaussian step at every order in ALPHAS (Opacus' analysis)."""
    return np.asarray(
        rdp_analysis.compute_rdp(
            q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(ALPHAS)
        )
    )


def epsilon_of(history: Sequence[Spend], *, delta: float) -> float:
    """The ε that `history` has spent at δ (0.0 for an empty history).

    Exactly what Opacus' RDPAccountant.get_epsilon computes for this history (RDP adds up over
    steps and entries), with per-step RDP vectors cached because ledgers repeat them.
    """
    entries = [s for s in history if s.steps > 0]
    if not entries:
        return 0.0
    rdp = sum(s.steps * _rdp_per_step(s.noise_multiplier, s.sample_rate) for s in entries)
    with warnings.catch_warnings():
        # "Optimal order is the largest/smallest alpha": the bound is valid, only less tight.
        warnings.filterwarnings("ignore", message="Optimal order is the")
        eps, _ = rdp_analysis.get_privacy_spent(orders=list(ALPHAS), rdp=rdp, delta=delta)
    return float(eps)


def calibrate_noise_multiplier(
    *,
    history: Sequence[Spend],
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    tolerance: float = 1e-3,
) -> float:
    """Smallest σ (within `tolerance`) such that history + `steps` more steps stays ≤ target ε.

    Unlike `opacus...get_noise_multiplier`, this accounts for what the ledger has already spent.
    Raises BudgetExceeded when even σ = MAX_USEFUL_NOISE_MULTIPLIER would pass the target.
    """
    spent = epsilon_of(history, delta=delta)

    def total(sigma: float) -> float:
        return epsilon_of([*history, Spend(sigma, sample_rate, steps)], delta=delta)

    high = MAX_USEFUL_NOISE_MULTIPLIER
    if spent >= target_epsilon or total(high) > target_epsilon:
        raise BudgetExceeded(
            requested=total(high) - spent,
            spent=spent,
            budget=target_epsilon,
            what=f"training ({steps} steps at sample rate {sample_rate:.4f})",
        )
    low = 0.1
    if total(low) <= target_epsilon:
        return low
    root = brentq(lambda sigma: total(sigma) - target_epsilon, low, high, xtol=tolerance / 2)
    # brentq brackets the crossing; step up until the returned σ is on the safe side.
    sigma = float(root)
    while total(sigma) > target_epsilon:
        sigma += tolerance
    return sigma
