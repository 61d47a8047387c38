"""The `Budget` value object: an (ε, δ) guarantee that cannot be NaN, negative or meaningless."""

from __future__ import annotations

import math
from dataclasses import dataclass

from privacy.errors import InvalidBudget


def check_epsilon(value: float, *, where: str = "epsilon") -> float:
    """Return `value` as a float if it is a usable ε (finite, > 0); raise InvalidBudget otherwise."""
    try:
        eps = float(value)
    except (TypeError, ValueError):
        raise InvalidBudget(
            f"{where}: {value!r} is not a number; ε must be finite and > 0"
        ) from None
    if not math.isfinite(eps) or eps <= 0:
        raise InvalidBudget(f"{where}: {value!r} is not allowed; ε must be finite and > 0")
    return eps


def check_delta(value: float, *, where: str = "delta") -> float:
    """Return `value` as a float if it is a usable δ (0 < δ < 1); raise InvalidBudget otherwise."""
    try:
        delta = float(value)
    except (TypeError, ValueError):
        raise InvalidBudget(f"{where}: {value!r} is not a number; δ must be in (0, 1)") from None
    if not math.isfinite(delta) or not 0 < delta < 1:
        raise InvalidBudget(f"{where}: {value!r} is not allowed; δ must be in (0, 1)")
    return delta


@dataclass(frozen=True, slots=True)
class Budget:
    """A differential-privacy guarantee (ε, δ) for one privacy unit (a family)."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", check_epsilon(self.epsilon))
        object.__setattr__(self, "delta", check_delta(self.delta))
