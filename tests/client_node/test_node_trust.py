"""A node refuses to act under a policy that is unsigned, tampered, foreign or out of date."""

from datetime import date

import pytest

from client_node.node import SchoolNode, install_policy
from policies.loader import default_policy_path, default_trust_anchor
from policies.trust import PolicyRefused
from privacy.signing import generate_keypair, sign_file


def refusals(node_dir):
    from client_node.node import node_audit_log

    return [e for e in node_audit_log(node_dir).entries() if e["kind"] == "refusal"]


@pytest.fixture
def west_town(west_town):
    """The same school, under the shipped district policy as its officer signed it."""
    install_policy(west_town, policy=default_policy_path(), trust_anchor=default_trust_anchor())
    return west_town


def test_the_shipped_signed_policy_is_accepted(west_town):
    node = SchoolNode(west_town, today=date(2026, 12, 3))
    assert node.policy.policy_id == "district-default"
    assert refusals(west_town) == []


def test_an_unsigned_policy_is_refused(west_town):
    (west_town / "policy.yaml.sig").unlink()
    with pytest.raises(PolicyRefused, match="unsigned"):
        SchoolNode(west_town, today=date(2026, 12, 3))
    assert "unsigned" in refusals(west_town)[0]["data"]["reason"]


def test_a_one_byte_edit_is_refused(west_town):
    path = west_town / "policy.yaml"
    text = path.read_bytes()
    position = text.index(b"epsilon: 4.0") + len("epsilon: ")
    path.write_bytes(text[:position] + b"9" + text[position + 1 :])  # epsilon: 9.0
    with pytest.raises(PolicyRefused, match="changed after it was signed"):
        SchoolNode(west_town, today=date(2026, 12, 3))


def test_a_policy_signed_by_another_key_is_refused(tmp_path, west_town):
    key, _ = generate_keypair(tmp_path / "mallory", name="mallory")
    copy = tmp_path / "policy.yaml"
    copy.write_bytes(default_policy_path().read_bytes())
    sign_file(copy, key=key)
    install_policy(west_town, policy=copy, trust_anchor=default_trust_anchor())
    with pytest.raises(PolicyRefused, match="signed by another key"):
        SchoolNode(west_town, today=date(2026, 12, 3))


@pytest.mark.parametrize("day", [date(2027, 8, 1), date(2026, 7, 31)])
def test_a_policy_outside_its_dates_is_refused(west_town, day):
    with pytest.raises(PolicyRefused, match=f"valid from 2026-08-01 to 2027-07-31, not on {day}"):
        SchoolNode(west_town, today=day)
    assert len(refusals(west_town)) == 1


def test_a_missing_trust_anchor_is_refused(west_town):
    (west_town / "officer.pub").unlink()
    with pytest.raises(PolicyRefused, match="public key .* not found"):
        SchoolNode(west_town, today=date(2026, 12, 3))
