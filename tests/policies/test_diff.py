import dataclasses
from datetime import date

import pytest

from policies.diff import Change, diff, is_classified, looser, render_diff
from policies.schema import Policy
from tests.policies.conftest import policy_from

COMMS_FIELDS = "fields: [family_id, channel, content_type, direction, sent_at, opened_at, clicked_at, replied_at]"
COMMS_RETENTION = "    retention_days: 365\n    purposes: [early_warning, outreach, research]"
GRADES_PURPOSES = "fields: [student_id, family_id, term, subject, grade]\n    retention_days: 730\n    purposes: [early_warning, research]"


def test_no_changes(district):
    assert diff(district, district) == []
    assert render_diff([]) == "No changes."


# (replacement, field, old, new, privacy_relevant, direction, message)
CASES = {
    "epsilon raised": (
        ("epsilon: 4.0", "epsilon: 6.0"),
        "budget.epsilon", 4.0, 6.0, True, "looser", "ε budget raised from 4 to 6 (looser)",
    ),
    "delta lowered": (
        ("delta: 1.0e-5", "delta: 1.0e-6"),
        "budget.delta", 1e-5, 1e-6, True, "stricter", "δ budget lowered from 1e-05 to 1e-06 (stricter)",
    ),
    "training share": (
        ("training_share: 0.75", "training_share: 0.5"),
        "budget.training_share", 0.75, 0.5, True, "neutral",
        "training share of the budget changed from 0.75 to 0.5 (neutral)",
    ),
    "category disabled": (
        ("  platform_activity:\n    enabled: true", "  platform_activity:\n    enabled: false"),
        "categories.platform_activity.enabled", True, False, True, "stricter",
        "category platform_activity disabled (stricter)",
    ),
    "category enabled": (
        ("  wearables:\n    enabled: false", "  wearables:\n    enabled: true"),
        "categories.wearables.enabled", False, True, True, "looser",
        "category wearables enabled (looser)",
    ),
    "field removed": (
        (COMMS_FIELDS, COMMS_FIELDS.replace(" clicked_at,", "")),
        "categories.communications.fields",
        ("family_id", "channel", "content_type", "direction", "sent_at", "opened_at", "clicked_at", "replied_at"),
        ("family_id", "channel", "content_type", "direction", "sent_at", "opened_at", "replied_at"),
        True, "stricter", "fields of communications: clicked_at removed (stricter)",
    ),
    "field added": (
        ("    consent: explicit", "    fields: [family_id, sleep_minutes]\n    consent: explicit"),
        "categories.wearables.fields", (), ("family_id", "sleep_minutes"), True, "looser",
        "fields of wearables: family_id, sleep_minutes added (looser)",
    ),
    "retention longer": (
        (COMMS_RETENTION, COMMS_RETENTION.replace("365", "400")),
        "categories.communications.retention_days", 365, 400, True, "looser",
        "retention of communications raised from 365 days to 400 days (looser)",
    ),
    "retention removed": (
        (COMMS_RETENTION, COMMS_RETENTION.replace("    retention_days: 365\n", "")),
        "categories.communications.retention_days", 365, None, True, "looser",
        "retention of communications raised from 365 days to no limit (looser)",
    ),
    "purpose added": (
        (GRADES_PURPOSES, GRADES_PURPOSES.replace("[early_warning, research]", "[early_warning, outreach, research]")),
        "categories.grades.purposes", ("early_warning", "research"),
        ("early_warning", "outreach", "research"), True, "looser",
        "purposes of grades: outreach added (looser)",
    ),
    "category consent weakened": (
        ("    consent: explicit", "    consent: none"),
        "categories.wearables.consent", "explicit", "none", True, "looser",
        "consent for wearables changed from explicit to none (looser)",
    ),
    "opt-out off": (
        ("  opt_out: true", "  opt_out: false"),
        "consent.opt_out", True, False, True, "looser",
        "families' right to opt out turned off (looser)",
    ),
    "k lowered": (
        ("min_cohort_k: 10", "min_cohort_k: 5"),
        "min_cohort_k", 10, 5, True, "looser", "minimum cohort k lowered from 10 to 5 (looser)",
    ),
    "secure aggregation off": (
        ("secure_aggregation_required: true", "secure_aggregation_required: false"),
        "secure_aggregation_required", True, False, True, "looser",
        "secure aggregation turned off (looser)",
    ),
    "school size raised": (
        ("min_school_size: 50", "min_school_size: 80"),
        "min_school_size", 50, 80, True, "stricter",
        "minimum school size raised from 50 families to 80 families (stricter)",
    ),
    "validity extended": (
        ("valid_until: 2027-07-31", "valid_until: 2027-08-31"),
        "valid_until", date(2027, 7, 31), date(2027, 8, 31), True, "looser",
        "end of validity moved later from 2027-07-31 to 2027-08-31 (looser)",
    ),
    "validity starts earlier": (
        ("valid_from: 2026-08-01", "valid_from: 2026-07-01"),
        "valid_from", date(2026, 8, 1), date(2026, 7, 1), True, "looser",
        "start of validity moved earlier from 2026-08-01 to 2026-07-01 (looser)",
    ),
    "access item removed": (
        ("staff: [early_warning_list, outreach_suggestions, preferred_channel]",
         "staff: [early_warning_list, outreach_suggestions]"),
        "access.staff", ("early_warning_list", "outreach_suggestions", "preferred_channel"),
        ("early_warning_list", "outreach_suggestions"), True, "stricter",
        "staff access: preferred_channel removed (stricter)",
    ),
    "title": (
        ("title: Family engagement", "title: Family involvement"),
        "title", "Family engagement analytics at Riverside Unified School District",
        "Family involvement analytics at Riverside Unified School District", False, "neutral",
        "title changed from 'Family engagement analytics at Riverside Unified School District' "
        "to 'Family involvement analytics at Riverside Unified School District' (neutral)",
    ),
    "version": (
        ("\nversion: 1", "\nversion: 2"),
        "version", 1, 2, False, "neutral", "policy version changed from 1 to 2 (neutral)",
    ),
    "issuer": (
        ("privacy_officer: Dana Okafor", "privacy_officer: Sam Lee"),
        "issued_by.privacy_officer", "Dana Okafor, District Privacy Officer",
        "Sam Lee, District Privacy Officer", False, "neutral",
        "issuer's privacy_officer changed from 'Dana Okafor, District Privacy Officer' to "
        "'Sam Lee, District Privacy Officer' (neutral)",
    ),
    "period": (
        ('period: "2026-2027"', 'period: "SY26"'),
        "period", "2026-2027", "SY26", True, "looser",
        "budget period changed from '2026-2027' to 'SY26' (looser)",
    ),
    "purpose description": (
        ("  outreach: Reach each family", "  outreach: Contact each family"),
        "purposes.outreach",
        "Reach each family the way it prefers (for example video rather than newsletters).",
        "Contact each family the way it prefers (for example video rather than newsletters).",
        True, "looser",
        "purpose outreach changed from 'Reach each family the way it prefers "
        "(for example video rather than newsletters).' to 'Contact each family the way it "
        "prefers (for example video rather than newsletters).' (looser)",
    ),
    "more rounds": (
        ("max_rounds_per_run: 50", "max_rounds_per_run: 100"),
        "training.max_rounds_per_run", 50, 100, False, "looser",
        "maximum rounds per run raised from 50 to 100 (looser)",
    ),
    "lower gradient norm": (
        ("max_grad_norm: 1.0", "max_grad_norm: 0.5"),
        "training.max_grad_norm", 1.0, 0.5, False, "stricter",
        "maximum gradient norm lowered from 1 to 0.5 (stricter)",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_each_change_is_classified(tmp_path, district, case):
    # Prepare
    replacement, field, old, new, relevant, direction, message = CASES[case]
    changed = policy_from(tmp_path, replacement)

    # Execute
    changes = diff(district, changed)

    # Assert
    assert changes == [Change(field, old, new, relevant, direction, message)]


def test_reversing_a_diff_swaps_looser_and_stricter(tmp_path, district):
    changed = policy_from(
        tmp_path,
        ("epsilon: 4.0", "epsilon: 3.0"),
        ("secure_aggregation_required: true", "secure_aggregation_required: false"),
        ("training_share: 0.75", "training_share: 0.5"),
    )
    forward = {c.field: c.direction for c in diff(district, changed)}
    backward = {c.field: c.direction for c in diff(changed, district)}
    assert forward == {
        "secure_aggregation_required": "looser",
        "budget.epsilon": "stricter",
        "budget.training_share": "neutral",
    }
    assert backward == {
        "secure_aggregation_required": "stricter",
        "budget.epsilon": "looser",
        "budget.training_share": "neutral",
    }


def test_a_list_that_gains_and_loses_items_is_looser(tmp_path, district):
    changed = policy_from(
        tmp_path,
        ("staff: [early_warning_list, outreach_suggestions, preferred_channel]",
         "staff: [early_warning_list, outreach_suggestions, raw_records]"),
    )  # fmt: skip
    (change,) = diff(district, changed)
    assert change.direction == "looser"
    assert change.message == "staff access: raw_records added; preferred_channel removed (looser)"


def test_reordering_a_list_is_not_a_change(tmp_path, district):
    changed = policy_from(
        tmp_path,
        ("purposes: [early_warning, outreach, research]", "purposes: [research, outreach, early_warning]"),
    )  # fmt: skip
    assert diff(district, changed) == []


def test_privacy_relevant_looser_changes_come_first_then_stricter_then_the_rest(tmp_path, district):
    # Prepare: changes spread over the file, in an order unlike the expected one
    changed = policy_from(
        tmp_path,
        ("title: Family engagement", "title: Family involvement"),
        ("valid_until: 2027-07-31", "valid_until: 2027-06-30"),
        ('period: "2026-2027"', 'period: "SY26"'),
        (COMMS_FIELDS, COMMS_FIELDS.replace(" clicked_at,", "")),
        ("  wearables:\n    enabled: false", "  wearables:\n    enabled: true"),
        ("    consent: explicit", "    fields: [family_id]\n    purposes: [research]\n    consent: explicit"),
        ("epsilon: 4.0", "epsilon: 6.0"),
        ("training_share: 0.75", "training_share: 0.5"),
        ("min_cohort_k: 10", "min_cohort_k: 20"),
        ("secure_aggregation_required: true", "secure_aggregation_required: false"),
        ("max_rounds_per_run: 50", "max_rounds_per_run: 20"),
    )  # fmt: skip

    # Execute
    changes = diff(district, changed)

    # Assert
    assert [(c.field, c.privacy_relevant, c.direction) for c in changes] == [
        ("period", True, "looser"),
        ("categories.wearables.enabled", True, "looser"),
        ("categories.wearables.fields", True, "looser"),
        ("categories.wearables.purposes", True, "looser"),
        ("budget.epsilon", True, "looser"),
        ("secure_aggregation_required", True, "looser"),
        ("valid_until", True, "stricter"),
        ("categories.communications.fields", True, "stricter"),
        ("min_cohort_k", True, "stricter"),
        ("budget.training_share", True, "neutral"),
        ("title", False, "neutral"),
        ("training.max_rounds_per_run", False, "stricter"),
    ]
    assert [c.field for c in looser(changes)] == [
        "period",
        "categories.wearables.enabled",
        "categories.wearables.fields",
        "categories.wearables.purposes",
        "budget.epsilon",
        "secure_aggregation_required",
    ]


def test_render_diff_has_two_sections(tmp_path, district):
    changed = policy_from(
        tmp_path,
        ("epsilon: 4.0", "epsilon: 6.0"),
        ("min_cohort_k: 10", "min_cohort_k: 20"),
        ("\nversion: 1", "\nversion: 2"),
    )
    assert render_diff(diff(district, changed)) == (
        "Privacy-relevant changes:\n"
        "  - ε budget raised from 4 to 6 (looser)\n"
        "  - minimum cohort k raised from 10 to 20 (stricter)\n"
        "Other changes:\n"
        "  - policy version changed from 1 to 2 (neutral)"
    )
    only_version = policy_from(tmp_path, ("\nversion: 1", "\nversion: 2"))
    assert render_diff(diff(district, only_version)) == (
        "Privacy-relevant changes:\n"
        "  (none)\n"
        "Other changes:\n"
        "  - policy version changed from 1 to 2 (neutral)"
    )


def leaf_paths(value, path=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaf_paths(item, (*path, str(key)))
    else:
        yield ".".join(path)


def test_every_field_of_the_schema_is_classified(district):
    # A new schema field would be compared as neutral and not privacy-relevant, and a school
    # override could then change it freely: classify it in policies/diff.py when adding it.
    unclassified = [p for p in leaf_paths(district.model_dump()) if not is_classified(p)]
    assert unclassified == []


class PolicyWithNewField(Policy):
    retention_review_days: int = 30


def test_an_unclassified_new_field_is_picked_up_as_neutral(district):
    old = PolicyWithNewField.model_validate(district.model_dump())
    new = old.model_copy(update={"retention_review_days": 60})

    (change,) = diff(old, new)

    assert change == Change(
        field="retention_review_days",
        old=30,
        new=60,
        privacy_relevant=False,
        direction="neutral",
        message="retention_review_days changed from 30 to 60 (neutral)",
    )


def test_a_category_listed_in_one_policy_only(tmp_path, district):
    block = "  wearables:\n    enabled: false\n    retention_days: 90\n    consent: explicit\n"
    without = policy_from(tmp_path, (block, ""))
    assert "wearables" not in without.categories

    changes = diff(without, district)

    # Absent allows nothing, as does a disabled category with no fields or purposes.
    assert [(c.field, c.old, c.new, c.direction, c.message) for c in changes] == [
        ("categories.wearables.enabled", None, False, "neutral",
         "category wearables listed as disabled (was absent) (neutral)"),
        ("categories.wearables.retention_days", None, 90, "neutral",
         "retention of wearables set to 90 days (neutral)"),
        ("categories.wearables.consent", None, "explicit", "neutral",
         "consent for wearables set to 'explicit' (neutral)"),
    ]  # fmt: skip
    assert [(c.field, c.direction) for c in diff(district, without)][0] == (
        "categories.wearables.enabled", "neutral",
    )  # fmt: skip


def test_a_change_is_frozen():
    change = Change("f", 1, 2, False, "neutral", "m")
    with pytest.raises(dataclasses.FrozenInstanceError):
        change.direction = "looser"  # type: ignore[misc]
