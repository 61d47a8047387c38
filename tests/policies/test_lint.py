import dataclasses
from datetime import date

import pytest

from policies.lint import Finding, Severity, exit_status, lint, worst
from policies.loader import default_policy_path, load_policy
from tests.policies.conftest import policy_from

TODAY = date(2026, 9, 1)  # inside the shipped policy's validity (2026-08-01 .. 2027-07-31)

WEARABLES_OFF = "  wearables:\n    enabled: false\n    retention_days: 90\n    consent: explicit\n"
GRADES_PURPOSES = (
    "fields: [student_id, family_id, term, subject, grade]\n"
    "    retention_days: 730\n"
    "    purposes: [early_warning, research]"
)
EVENTS_RETENTION = (
    "    retention_days: 730\n    purposes: [early_warning, research]\n  communications:"
)


def by_rule(findings, rule):
    return [f for f in findings if f.rule == rule]


def test_the_shipped_district_policy_has_no_errors():
    # Prepare
    policy = load_policy(default_policy_path())

    # Execute
    findings = lint(policy, today=TODAY)

    # Assert
    assert [f for f in findings if f.severity is Severity.ERROR] == []
    assert exit_status(findings) in (0, 1)
    assert worst(findings) in (None, Severity.INFO, Severity.WARNING)


