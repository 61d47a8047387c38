"""The policy linter: judgement calls about a loaded, schema-valid `Policy`, with severities.

The schema (policies/schema.py) refuses what can never work (NaN ε, δ ≥ 1, unknown fields);
the linter flags what works but is unwise or against the district's rules, for example ε above
10 per period or a sensitive category kept without a stated purpose.

    findings = lint(policy, today=date(2026, 9, 1))
    for finding in findings:
        print(finding)                 # "error epsilon-too-high budget.epsilon: ..."
    sys.exit(exit_status(findings))    # 0 clean or info only, 1 warnings, 2 errors

Findings come worst first (errors, then warnings, then info); within a severity they follow
the order of the policy's fields. Each rule has a short stable id (`Finding.rule`) that a CLI
or a CI job can filter on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from enum import IntEnum

from policies.categories import SENSITIVE
from policies.schema import Policy

# Thresholds of the district's rules; messages quote them.
EPSILON_ERROR = 10.0  # ε per school per period above this is an error
EPSILON_WARNING = 5.0  # ... and above this a warning
MIN_K = 10  # statistics about fewer families than this are easy to re-identify
MAX_VALIDITY_DAYS = 400  # a policy is reviewed at least once a school year
MAX_GRAD_NORM = 10.0  # clipping bound above which clipping barely limits a family's influence


class Severity(IntEnum):
    """How bad a finding is. Ordered: INFO < WARNING < ERROR, so `max` gives the worst."""

    INFO = 1
    WARNING = 2
    ERROR = 3

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in a policy: how bad, which rule, which field (dotted path), and why."""

    severity: Severity
    rule: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity} {self.rule} {self.field}: {self.message}"


def lint(policy: Policy, *, today: date | None = None) -> list[Finding]:
    """Check `policy` against the district's rules; worst findings first.

    `today` (default: `date.today()`) decides whether the policy has expired; pass it in tests.
    """
    day = date.today() if today is None else today
    findings = [
        *_budget(policy),
        *_cohort(policy),
        *_categories(policy),
        *_safeguards(policy),
        *_validity(policy, day),
        *_training(policy),
    ]
    return sorted(findings, key=lambda f: -f.severity)  # stable: field order within a severity


def worst(findings: Iterable[Finding]) -> Severity | None:
    """The most severe finding's severity, or None when there are no findings."""
    return max((f.severity for f in findings), default=None)


def exit_status(findings: Iterable[Finding]) -> int:
    """The process exit status for a lint run.

    0: no findings, or only INFO; 1: at least one WARNING and no ERROR; 2: at least one ERROR.
    """
    return {None: 0, Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}[worst(findings)]


def _num(value: float) -> str:
    return f"{value:g}"


def _budget(policy: Policy) -> Iterator[Finding]:
    eps = policy.budget.epsilon
    if eps > EPSILON_ERROR:
        yield Finding(
            Severity.ERROR,
            "epsilon-too-high",
            "budget.epsilon",
            f"ε is {_num(eps)} per period, above the maximum of {_num(EPSILON_ERROR)}; "
            "with so large a budget the released models and statistics no longer hide "
            "whether any one family's data was used.",
        )
    elif eps > EPSILON_WARNING:
        yield Finding(
            Severity.WARNING,
            "epsilon-high",
            "budget.epsilon",
            f"ε is {_num(eps)} per period, above the recommended {_num(EPSILON_WARNING)} "
            f"(at most {_num(EPSILON_ERROR)} is allowed); with it one family's data may make "
            f"any output up to e^{_num(eps)} ≈ {math.exp(eps):,.0f} times more likely.",
        )
    delta, n = policy.budget.delta, policy.min_school_size
    if delta >= 1 / n:
        yield Finding(
            Severity.ERROR,
            "delta-too-high",
            "budget.delta",
            f"δ is {_num(delta)}, not below 1/(families in the smallest school) = 1/{n} = "
            f"{_num(1 / n)}; δ must be far below that, or a mechanism may release one "
            "family's records outright and still meet the guarantee.",
        )
    share = policy.budget.training_share
    if share in (0, 1):
        side = "training" if share == 1 else "analytics"
        other = "analytics" if share == 1 else "training"
        yield Finding(
            Severity.INFO,
            "training-share-all-one-side",
            "budget.training_share",
            f"training_share is {_num(share)}, so all of ε and δ goes to {side} and none to "
            f"{other}; any value strictly between 0 and 1 splits the budget, and every "
            f"{other} request will be refused for lack of budget.",
        )


def _cohort(policy: Policy) -> Iterator[Finding]:
    k = policy.min_cohort_k
    if k == 0:
        yield Finding(
            Severity.ERROR,
            "k-zero",
            "min_cohort_k",
            f"min_cohort_k is 0, so statistics about any number of families (even one) may "
            f"leave a school; set it to at least {MIN_K} so that no released cell describes "
            "a family that could be picked out.",
        )
    elif k < MIN_K:
        yield Finding(
            Severity.WARNING,
            "k-low",
            "min_cohort_k",
            f"min_cohort_k is {k}, below the recommended {MIN_K}; statistics about so few "
            "families are easy to link back to a family even after noise is added.",
        )


