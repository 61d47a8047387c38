import textwrap
from datetime import date
from pathlib import Path

import pytest

from policies.diff import diff
from policies.errors import PolicyError
from policies.lint import Severity, lint
from policies.loader import default_policy_path, load_policy
from policies.override import (
    SchoolOverride,
    apply_override,
    deep_merge,
    load_override,
    read_override,
)
from tests.policies.conftest import GOOD

SCHOOLS = default_policy_path().parent / "schools"
EXTENDS = "extends: {policy_id: district-default, version: 1}\n"


def write_override(tmp_path, changes, *, head=EXTENDS + "policy_id: test-school\nversion: 1\n"):
    """An override file with `changes` (YAML, indented under `changes:`)."""
    path = tmp_path / "test-school.yaml"
    body = "changes:\n" + textwrap.indent(textwrap.dedent(changes).strip("\n"), "  ") + "\n"
    path.write_text(head + (body if changes else ""))
    return path


def test_lincoln_elementary_loads_and_is_stricter(district):
    # Execute
    school = load_override(SCHOOLS / "lincoln-elementary.yaml", district=district)

    # Assert
    assert (school.policy_id, school.version) == ("lincoln-elementary", 1)
    assert school.categories["platform_activity"].enabled is False
    assert school.min_cohort_k == 20
    assert school.budget.epsilon == 3.0
    assert school.training_budget.epsilon == 2.25  # the district's 75 % split is kept
    assert school.budget.delta == district.budget.delta
    assert school.categories["communications"] == district.categories["communications"]
    changes = diff(district, school)
    assert [(c.field, c.direction) for c in changes if c.privacy_relevant] == [
        ("categories.platform_activity.enabled", "stricter"),
        ("budget.epsilon", "stricter"),
        ("min_cohort_k", "stricter"),
    ]
    assert [c for c in changes if c.direction == "looser"] == []


def test_riverside_high_loads_and_is_stricter(district):
    school = load_override(SCHOOLS / "riverside-high.yaml", district=district)

    assert (school.policy_id, school.version) == ("riverside-high", 1)
    comms = school.categories["communications"]
    assert comms.retention_days == 180
    assert comms.fields == (
        "family_id", "channel", "content_type", "direction", "sent_at", "opened_at", "replied_at",
    )  # fmt: skip
    assert comms.purposes == district.categories["communications"].purposes
    assert school.categories["grades"].retention_days == 365
    assert school.budget == district.budget
    changes = diff(district, school)
    assert [(c.field, c.direction) for c in changes if c.privacy_relevant] == [
        ("categories.communications.fields", "stricter"),
        ("categories.communications.retention_days", "stricter"),
        ("categories.grades.retention_days", "stricter"),
    ]
    assert [c for c in changes if c.direction == "looser"] == []


@pytest.mark.parametrize("name", ["lincoln-elementary", "riverside-high"])
def test_shipped_overrides_lint_without_errors(district, name):
    school = load_override(SCHOOLS / f"{name}.yaml", district=district)
    findings = lint(school, today=date(2026, 9, 1))
    assert [f for f in findings if f.severity is Severity.ERROR] == []


