import pytest

from policies.errors import PolicyError
from policies.loader import default_policy_path, load_policy

GOOD = """\
policy_id: test-policy
version: 2
period: "2026-2027"
epsilon: 3.0
delta: 1.0e-5
min_school_size: 50
training:
  max_rounds_per_run: 20
  max_grad_norm: 1.0
"""


def write(tmp_path, text):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_the_shipped_district_policy_loads():
    policy = load_policy(default_policy_path())
    assert (policy.policy_id, policy.epsilon, policy.delta) == ("district-default", 3.0, 1e-5)
    assert policy.privacy_unit == "family"
    assert policy.min_school_size == 50
    assert policy.budget.epsilon == 3.0


def test_a_good_policy_loads(tmp_path):
    policy = load_policy(write(tmp_path, GOOD))
    assert policy.version == 2
    assert policy.training.max_rounds_per_run == 20


def test_unknown_field_is_refused_with_its_name(tmp_path):
    with pytest.raises(PolicyError, match="unknown field 'epsilonn'") as info:
        load_policy(write(tmp_path, GOOD + "epsilonn: 2\n"))
    assert "policy.yaml" in str(info.value)


def test_unknown_nested_field_is_refused(tmp_path):
    text = GOOD.replace("  max_grad_norm: 1.0", "  max_grad_norm: 1.0\n  learning_rate: 9")
    with pytest.raises(PolicyError, match="unknown field 'training.learning_rate'"):
        load_policy(write(tmp_path, text))


@pytest.mark.parametrize("value", ["-1", ".nan", ".inf", "0", "three"])
def test_unusable_epsilon_is_refused(tmp_path, value):
    with pytest.raises(PolicyError, match="field 'epsilon'"):
        load_policy(write(tmp_path, GOOD.replace("epsilon: 3.0", f"epsilon: {value}")))


@pytest.mark.parametrize("value", ["1", "0", "-1e-5", ".nan"])
def test_unusable_delta_is_refused(tmp_path, value):
    with pytest.raises(PolicyError, match="field 'delta'"):
        load_policy(write(tmp_path, GOOD.replace("delta: 1.0e-5", f"delta: {value}")))


def test_missing_field_is_named(tmp_path):
    with pytest.raises(PolicyError, match="field 'min_school_size' is required"):
        load_policy(write(tmp_path, GOOD.replace("min_school_size: 50\n", "")))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(PolicyError, match="not found"):
        load_policy(tmp_path / "nope.yaml")
    with pytest.raises(PolicyError, match="line 2: not valid YAML"):
        load_policy(write(tmp_path, "policy_id: a\n  epsilon: [\n"))
    with pytest.raises(PolicyError, match="expected a mapping"):
        load_policy(write(tmp_path, "- just\n- a list\n"))