def _categories(policy: Policy) -> Iterator[Finding]:
    for name, rule in policy.categories.items():
        where = f"categories.{name}"
        if rule.enabled and not rule.fields:
            yield Finding(
                Severity.ERROR,
                "category-without-fields",
                f"{where}.fields",
                f"category {name} is enabled with no fields (fields: []); list the fields a "
                "node may keep or disable the category, since an enabled category with "
                "nothing allowed is a mistake either way.",
            )
        if rule.retention_days is None:
            if rule.enabled:
                yield Finding(
                    Severity.ERROR,
                    "retention-missing",
                    f"{where}.retention_days",
                    f"category {name} is enabled with no retention_days (none set); a "
                    "number of days from 1 to 3650 is required, since data with no deletion "
                    "date is kept forever.",
                )
            else:
                yield Finding(
                    Severity.WARNING,
                    "retention-missing",
                    f"{where}.retention_days",
                    f"category {name} is disabled but has no retention_days (none set); "
                    "set a number of days from 1 to 3650 so that turning it on later cannot "
                    "keep data forever.",
                )
        if name == "wearables" and rule.enabled and rule.consent != "explicit":
            yield Finding(
                Severity.ERROR,
                "wearables-without-consent",
                f"{where}.consent",
                f"wearables are enabled with consent '{rule.consent}'; only 'explicit' is "
                "allowed, because sleep and activity data about a child may only be kept "
                "with each family's explicit agreement.",
            )
        if rule.enabled and not rule.purposes:
            if name in SENSITIVE:
                yield Finding(
                    Severity.ERROR,
                    "sensitive-without-purpose",
                    f"{where}.purposes",
                    f"sensitive category {name} is enabled with no purposes (purposes: []); "
                    "sensitive categories need a stated purpose from the policy's purposes "
                    f"({', '.join(policy.purposes)}) so families know why it is kept.",
                )
            else:
                yield Finding(
                    Severity.WARNING,
                    "category-without-purpose",
                    f"{where}.purposes",
                    f"category {name} is enabled with no purposes (purposes: []); name at "
                    f"least one of the policy's purposes ({', '.join(policy.purposes)}) so "
                    "the notice for parents can say why it is kept.",
                )


def _safeguards(policy: Policy) -> Iterator[Finding]:
    if not policy.secure_aggregation_required:
        yield Finding(
            Severity.WARNING,
            "secure-aggregation-off",
            "secure_aggregation_required",
            "secure_aggregation_required is false, so the district may see each school's "
            "model update on its own; true is recommended so that it only ever sees their sum.",
        )
    consent = policy.consent
    if not consent.opt_out:
        yield Finding(
            Severity.WARNING,
            "opt-out-off",
            "consent.opt_out",
            "consent.opt_out is false, so families cannot opt out of training, statistics and "
            "scoring; true is recommended because families should be able to say no.",
        )
    for right, what in (("inspect", "see"), ("correct", "correct")):
        if not getattr(consent, right):
            yield Finding(
                Severity.WARNING,
                f"{right}-off",
                f"consent.{right}",
                f"consent.{right} is false, so families cannot {what} the data the school "
                f"holds about them; true is recommended because parents have a right to "
                f"{'inspect' if right == 'inspect' else 'amend'} their child's records.",
            )


def _validity(policy: Policy, today: date) -> Iterator[Finding]:
    days = (policy.valid_until - policy.valid_from).days
    if days > MAX_VALIDITY_DAYS:
        yield Finding(
            Severity.WARNING,
            "validity-too-long",
            "valid_until",
            f"the policy is valid for {days} days ({policy.valid_from} to "
            f"{policy.valid_until}), more than {MAX_VALIDITY_DAYS}; a policy should be "
            "reviewed and re-signed at least once a school year.",
        )
    if policy.valid_until < today:
        yield Finding(
            Severity.ERROR,
            "policy-expired",
            "valid_until",
            f"the policy expired on {policy.valid_until} (today is {today}); nodes refuse an "
            "expired policy, so issue a new version valid from today on.",
        )
    elif today < policy.valid_from:
        yield Finding(
            Severity.INFO,
            "policy-not-yet-valid",
            "valid_from",
            f"the policy takes effect on {policy.valid_from} (today is {today}); until then "
            "nodes refuse to work under it.",
        )


def _training(policy: Policy) -> Iterator[Finding]:
    norm = policy.training.max_grad_norm
    if norm > MAX_GRAD_NORM:
        yield Finding(
            Severity.WARNING,
            "grad-norm-high",
            "training.max_grad_norm",
            f"max_grad_norm is {_num(norm)}, above the recommended {_num(MAX_GRAD_NORM)}; the "
            "noise added for a given ε grows with the clipping bound, so with so loose a "
            "bound the families' gradients drown in it.",
        )