# (changes, field, new value as shown, district value as shown)
LOOSER = {
    "epsilon raised": ("budget: {epsilon: 6.0}", "budget.epsilon", "6.0", "4.0"),
    "delta raised": ("budget: {delta: 1.0e-4}", "budget.delta", "0.0001", "1e-05"),
    "wearables enabled": (
        """
        categories:
          wearables: {enabled: true, fields: [family_id, sleep_minutes], purposes: [research]}
        """,
        "categories.wearables.enabled", "True", "False",
    ),
    "field added to a disabled category": (
        "categories: {wearables: {fields: [family_id]}}",
        "categories.wearables.fields", "[family_id]", "[]",
    ),
    "purpose added": (
        "categories: {grades: {purposes: [early_warning, outreach, research]}}",
        "categories.grades.purposes", "[early_warning, outreach, research]",
        "[early_warning, research]",
    ),
    "retention lengthened": (
        "categories: {communications: {retention_days: 400}}",
        "categories.communications.retention_days", "400", "365",
    ),
    "retention removed": (
        "categories: {communications: {retention_days: null}}",
        "categories.communications.retention_days", "null", "365",
    ),
    "wearables consent weakened": (
        "categories: {wearables: {consent: none}}",
        "categories.wearables.consent", "'none'", "'explicit'",
    ),
    "opt-out off": ("consent: {opt_out: false}", "consent.opt_out", "False", "True"),
    "inspect off": ("consent: {inspect: false}", "consent.inspect", "False", "True"),
    "correct off": ("consent: {correct: false}", "consent.correct", "False", "True"),
    "k lowered": ("min_cohort_k: 5", "min_cohort_k", "5", "10"),
    "secure aggregation off": (
        "secure_aggregation_required: false", "secure_aggregation_required", "False", "True",
    ),
    "school size lowered": ("min_school_size: 30", "min_school_size", "30", "50"),
    "validity ends later": ("valid_until: 2027-12-31", "valid_until", "2027-12-31", "2027-07-31"),
    "validity starts earlier": ("valid_from: 2026-07-01", "valid_from", "2026-07-01", "2026-08-01"),
    "access item added": (
        "access: {it: [node_health, ingestion_reports, audit_log, raw_tables]}",
        "access.it", "[node_health, ingestion_reports, audit_log, raw_tables]",
        "[node_health, ingestion_reports, audit_log]",
    ),
    "more rounds": ("training: {max_rounds_per_run: 100}", "training.max_rounds_per_run", "100", "50"),
    "higher gradient norm": ("training: {max_grad_norm: 2.0}", "training.max_grad_norm", "2.0", "1.0"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(LOOSER), ids=list(LOOSER))
def test_a_looser_override_is_refused_naming_the_field(tmp_path, district, case):
    # Prepare
    changes, field, new, old = LOOSER[case]
    path = write_override(tmp_path, changes)

    # Execute
    with pytest.raises(PolicyError) as info:
        load_override(path, district=district)

    # Assert
    message = str(info.value)
    assert message.startswith(
        f"{path}: field '{field}' = {new} loosens the district policy ({old}); "
        "a school override may only be stricter"
    ), message
    assert "\n" not in message


def test_the_exact_message_for_a_raised_epsilon(tmp_path, district):
    path = write_override(tmp_path, "budget: {epsilon: 6.0}\nmin_cohort_k: 20")
    with pytest.raises(PolicyError) as info:
        load_override(path, district=district)
    assert str(info.value) == (
        f"{path}: field 'budget.epsilon' = 6.0 loosens the district policy (4.0); "
        "a school override may only be stricter"
    )


def test_every_looser_field_is_listed(tmp_path, district):
    path = write_override(
        tmp_path,
        """
        categories:
          wearables: {enabled: true, fields: [family_id, sleep_minutes], purposes: [research]}
        secure_aggregation_required: false
        """,
    )
    with pytest.raises(PolicyError) as info:
        load_override(path, district=district)
    assert str(info.value).endswith(
        "(also looser: categories.wearables.fields, categories.wearables.purposes, "
        "secure_aggregation_required)"
    )


def test_adding_back_a_field_the_district_removed_is_refused(tmp_path):
    # Prepare: a district that does not keep clicked_at
    district_path = tmp_path / "district.yaml"
    district_path.write_text(GOOD.replace(" clicked_at,", ""))
    district = load_policy(district_path)
    assert "clicked_at" not in district.categories["communications"].fields
    path = write_override(
        tmp_path,
        "categories: {communications: {fields: [family_id, channel, content_type, direction, "
        "sent_at, opened_at, clicked_at, replied_at]}}",
    )

    # Execute / Assert
    with pytest.raises(
        PolicyError,
        match=r"field 'categories\.communications\.fields' = \[.*clicked_at.*\] loosens",
    ):
        load_override(path, district=district)


@pytest.mark.parametrize(
    "changes",
    [
        "budget: {training_share: 0.5}",  # neutral: a different split of the same budget
        "budget: {training_share: 1.0}",
        "title: Family engagement at Oak School",
        "valid_from: 2026-09-01\nvalid_until: 2027-06-30",  # inside the district's dates
        "access: {staff: [early_warning_list]}",
        "training: {max_rounds_per_run: 10, max_grad_norm: 0.5}",
        "consent: {opt_out_takes_effect: next_round}",  # the same value as the district
        "",  # no changes at all
    ],
)
def test_neutral_and_stricter_overrides_are_allowed(tmp_path, district, changes):
    school = load_override(write_override(tmp_path, changes), district=district)
    assert school.policy_id == "test-school"
    assert [c.field for c in diff(district, school) if c.direction == "looser"] == []


def test_a_training_share_change_alone_keeps_the_budget(tmp_path, district):
    school = load_override(
        write_override(tmp_path, "budget: {training_share: 0.5}"), district=district
    )
    assert (school.budget.epsilon, school.budget.delta) == (4.0, 1e-5)
    assert school.training_budget.epsilon == 2.0


def test_an_unknown_top_level_key_is_refused(tmp_path, district):
    path = write_override(tmp_path, "min_cohort_k: 20")
    path.write_text(path.read_text() + "notes: hello\n")
    with pytest.raises(PolicyError) as info:
        load_override(path, district=district)
    assert str(info.value) == (
        f"{path}: unknown field 'notes'; allowed here: extends, policy_id, version, changes"
    )


def test_an_unknown_key_in_extends_is_refused(tmp_path, district):
    head = "extends: {policy_id: district-default, version: 1, signed: yes}\npolicy_id: a\nversion: 1\n"
    path = write_override(tmp_path, "min_cohort_k: 20", head=head)
    with pytest.raises(
        PolicyError, match=r"unknown field 'extends\.signed'; allowed here: policy_id, version$"
    ):
        load_override(path, district=district)


def test_an_unknown_key_in_changes_is_refused(tmp_path, district):
    path = write_override(tmp_path, "budget: {epsilonn: 2.0}")
    with pytest.raises(PolicyError) as info:
        load_override(path, district=district)
    assert str(info.value) == (
        f"{path}: changes: unknown field 'budget.epsilonn'; allowed here: epsilon, delta, training_share"
    )


def test_an_unknown_category_field_in_changes_is_refused(tmp_path, district):
    path = write_override(tmp_path, "categories: {grades: {retention: 30}}")
    with pytest.raises(
        PolicyError,
        match=r"changes: unknown field 'categories\.grades\.retention'; allowed here: enabled, fields, retention_days, purposes, consent$",
    ):
        load_override(path, district=district)


def test_an_invalid_value_in_changes_is_refused(tmp_path, district):
    path = write_override(tmp_path, "budget: {epsilon: -1}")
    with pytest.raises(PolicyError) as info:
        load_override(path, district=district)
    assert str(info.value) == (
        f"{path}: changes: field 'budget.epsilon' = -1: -1.0 is not allowed; ε must be finite and > 0"
    )


def test_dates_out_of_order_are_refused(tmp_path, district):
    path = write_override(tmp_path, "valid_from: 2027-01-01\nvalid_until: 2026-12-31")
    with pytest.raises(PolicyError) as info:
        load_override(path, district=district)
    assert str(info.value) == (
        f"{path}: changes: valid_until 2026-12-31 is before valid_from 2027-01-01"
    )


@pytest.mark.parametrize(
    ("extends", "shown"),
    [
        ("{policy_id: district-default, version: 2}", "district-default version 2"),
        ("{policy_id: other-district, version: 1}", "other-district version 1"),
    ],
)
def test_a_wrong_extends_is_refused(tmp_path, district, extends, shown):
    head = f"extends: {extends}\npolicy_id: test-school\nversion: 1\n"
    path = write_override(tmp_path, "min_cohort_k: 20", head=head)
    with pytest.raises(PolicyError) as info:
        load_override(path, district=district)
    assert str(info.value) == (
        f"{path}: field 'extends' = {shown}, but the district policy is district-default "
        "version 1; an override must extend the district policy in force"
    )


def test_identity_is_set_at_the_top_level_only(tmp_path, district):
    path = write_override(tmp_path, "policy_id: other")
    with pytest.raises(PolicyError, match="'policy_id' is set at the top level of an override"):
        load_override(path, district=district)


def test_a_missing_extends_is_refused(tmp_path, district):
    path = write_override(tmp_path, "min_cohort_k: 20", head="policy_id: a\nversion: 1\n")
    with pytest.raises(PolicyError, match=r"test-school\.yaml: field 'extends' is required$"):
        load_override(path, district=district)


def test_bad_files_are_refused(tmp_path, district):
    with pytest.raises(PolicyError, match="override file .*nope.yaml: not found"):
        load_override(tmp_path / "nope.yaml", district=district)
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXTENDS + "changes:\n\tmin_cohort_k: 20\nversion: 1\n")  # a tab on line 3
    with pytest.raises(PolicyError, match=r"bad\.yaml line 3: not valid YAML"):
        load_override(bad, district=district)
    bad.write_text("- a list\n")
    with pytest.raises(PolicyError, match="expected a mapping of fields, got list"):
        load_override(bad, district=district)


def test_read_and_apply_separately(district):
    override = read_override(SCHOOLS / "lincoln-elementary.yaml")
    assert isinstance(override, SchoolOverride)
    assert override.changes["min_cohort_k"] == 20
    school = apply_override(override, district=district, where="lincoln")
    assert school == load_override(SCHOOLS / "lincoln-elementary.yaml", district=district)


def test_deep_merge_merges_mappings_and_replaces_lists_and_values():
    base = {"a": {"b": 1, "c": [1, 2], "d": {"e": 1}}, "f": 1}
    merged = deep_merge(base, {"a": {"c": [3], "d": {"g": 2}}, "f": None, "h": 1})
    assert merged == {"a": {"b": 1, "c": [3], "d": {"e": 1, "g": 2}}, "f": None, "h": 1}
    assert base == {"a": {"b": 1, "c": [1, 2], "d": {"e": 1}}, "f": 1}  # not changed


def test_shipped_overrides_are_documented_for_a_privacy_officer():
    for path in sorted(Path(SCHOOLS).glob("*.yaml")):
        text = path.read_text()
        assert text.startswith("# "), path
        assert "only make the district policy STRICTER" in text, path
