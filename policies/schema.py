"""The policy schema: every field a privacy officer sets, and nothing else (extra="forbid")."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from privacy.budget import Budget


class TrainingRules(BaseModel):
    """What federated training may do at a school."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_rounds_per_run: int = Field(ge=1, le=1000, description="rounds one run may ask for")
    max_grad_norm: float = Field(gt=0, le=100, description="per-family gradient clipping bound")


class Policy(BaseModel):
    """A district (or school) privacy policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy_id: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    version: int = Field(ge=1)
    period: str = Field(min_length=1, description="the budget period, e.g. school year 2026-2027")
    privacy_unit: Literal["family"] = "family"
    epsilon: float = Field(description="ε budget per school per period")
    delta: float = Field(description="δ per school per period")
    min_school_size: int = Field(ge=1, description="fewest families a school needs to take part")
    training: TrainingRules

    @field_validator("epsilon")
    @classmethod
    def _epsilon_usable(cls, value: float) -> float:
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{value!r} is not allowed; ε must be finite and > 0")
        return value

    @field_validator("delta")
    @classmethod
    def _delta_usable(cls, value: float) -> float:
        if not math.isfinite(value) or not 0 < value < 1:
            raise ValueError(f"{value!r} is not allowed; δ must be in (0, 1)")
        return value

    @property
    def budget(self) -> Budget:
        return Budget(epsilon=self.epsilon, delta=self.delta)
