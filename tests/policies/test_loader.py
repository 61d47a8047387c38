import pytest

from policies.errors import PolicyError
from policies.loader import default_policy_path, load_policy

GOOD = default_policy_path().read_text()


def write(tmp_path, text):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_the_shipped_district_policy_loads():
    policy = load_policy(default_policy_path())
    assert (policy.policy_id, policy.budget.epsilon, policy.budget.delta) == (
        "district-default", 4.0, 1e-5,
    )  # fmt: skip
    assert policy.training_budget.epsilon == 3.0
    assert policy.analytics_budget.epsilon == 1.0
    assert policy.training_budget.delta + policy.analytics_budget.delta == pytest.approx(1e-5)
    assert policy.privacy_unit == "family"
    assert policy.min_school_size == 50
    assert policy.categories["wearables"].enabled is False


def test_a_good_policy_loads(tmp_path):
    policy = load_policy(write(tmp_path, GOOD.replace("\nversion: 1", "\nversion: 2")))
    assert policy.version == 2
    assert policy.training.max_rounds_per_run == 50


def test_unknown_field_is_refused_with_its_name(tmp_path):
    with pytest.raises(PolicyError, match="unknown field 'epsilonn'") as info:
        load_policy(write(tmp_path, GOOD + "epsilonn: 2\n"))
    assert "policy.yaml" in str(info.value)


def test_unknown_nested_field_is_refused(tmp_path):
    text = GOOD.replace("  max_grad_norm: 1.0", "  max_grad_norm: 1.0\n  learning_rate: 9")
    assert text != GOOD
    with pytest.raises(PolicyError, match="unknown field 'training.learning_rate'"):
        load_policy(write(tmp_path, text))


@pytest.mark.parametrize("value", ["-1", ".nan", ".inf", "0", "three"])
def test_unusable_epsilon_is_refused(tmp_path, value):
    with pytest.raises(PolicyError, match="field 'budget.epsilon'"):
        load_policy(write(tmp_path, GOOD.replace("epsilon: 4.0", f"epsilon: {value}")))


@pytest.mark.parametrize("value", ["1", "0", "-1e-5", ".nan"])
def test_unusable_delta_is_refused(tmp_path, value):
    with pytest.raises(PolicyError, match="field 'budget.delta'"):
        load_policy(write(tmp_path, GOOD.replace("delta: 1.0e-5", f"delta: {value}")))


def test_missing_field_is_named(tmp_path):
    with pytest.raises(PolicyError, match="field 'min_school_size' is required"):
        load_policy(write(tmp_path, GOOD.replace("min_school_size: 50\n", "")))


def test_a_direct_identifier_can_never_be_allowed(tmp_path):
    text = GOOD.replace("fields: [family_id, event_id,", "fields: [family_id, email, event_id,")
    with pytest.raises(PolicyError, match="'email' is a direct identifier"):
        load_policy(write(tmp_path, text))


def test_a_field_outside_its_category_is_refused(tmp_path):
    text = GOOD.replace("fields: [family_id, event_id,", "fields: [family_id, grade, event_id,")
    with pytest.raises(PolicyError, match="'grade' is not a field of event_attendance"):
        load_policy(write(tmp_path, text))


def test_an_unknown_category_is_refused(tmp_path):
    text = GOOD.replace("  wearables:\n", "  location:\n    enabled: false\n  wearables:\n")
    with pytest.raises(PolicyError, match="categories.location"):
        load_policy(write(tmp_path, text))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(PolicyError, match="not found"):
        load_policy(tmp_path / "nope.yaml")
    with pytest.raises(PolicyError, match="line 2: not valid YAML"):
        load_policy(write(tmp_path, "policy_id: a\n  epsilon: [\n"))
    with pytest.raises(PolicyError, match="expected a mapping"):
        load_policy(write(tmp_path, "- just\n- a list\n"))