# (replacements, severity, rule, field, text the message must contain)
CASES = {
    "epsilon above 10": (
        [("epsilon: 4.0", "epsilon: 12.0")],
        Severity.ERROR, "epsilon-too-high", "budget.epsilon", "ε is 12 per period",
    ),
    "epsilon 1e9": (
        [("epsilon: 4.0", "epsilon: 1.0e9")],
        Severity.ERROR, "epsilon-too-high", "budget.epsilon", "ε is 1e+09 per period",
    ),
    "epsilon above 5": (
        [("epsilon: 4.0", "epsilon: 6.0")],
        Severity.WARNING, "epsilon-high", "budget.epsilon", "ε is 6 per period",
    ),
    "delta 0.5 with 50 families": (
        [("delta: 1.0e-5", "delta: 0.5")],
        Severity.ERROR, "delta-too-high", "budget.delta", "δ is 0.5, not below 1/(families in the smallest school) = 1/50",
    ),
    "delta exactly 1/n": (
        [("delta: 1.0e-5", "delta: 0.02")],
        Severity.ERROR, "delta-too-high", "budget.delta", "δ is 0.02",
    ),
    "k zero": (
        [("min_cohort_k: 10", "min_cohort_k: 0")],
        Severity.ERROR, "k-zero", "min_cohort_k", "min_cohort_k is 0",
    ),
    "k below 10": (
        [("min_cohort_k: 10", "min_cohort_k: 5")],
        Severity.WARNING, "k-low", "min_cohort_k", "min_cohort_k is 5",
    ),
    "enabled category without retention": (
        [(EVENTS_RETENTION, EVENTS_RETENTION.replace("    retention_days: 730\n", ""))],
        Severity.ERROR, "retention-missing", "categories.event_attendance.retention_days",
        "event_attendance is enabled with no retention_days",
    ),
    "disabled category without retention": (
        [(WEARABLES_OFF, WEARABLES_OFF.replace("    retention_days: 90\n", ""))],
        Severity.WARNING, "retention-missing", "categories.wearables.retention_days",
        "wearables is disabled but has no retention_days",
    ),
    "wearables without explicit consent": (
        [(WEARABLES_OFF, "  wearables:\n    enabled: true\n    fields: [family_id, sleep_minutes]\n"
          "    retention_days: 90\n    purposes: [research]\n    consent: none\n")],
        Severity.ERROR, "wearables-without-consent", "categories.wearables.consent",
        "consent 'none'",
    ),
    "sensitive category without purpose": (
        [(GRADES_PURPOSES, GRADES_PURPOSES.replace("[early_warning, research]", "[]"))],
        Severity.ERROR, "sensitive-without-purpose", "categories.grades.purposes",
        "sensitive categories need a stated purpose",
    ),
    "other category without purpose": (
        [(EVENTS_RETENTION, EVENTS_RETENTION.replace("[early_warning, research]", "[]"))],
        Severity.WARNING, "category-without-purpose", "categories.event_attendance.purposes",
        "event_attendance is enabled with no purposes",
    ),
    "enabled category without fields": (
        [("fields: [family_id, event_id, event_type, event_date, event_time, mode, attended]",
          "fields: []")],
        Severity.ERROR, "category-without-fields", "categories.event_attendance.fields",
        "event_attendance is enabled with no fields",
    ),
    "secure aggregation off": (
        [("secure_aggregation_required: true", "secure_aggregation_required: false")],
        Severity.WARNING, "secure-aggregation-off", "secure_aggregation_required",
        "secure_aggregation_required is false",
    ),
    "opt-out off": (
        [("  opt_out: true", "  opt_out: false")],
        Severity.WARNING, "opt-out-off", "consent.opt_out", "consent.opt_out is false",
    ),
    "inspect off": (
        [("  inspect: true", "  inspect: false")],
        Severity.WARNING, "inspect-off", "consent.inspect", "consent.inspect is false",
    ),
    "all budget to training": (
        [("training_share: 0.75", "training_share: 1")],
        Severity.INFO, "training-share-all-one-side", "budget.training_share",
        "training_share is 1, so all of ε and δ goes to training",
    ),
    "all budget to analytics": (
        [("training_share: 0.75", "training_share: 0")],
        Severity.INFO, "training-share-all-one-side", "budget.training_share",
        "training_share is 0, so all of ε and δ goes to analytics",
    ),
    "valid for more than 400 days": (
        [("valid_until: 2027-07-31", "valid_until: 2027-12-31")],
        Severity.WARNING, "validity-too-long", "valid_until", "valid for 517 days",
    ),
    "gradient norm above 10": (
        [("max_grad_norm: 1.0", "max_grad_norm: 12.5")],
        Severity.WARNING, "grad-norm-high", "training.max_grad_norm", "max_grad_norm is 12.5",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_each_rule_fires_with_severity_field_and_value(tmp_path, case):
    # Prepare
    replacements, severity, rule, field, text = CASES[case]
    policy = policy_from(tmp_path, *replacements)

    # Execute
    findings = by_rule(lint(policy, today=TODAY), rule)

    # Assert
    assert len(findings) == 1, findings
    (finding,) = findings
    assert (finding.severity, finding.field) == (severity, field)
    assert text in finding.message
    assert finding.message.endswith(".")


def test_epsilon_above_10_is_an_error_not_also_a_warning(tmp_path):
    findings = lint(policy_from(tmp_path, ("epsilon: 4.0", "epsilon: 1.0e9")), today=TODAY)
    assert [f.rule for f in findings if f.field == "budget.epsilon"] == ["epsilon-too-high"]
    assert exit_status(findings) == 2


@pytest.mark.parametrize(
    ("replacement", "rule"),
    [
        (("epsilon: 4.0", "epsilon: 10.0"), "epsilon-too-high"),  # 10 itself is allowed
        (("epsilon: 4.0", "epsilon: 5.0"), "epsilon-high"),  # 5 itself is not a warning
        (("delta: 1.0e-5", "delta: 0.0199"), "delta-too-high"),  # just below 1/50
        (("min_cohort_k: 10", "min_cohort_k: 10"), "k-low"),
        (("valid_until: 2027-07-31", "valid_until: 2027-09-05"), "validity-too-long"),  # 400 d
        (("max_grad_norm: 1.0", "max_grad_norm: 10.0"), "grad-norm-high"),
        (("training_share: 0.75", "training_share: 0.999"), "training-share-all-one-side"),
    ],
)
def test_thresholds_are_not_crossed_at_the_boundary(tmp_path, replacement, rule):
    assert by_rule(lint(policy_from(tmp_path, replacement), today=TODAY), rule) == []


def test_epsilon_exactly_10_is_only_a_warning(tmp_path):
    findings = lint(policy_from(tmp_path, ("epsilon: 4.0", "epsilon: 10.0")), today=TODAY)
    assert [(f.severity, f.rule) for f in findings] == [(Severity.WARNING, "epsilon-high")]


def test_wearables_with_explicit_consent_and_a_purpose_pass(tmp_path):
    policy = policy_from(
        tmp_path,
        (WEARABLES_OFF, "  wearables:\n    enabled: true\n    fields: [family_id, sleep_minutes]\n"
         "    retention_days: 90\n    purposes: [research]\n    consent: explicit\n"),
    )  # fmt: skip
    assert lint(policy, today=TODAY) == []


def test_enabled_wearables_without_purpose_is_a_sensitive_category_error(tmp_path):
    policy = policy_from(
        tmp_path,
        (WEARABLES_OFF, "  wearables:\n    enabled: true\n    fields: [family_id, sleep_minutes]\n"
         "    retention_days: 90\n    consent: explicit\n"),
    )  # fmt: skip
    (finding,) = lint(policy, today=TODAY)
    assert (finding.severity, finding.rule, finding.field) == (
        Severity.ERROR, "sensitive-without-purpose", "categories.wearables.purposes",
    )  # fmt: skip


def test_an_expired_policy_is_an_error_on_the_day_after_valid_until():
    policy = load_policy(default_policy_path())
    assert by_rule(lint(policy, today=date(2027, 7, 31)), "policy-expired") == []

    (finding,) = lint(policy, today=date(2027, 8, 1))

    assert (finding.severity, finding.rule, finding.field) == (
        Severity.ERROR, "policy-expired", "valid_until",
    )  # fmt: skip
    assert "expired on 2027-07-31 (today is 2027-08-01)" in finding.message
    assert exit_status([finding]) == 2


def test_a_policy_not_yet_in_force_is_info():
    (finding,) = lint(load_policy(default_policy_path()), today=date(2026, 7, 1))
    assert (finding.severity, finding.rule, finding.field) == (
        Severity.INFO, "policy-not-yet-valid", "valid_from",
    )  # fmt: skip
    assert "2026-08-01" in finding.message


def test_findings_come_worst_first_in_field_order(tmp_path):
    policy = policy_from(
        tmp_path,
        ("epsilon: 4.0", "epsilon: 6.0"),
        ("training_share: 0.75", "training_share: 1"),
        ("min_cohort_k: 10", "min_cohort_k: 0"),
        ("secure_aggregation_required: true", "secure_aggregation_required: false"),
        ("  opt_out: true", "  opt_out: false"),
    )

    findings = lint(policy, today=TODAY)

    assert [(f.severity, f.rule) for f in findings] == [
        (Severity.ERROR, "k-zero"),
        (Severity.WARNING, "epsilon-high"),
        (Severity.WARNING, "secure-aggregation-off"),
        (Severity.WARNING, "opt-out-off"),
        (Severity.INFO, "training-share-all-one-side"),
    ]
    assert worst(findings) is Severity.ERROR
    assert str(findings[0]).startswith("error k-zero min_cohort_k: min_cohort_k is 0")


def finding(severity):
    return Finding(severity=severity, rule="r", field="f", message="m.")


def test_severity_order_worst_and_exit_status():
    assert Severity.INFO < Severity.WARNING < Severity.ERROR
    assert worst([]) is None
    assert worst([finding(Severity.INFO), finding(Severity.WARNING)]) is Severity.WARNING
    assert exit_status([]) == 0
    assert exit_status([finding(Severity.INFO)]) == 0
    assert exit_status([finding(Severity.INFO), finding(Severity.WARNING)]) == 1
    assert exit_status([finding(Severity.WARNING), finding(Severity.ERROR)]) == 2
    assert exit_status(iter([finding(Severity.ERROR)])) == 2  # any iterable


def test_a_finding_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding(Severity.INFO).severity = Severity.ERROR  # type: ignore[misc]
