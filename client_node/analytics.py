"""The school's side of federated analytics: a noisy, k-suppressed answer from its family table.

What a school computes (all from its own families; one row per family, the privacy unit):

- **Involvement effects** — every family falls in exactly one *context stratum* h (the product
  of the query's context splits, e.g. income low/high × parent education low/high). Per stratum
  the school counts families `n` and at-risk families `s`; per involvement type j, the involved
  families `n1` and the involved at-risk families `s1`. These are the sufficient statistics of a
  saturated linear-probability regression of the outcome on stratum × involvement indicators, so
  the district gets raw (involved vs not) and context-adjusted (stratum-standardized) effects
  from the same release.
- **Descriptions** — per group cell (the school itself, or a grade band): the families `n`, the
  sum of each described variable, and a histogram of it over [0, 1].

Sensitivity (add or remove one family): the family falls in one stratum and one cell of each
group, and every value is clipped to [0, 1] (features are scaled to [0, 1] by the table's
definition; indicators are 0/1), so the L2 sensitivity of the whole vector is
√(2 + 2·types + Σ_describe (1 + 2·variables)). One Gaussian mechanism, calibrated to the query's
ε at the policy's analytics δ with the Opacus RDP accountant, covers the whole answer and is
charged once to the school's analytics ledger.

k-suppression: a stratum with fewer than k families is not released; an involvement type whose
involved or not-involved families in a stratum number fewer than k is not released for that
stratum; a description cell or histogram bin with fewer than k families is not released.
Suppression is decided on the true counts, before noise, so no released statistic ever comes
from fewer than k families.

**Secure mode** (the policy requires secure aggregation): the answer is one school's input to
Flower's SecAgg+ sum (federation/analytics_secagg.py), so the district sees only the sum over
schools. The layout differs in one way: per stratum and type the school releases the involved
(n1, s1) *and* the not-involved (n0, s0) counts directly, so each pooled cell sums the same
schools in all four (a school that suppressed the type in a stratum adds zeros to all four)
and the sensitivity is unchanged (a family adds (1, y) to one of the two pairs per type).
Describes by school are pooled into one group, `all-schools`: per-school figures are not
available by design. Every entry of the vector — released or zeroed — gets N(0, σ²/t), σ the
query's calibrated scale and t SecAgg+'s reconstruction threshold (the fewest schools any sum
the district can unmask contains), so every revealed sum carries at least σ²; beside the
values the vector carries a 1 per released entry (how many schools' families are in each pooled
cell), a 1 for the school's noise share, and its count of suppressed cells. A school that
declines (budget, too small) sends zeros with its noise share: noise on nothing costs nothing
and keeps every sum's noise at t shares or more. Trust: module federation/analytics_secagg.py.

Involvement types, context variables and groups map to the table's own columns
(`INVOLVEMENT`, `CONTEXT`, `GROUPS`): the NCES NHES 2019 PFI columns, which the synthetic
involvement district (simulations/involvement.py) uses as well. A type the table has no column
for (e.g. app use in NHES) is reported "not available" by the school.
"""

from __future__ import annotations

import hmac
import itertools
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from client_node.errors import NodeError
from client_node.node import SchoolNode
from client_node.pseudonym import load_or_create_secret
from client_node.table import LABEL, read_table
from privacy.errors import BudgetExceeded, InvalidBudget, PrivacyError
from privacy.mechanisms import GaussianMechanism, calibrate_gaussian, noise_generator

InvolvementType = Literal[
    "conferences",
    "meetings",
    "volunteering",
    "newsletters",
    "teacher_messages",
    "homework_help",
    "school_events",
    "app_use",
]
ContextVariable = Literal["income", "parent_education", "two_parents", "grade_level"]
GroupBy = Literal["school", "grade_band"]
Outcome = Literal["at_risk"]


