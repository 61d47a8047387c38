"""An independent ε computation for the Poisson-subsampled Gaussian mechanism.

Integer-order RDP by the exact binomial expansion (Mironov, Talwar & Zhang 2019, eq. for
integer α), converted to (ε, δ) with the same conversion Opacus uses (Balle et al. 2020).
Written from the paper, sharing no code with privacy/ or Opacus.
"""

from __future__ import annotations

import math


def _log_add(a: float, b: float) -> float:
    hi, lo = max(a, b), min(a, b)
    return hi if lo == -math.inf else hi + math.log1p(math.exp(lo - hi))


def rdp_integer_order(q: float, sigma: float, alpha: int) -> float:
    """RDP of one step at integer order α."""
    if q == 1.0:
        return alpha / (2 * sigma**2)
    log_a = -math.inf
    for k in range(alpha + 1):
        log_term = (
            math.lgamma(alpha + 1)
            - math.lgamma(k + 1)
            - math.lgamma(alpha - k + 1)
            + k * math.log(q)
            + (alpha - k) * math.log(1 - q)
            + (k * k - k) / (2 * sigma**2)
        )
        log_a = _log_add(log_a, log_term)
    return log_a / (alpha - 1)


def epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    best = math.inf
    for alpha in range(2, 257):
        rdp = sum(steps * rdp_integer_order(q, sigma, alpha) for sigma, q, steps in history)
        eps = rdp + math.log1p(-1 / alpha) - (math.log(delta) + math.log(alpha)) / (alpha - 1)
        best = min(best, eps)
    return best
