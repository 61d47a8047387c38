"""The policy schema (version 1): every field a privacy officer sets, and nothing else.

Frozen pydantic models with extra="forbid": a misspelled key is an error, never a default. Hard
facts (types, ranges, known names) are checked here; judgement calls with severities (ε above
10, k below 10, a category without retention, ...) are the linter's job (policies/lint.py).
"""

from __future__ import annotations

import math
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policies.categories import DIRECT_IDENTIFIERS, FIELDS, CategoryName
from privacy.budget import Budget

SCHEMA_VERSION = 1
Role = Literal["staff", "it", "parents"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Issuer(_Frozen):
    """Who issued the policy and whom families contact."""

    organisation: str = Field(min_length=1)
    privacy_officer: str = Field(min_length=1)
    contact_email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    contact_phone: str | None = None


class CategoryRule(_Frozen):
    """What a node may keep of one data category, for what, and for how long."""

    enabled: bool
    fields: tuple[str, ...] = ()
    retention_days: int | None = Field(default=None, ge=1, le=3650)
    purposes: tuple[str, ...] = ()
    consent: Literal["none", "explicit"] = "none"


class PrivacyBudget(_Frozen):
    """The (ε, δ) each school may spend per period, split between training and analytics."""

    epsilon: float = Field(description="ε per school per period")
    delta: float = Field(description="δ per school per period")
    training_share: float = Field(ge=0, le=1, description="share of ε and δ for training")

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


class Consent(_Frozen):
    """Families' rights over their data at the node."""

    opt_out: bool = Field(description="families may opt out of training, analytics and scoring")
    opt_out_takes_effect: Literal["next_round"] = "next_round"
    inspect: bool = True
    correct: bool = True


class Access(_Frozen):
    """Who may read what at the node."""

    staff: tuple[str, ...] = ()
    it: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()


class TrainingRules(_Frozen):
    """What federated training may do at a school."""

    max_rounds_per_run: int = Field(ge=1, le=1000, description="rounds one run may ask for")
    max_grad_norm: float = Field(gt=0, le=100, description="per-family gradient clipping bound")


class Policy(_Frozen):
    """A district policy, or a school's (stricter) version of it."""

    schema_version: Literal[1] = 1
    policy_id: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    version: int = Field(ge=1)
    title: str = Field(min_length=1)
    issued_by: Issuer
    valid_from: date
    valid_until: date
    period: str = Field(min_length=1, description="the budget period, e.g. 2026-2027")
    privacy_unit: Literal["family"] = "family"
    purposes: dict[str, str] = Field(min_length=1, description="purpose id -> plain description")
    categories: dict[CategoryName, CategoryRule]
    budget: PrivacyBudget
    min_cohort_k: int = Field(ge=0, description="fewest families in any released statistic")
    secure_aggregation_required: bool
    min_school_size: int = Field(ge=1, description="fewest families a school needs to take part")
    consent: Consent
    access: Access
    training: TrainingRules

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        if self.valid_until < self.valid_from:
            raise ValueError(
                f"valid_until {self.valid_until} is before valid_from {self.valid_from}"
            )
        for name, rule in self.categories.items():
            allowed = FIELDS[name]
            for field in rule.fields:
                if field.lower() in DIRECT_IDENTIFIERS:
                    raise ValueError(
                        f"categories.{name}.fields: {field!r} is a direct identifier; "
                        "names, e-mails, phones and addresses are never stored"
                    )
                if field not in allowed:
                    raise ValueError(
                        f"categories.{name}.fields: {field!r} is not a field of {name}; "
                        f"allowed: {', '.join(allowed)}"
                    )
            for purpose in rule.purposes:
                if purpose not in self.purposes:
                    raise ValueError(
                        f"categories.{name}.purposes: {purpose!r} is not one of the policy's "
                        f"purposes ({', '.join(self.purposes)})"
                    )
        return self

    @property
    def training_budget(self) -> Budget:
        share = self.budget.training_share
        return Budget(epsilon=self.budget.epsilon * share, delta=self.budget.delta * share)

    @property
    def analytics_budget(self) -> Budget:
        share = 1 - self.budget.training_share
        return Budget(epsilon=self.budget.epsilon * share, delta=self.budget.delta * share)

    def is_valid_on(self, day: date) -> bool:
        return self.valid_from <= day <= self.valid_until