@dataclass(frozen=True)
class Indicator:
    """A family is involved when any of `columns` that its table has reaches that column's
    threshold (every value scaled to [0, 1])."""

    columns: tuple[tuple[str, float], ...]
    meaning: str


ANY = 1e-9  # an export rate above zero: at least once in the feature window (12 weeks)
# NHES 2019 PFI items (simulations/datasets/nhes.py encodes them; yes = 1.0, no / skip = 0.0)
# and the export family table's features (client_node/features.py: attendance per event type,
# share of school messages opened per content type, app minutes per week).
INVOLVEMENT: dict[str, Indicator] = {
    "conferences": Indicator(
        (("FSATCNFN", 1.0), ("events_conference_rate", ANY)),
        "went to a parent-teacher conference",
    ),
    "meetings": Indicator(
        (
            ("FSMTNG", 1.0),
            ("FSPTMTNG", 1.0),
            ("events_open_house_rate", ANY),
            ("events_pta_meeting_rate", ANY),
        ),
        "attended a general school meeting or a PTO/PTA meeting",
    ),
    "volunteering": Indicator(
        (("FSVOL", 1.0), ("events_volunteering_rate", ANY)), "volunteered at the school"
    ),
    "newsletters": Indicator(
        (("FSMEMO", 1.0), ("opened_content_type_newsletter", 0.5)),
        "received newsletters, memos or notices addressed to all parents (exports: opened at"
        " least half of the school's newsletters)",
    ),
    "teacher_messages": Indicator(
        (("FSNOTESX", 1.0), ("opened_content_type_text", 0.5)),
        "received notes or e-mails about the child from teachers (exports: opened at least half"
        " of the school's text messages and e-mails)",
    ),
    "homework_help": Indicator(
        (("FHHELP", 0.5),), "someone helps with homework on 3 or more of the codebook's 1-5 scale"
    ),
    "school_events": Indicator(
        (("FSSPORTX", 1.0), ("events_performance_rate", ANY), ("events_sports_rate", ANY)),
        "attended a school or class event",
    ),
    "app_use": Indicator((("app_minutes_per_week", ANY),), "used the school app"),
}
# Context variables: scaled columns in [0, 1]; the query splits each at a threshold.
CONTEXT: dict[str, tuple[str, str]] = {
    "income": ("TTLHHINC", "household income category (1-12 scaled)"),
    "parent_education": ("PARGRADEX", "parents' highest education (1-5 scaled)"),
    "two_parents": ("HHPARN19X=1", "two parents in the household"),
    "grade_level": ("ALLGRADEX", "child's grade (K-12 scaled)"),
}
# grade_band from ALLGRADEX (2..15 scaled to [0, 1]): K-5th, 6th-8th, 9th-12th.
GRADE_BANDS = (
    ("elementary", 0.0, 6.5 / 13),
    ("middle", 6.5 / 13, 9.5 / 13),
    ("high", 9.5 / 13, 1.01),
)

STAT_PREFIX = "a/"  # every released statistic's key starts with this
META_KEYS = frozenset(
    {
        "noise-std",
        "noise-multiplier",
        "l2-sensitivity",
        "epsilon-query",
        "epsilon-spent",
        "epsilon-budget",
        "delta",
        "suppressed",
        "epsilon-after",  # a pre-flight reply: ε spent if the query were answered
    }
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ContextSplit(_Frozen):
    variable: ContextVariable
    split_at: float = Field(default=0.5, gt=0, lt=1)


class Describe(_Frozen):
    variables: tuple[InvolvementType | ContextVariable | Outcome, ...] = Field(min_length=1)
    by: GroupBy = "school"
    bins: int = Field(default=4, ge=2, le=20)


class AnalyticsRequest(_Frozen):
    """What the district asks a school to answer (travels as JSON in the query message)."""

    query_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    epsilon: float = Field(gt=0, allow_inf_nan=False)
    outcome: Outcome = "at_risk"
    involvement: tuple[InvolvementType, ...] = ()
    context: tuple[ContextSplit, ...] = ()
    describe: tuple[Describe, ...] = ()
    seed: int | None = None  # simulations and tests only: absent means OS-seeded noise
    # The pre-flight: the school says what the query would cost it and computes nothing else.
    cost_only: bool = False

    @property
    def strata(self) -> list[tuple[int, ...]]:
        """Every stratum as a tuple of 0/1 (below / at or above each context split)."""
        return list(itertools.product((0, 1), repeat=len(self.context)))

    @property
    def l2_sensitivity(self) -> float:
        squared = 0.0
        if self.involvement:
            squared += 2 + 2 * len(self.involvement)
        for d in self.describe:
            squared += 1 + 2 * len(d.variables)
        if squared == 0:
            raise NodeError(f"analytics query {self.query_id}: it asks for nothing")
        return math.sqrt(squared)


def stratum_key(stratum: tuple[int, ...]) -> str:
    return "h" + "".join(str(b) for b in stratum) if stratum else "h"


def group_values(by: GroupBy, school_id: str) -> list[str]:
    return [school_id] if by == "school" else [b[0] for b in GRADE_BANDS]


def statistic_names(request: AnalyticsRequest, school_id: str) -> list[str]:
    """Every statistic a school may release for `request` (the egress allow-list)."""
    names: list[str] = []
    if request.involvement:
        for stratum in request.strata:
            h = f"{STAT_PREFIX}e/{stratum_key(stratum)}"
            names += [f"{h}/n", f"{h}/s"]
            for t in request.involvement:
                names += [f"{h}/{t}/n1", f"{h}/{t}/s1"]
    for i, d in enumerate(request.describe):
        for g in group_values(d.by, school_id):
            cell = f"{STAT_PREFIX}d{i}/{g}"
            names.append(f"{cell}/n")
            for v in d.variables:
                names.append(f"{cell}/{v}/sum")
                names += [f"{cell}/{v}/bin{b}" for b in range(d.bins)]
    return names


def _variable(frame: pd.DataFrame, name: str) -> np.ndarray | None:
    """A described or stratifying variable in [0, 1], or None when the table lacks it."""
    if name == LABEL:
        return frame[LABEL].to_numpy(float).clip(0, 1)
    if name in INVOLVEMENT:
        return involvement_indicator(frame, name)
    column = CONTEXT[name][0]
    return frame[column].to_numpy(float).clip(0, 1) if column in frame.columns else None


def involvement_indicator(frame: pd.DataFrame, kind: str) -> np.ndarray | None:
    present = [(c, t) for c, t in INVOLVEMENT[kind].columns if c in frame.columns]
    if not present:
        return None
    involved = np.zeros(len(frame), dtype=bool)
    for column, threshold in present:
        involved |= frame[column].to_numpy(float).clip(0, 1) >= threshold
    return involved.astype(float)


@dataclass(frozen=True)
class ExactStatistics:
    """A school's statistics before noise: released ones by name, and how many were withheld."""

    values: dict[str, float]
    suppressed: int
    unavailable: tuple[str, ...]  # involvement types or variables the table has no column for


def exact_statistics(
    frame: pd.DataFrame, request: AnalyticsRequest, *, school_id: str, k: int
) -> ExactStatistics:
    """The statistics the school would release, exactly, with k-suppression applied."""
    y = frame[LABEL].to_numpy(float).clip(0, 1)
    values: dict[str, float] = {}
    suppressed = 0
    unavailable: list[str] = []
    if request.involvement:
        bits = []
        for split in request.context:
            x = _variable(frame, split.variable)
            if x is None:
                raise NodeError(
                    f"analytics query {request.query_id}: context variable {split.variable!r}"
                    " has no column in this school's table"
                )
            bits.append((x >= split.split_at).astype(int))
        indicators = {t: involvement_indicator(frame, t) for t in request.involvement}
        unavailable += [t for t, x in indicators.items() if x is None]
        for stratum in request.strata:
            mask = np.ones(len(frame), dtype=bool)
            for b, want in zip(bits, stratum, strict=True):
                mask &= b == want
            h = f"{STAT_PREFIX}e/{stratum_key(stratum)}"
            n = int(mask.sum())
            if n < k:
                suppressed += 2 + 2 * len(request.involvement)
                continue
            values[f"{h}/n"], values[f"{h}/s"] = float(n), float(y[mask].sum())
            for t, x in indicators.items():
                if x is None:
                    continue
                n1 = int(x[mask].sum())
                if n1 < k or n - n1 < k:
                    suppressed += 2
                    continue
                values[f"{h}/{t}/n1"] = float(n1)
                values[f"{h}/{t}/s1"] = float((x[mask] * y[mask]).sum())
    for i, d in enumerate(request.describe):
        if d.by == "school":
            groups = {school_id: np.ones(len(frame), dtype=bool)}
        else:
            grade = _variable(frame, "grade_level")
            if grade is None:
                raise NodeError(
                    f"analytics query {request.query_id}: grade bands need a grade column"
                )
            groups = {name: (grade >= lo) & (grade < hi) for name, lo, hi in GRADE_BANDS}
        for g, mask in groups.items():
            cell = f"{STAT_PREFIX}d{i}/{g}"
            n = int(mask.sum())
            if n < k:
                suppressed += 1 + len(d.variables) * (1 + d.bins)
                continue
            values[f"{cell}/n"] = float(n)
            for v in d.variables:
                x = _variable(frame, v)
                if x is None:
                    unavailable.append(v)
                    continue
                x = x[mask]
                values[f"{cell}/{v}/sum"] = float(x.sum())
                counts = np.bincount(
                    np.minimum((x * d.bins).astype(int), d.bins - 1), minlength=d.bins
                )
                for bin_index, count in enumerate(counts.tolist()):
                    if count < k:
                        suppressed += 1
                        continue
                    values[f"{cell}/{v}/bin{bin_index}"] = float(count)
    return ExactStatistics(values, suppressed, tuple(sorted(set(unavailable))))


def mechanism_for(request: AnalyticsRequest, *, delta: float) -> GaussianMechanism:
    """The Gaussian mechanism that makes the whole answer cost the query's ε at `delta`."""
    try:
        return calibrate_gaussian(
            l2_sensitivity=request.l2_sensitivity, epsilon=request.epsilon, delta=delta
        )
    except InvalidBudget as exc:
        raise NodeError(f"analytics query {request.query_id}: {exc}") from None


class AnswerStatus(StrEnum):
    ANSWERED = "answered"
    REFUSED = "refused"  # the analytics ledger said no
    EXCLUDED = "excluded"  # too few families to take part
    FAILED = "failed"  # the node could not answer (bad request, bad table, bad policy)


@dataclass(frozen=True)
class AnalyticsOutcome:
    """What a school sends back: noisy released statistics and aggregate figures only."""

    school_id: str
    status: AnswerStatus
    reason: str
    values: dict[str, float]
    noise_std: float = 0.0
    noise_multiplier: float = 0.0
    l2_sensitivity: float = 0.0
    epsilon_query: float = 0.0
    epsilon_spent: float = 0.0
    epsilon_budget: float = 0.0
    delta: float = 0.0
    suppressed: int = 0
    unavailable: tuple[str, ...] = ()
    threshold: int = 0  # secure mode: SecAgg+'s reconstruction threshold t (0: local mode)


def analytics_frame(node: SchoolNode) -> pd.DataFrame:
    """All the families the school holds (training and held-out), opted-out ones excluded."""
    frames = []
    for name in (node.config.train_table, node.config.test_table):
        table = node.opt_outs.exclude(read_table(node.dir / name))
        frame = pd.DataFrame(table.features, columns=list(table.feature_names))
        frame[LABEL] = table.labels
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class Cost:
    """What a query costs one school, against its analytics ledger (nothing is charged)."""

    school_id: str
    epsilon_query: float
    spent: float
    after: float
    budget: float
    delta: float

    @property
    def fits(self) -> bool:
        return self.after <= self.budget


def refusal(found: list[Cost]) -> str | None:
    """Why a query must not be sent, given what it costs each school; None if all can pay."""
    over = [c for c in found if not c.fits]
    if not over:
        return None
    c = over[0]
    return (
        f"query refused before anything was sent: {len(over)} of {len(found)} schools would "
        f"exceed their analytics budget; {c.school_id} needs ε {c.epsilon_query:.4f} but has "
        f"{max(0.0, c.budget - c.spent):.4f} of {c.budget:.4f} left (spent {c.spent:.4f}; "
        f"after the query {c.after:.4f})"
    )


def cost_of(node: SchoolNode, request: AnalyticsRequest) -> Cost:
    """What `request` would cost the school in `node`, from its own policy and ledger."""
    budget = node.policy.analytics_budget
    mech = mechanism_for(request, delta=budget.delta)
    spent, after = node.analytics_ledger.after(mech.spend)
    return Cost(
        node.school_id, mech.epsilon(delta=budget.delta), spent, after, budget.epsilon, budget.delta
    )


def _audit_refusal(
    node: SchoolNode, request: AnalyticsRequest, status: AnswerStatus, reason: str
) -> None:
    node.audit.append(
        "refusal",
        what="analytics",
        status=str(status),
        reason=reason,
        query_id=request.query_id,
        policy_id=node.policy.policy_id,
        policy_version=node.policy.version,
    )


def answer_query(node: SchoolNode, request: AnalyticsRequest) -> AnalyticsOutcome:
    """Answer `request` under the node's policy and analytics ledger, or say why not.

    The spend is checked and recorded before any statistic is computed; a refused query
    releases nothing.
    """
    policy, ledger = node.policy, node.analytics_ledger
    budget = policy.analytics_budget

    def outcome(status: AnswerStatus, reason: str, **kw: object) -> AnalyticsOutcome:
        if status != AnswerStatus.ANSWERED:
            _audit_refusal(node, request, status, reason)
        return AnalyticsOutcome(
            school_id=node.school_id,
            status=status,
            reason=reason,
            epsilon_spent=ledger.spent(),
            epsilon_budget=budget.epsilon,
            delta=budget.delta,
            **kw,  # type: ignore[arg-type]
        )

    frame = analytics_frame(node)
    if len(frame) < policy.min_school_size:
        return outcome(
            AnswerStatus.EXCLUDED,
            f"{len(frame)} families is below the policy's minimum school size"
            f" {policy.min_school_size}",
            values={},
        )
    mech = mechanism_for(request, delta=budget.delta)
    # computed first (nothing leaves yet), so a request the table cannot answer costs nothing
    exact = exact_statistics(frame, request, school_id=node.school_id, k=policy.min_cohort_k)
    try:
        ledger.charge(mech.spend, run_id=request.query_id, round=1)
    except BudgetExceeded as exc:
        return outcome(AnswerStatus.REFUSED, str(exc), values={})
    names = list(exact.values)
    label = _noise_label(node, request, f"{request.query_id}/{node.school_id}")
    generator = noise_generator(seed=request.seed, label=label)
    noisy = mech.release(np.array([exact.values[n] for n in names]), generator=generator)
    return outcome(
        AnswerStatus.ANSWERED,
        "",
        values=dict(zip(names, (float(v) for v in noisy), strict=True)),
        noise_std=mech.sigma,
        noise_multiplier=mech.noise_multiplier,
        l2_sensitivity=mech.l2_sensitivity,
        epsilon_query=mech.epsilon(delta=budget.delta),
        suppressed=exact.suppressed,
        unavailable=exact.unavailable,
    )


# --- secure mode: the school's input to a SecAgg+ sum ------------------------------------------

POOLED_GROUP = "all-schools"  # a describe `by: school` in secure mode: one pooled group


def secure_statistic_names(request: AnalyticsRequest) -> list[str]:
    """The entries of a secure-mode answer, in vector order (the same for every school)."""
    names: list[str] = []
    if request.involvement:
        for stratum in request.strata:
            h = f"{STAT_PREFIX}e/{stratum_key(stratum)}"
            names += [f"{h}/n", f"{h}/s"]
            for t in request.involvement:
                names += [f"{h}/{t}/n1", f"{h}/{t}/s1", f"{h}/{t}/n0", f"{h}/{t}/s0"]
    for i, d in enumerate(request.describe):
        groups = [POOLED_GROUP] if d.by == "school" else [b[0] for b in GRADE_BANDS]
        for g in groups:
            cell = f"{STAT_PREFIX}d{i}/{g}"
            names.append(f"{cell}/n")
            for v in d.variables:
                names.append(f"{cell}/{v}/sum")
                names += [f"{cell}/{v}/bin{b}" for b in range(d.bins)]
    return names


def secure_values(
    exact: ExactStatistics, request: AnalyticsRequest, *, school_id: str
) -> dict[str, float]:
    """The released (k-suppressed) statistics in the secure layout: n0 = n − n1, s0 = s − s1
    per released type cell, and by-school describe cells renamed to the pooled group."""
    v, out = exact.values, {}
    for stratum in request.strata if request.involvement else []:
        h = f"{STAT_PREFIX}e/{stratum_key(stratum)}"
        if f"{h}/n" not in v:
            continue
        n, s = v[f"{h}/n"], v[f"{h}/s"]
        out[f"{h}/n"], out[f"{h}/s"] = n, s
        for t in request.involvement:
            if f"{h}/{t}/n1" in v:
                n1, s1 = v[f"{h}/{t}/n1"], v[f"{h}/{t}/s1"]
                out[f"{h}/{t}/n1"], out[f"{h}/{t}/s1"] = n1, s1
                out[f"{h}/{t}/n0"], out[f"{h}/{t}/s0"] = n - n1, s - s1
    for i, d in enumerate(request.describe):
        prefix = f"{STAT_PREFIX}d{i}/"
        own = f"{prefix}{school_id}/"
        for key, value in v.items():
            if key.startswith(prefix):
                out[prefix + POOLED_GROUP + "/" + key[len(own) :] if d.by == "school" else key] = (
                    value
                )
    return out


@dataclass(frozen=True)
class SecureShare:
    """One school's input to the SecAgg+ sum, before SecAgg+ scales, quantizes and masks it."""

    values: np.ndarray  # per secure name: the released value (0 if not) + N(0, σ²/t)
    released: np.ndarray  # per secure name: 1 where the school released the entry
    suppressed: int  # cells the school withheld (k)


def secure_share(
    released: dict[str, float],
    names: list[str],
    *,
    noise_std: float,
    generator: np.random.Generator,
    suppressed: int = 0,
) -> SecureShare:
    """Zeros where nothing is released, then noise of `noise_std` (= σ/√t) on every entry."""
    exact = np.array([released.get(n, 0.0) for n in names], dtype=np.float64)
    flags = np.array([1.0 if n in released else 0.0 for n in names])
    return SecureShare(exact + generator.normal(0.0, noise_std, len(names)), flags, suppressed)


def secure_noise_std(mech: GaussianMechanism, threshold: int) -> float:
    """Each school's share of the noise: variance σ²/t, so t shares or more carry σ²."""
    if threshold < 2:
        raise NodeError(f"secure analytics: reconstruction threshold {threshold} is below 2")
    return mech.sigma / math.sqrt(threshold)


def _noise_label(node: SchoolNode, request: AnalyticsRequest, label: str) -> str:
    if request.seed is None:
        return label
    # A seed from the district makes a simulation repeatable but never predictable to the
    # district: it is mixed with the school's own secret (HMAC), so whoever chose the seed
    # still cannot reproduce the noise and subtract it.
    secret = load_or_create_secret(node.dir)
    return hmac.new(
        secret, f"analytics-noise:{request.seed}/{label}".encode(), "sha256"
    ).hexdigest()


def answer_secure(
    node: SchoolNode, request: AnalyticsRequest, *, threshold: int, value_bound: float
) -> tuple[AnalyticsOutcome, SecureShare]:
    """The school's SecAgg+ input for `request`: (its plain status, its share).

    `threshold` is t, read by the caller from SecAgg+'s own protocol state (never from the
    district's request). A school that cannot take part (too small, above the run's value bound,
    budget spent, a table that cannot answer) still returns a share — zeros plus its noise
    share, uncharged — so the sum keeps t noise shares or more. A request or policy so broken
    that σ cannot be computed raises NodeError: the school drops out of the round instead.
    """
    policy, ledger = node.policy, node.analytics_ledger
    budget = policy.analytics_budget
    mech = mechanism_for(request, delta=budget.delta)
    share_std = secure_noise_std(mech, threshold)
    names = secure_statistic_names(request)
    label = _noise_label(node, request, f"{request.query_id}/{node.school_id}/secure")
    generator = noise_generator(seed=request.seed, label=label)

    def declined(status: AnswerStatus, reason: str) -> tuple[AnalyticsOutcome, SecureShare]:
        _audit_refusal(node, request, status, reason)
        outcome = AnalyticsOutcome(
            school_id=node.school_id,
            status=status,
            reason=reason,
            values={},
            noise_std=share_std,
            epsilon_spent=ledger.spent(),
            epsilon_budget=budget.epsilon,
            delta=budget.delta,
            threshold=threshold,
        )
        return outcome, secure_share({}, names, noise_std=share_std, generator=generator)

    try:
        frame = analytics_frame(node)
    except NodeError as exc:
        return declined(AnswerStatus.FAILED, str(exc))
    if len(frame) < policy.min_school_size:
        return declined(
            AnswerStatus.EXCLUDED,
            f"{len(frame)} families is below the policy's minimum school size"
            f" {policy.min_school_size}",
        )
    if len(frame) + 10 * share_std > value_bound:
        return declined(
            AnswerStatus.EXCLUDED,
            f"{len(frame)} families (plus the noise's tail) is above the run's secure-aggregation"
            f" value bound {value_bound:g}; the district must raise it",
        )
    try:
        exact = exact_statistics(frame, request, school_id=node.school_id, k=policy.min_cohort_k)
    except NodeError as exc:
        return declined(AnswerStatus.FAILED, str(exc))
    try:
        ledger.charge(mech.spend, run_id=request.query_id, round=1)
    except BudgetExceeded as exc:
        return declined(AnswerStatus.REFUSED, str(exc))
    except PrivacyError as exc:  # e.g. this query id was charged already
        return declined(AnswerStatus.FAILED, str(exc))
    share = secure_share(
        secure_values(exact, request, school_id=node.school_id),
        names,
        noise_std=share_std,
        generator=generator,
        suppressed=exact.suppressed,
    )
    outcome = AnalyticsOutcome(
        school_id=node.school_id,
        status=AnswerStatus.ANSWERED,
        reason="",
        values={},
        noise_std=share_std,
        noise_multiplier=mech.noise_multiplier,
        l2_sensitivity=mech.l2_sensitivity,
        epsilon_query=mech.epsilon(delta=budget.delta),
        epsilon_spent=ledger.spent(),
        epsilon_budget=budget.epsilon,
        delta=budget.delta,
        unavailable=exact.unavailable,
        threshold=threshold,
    )
    return outcome, share
