"""Shared helpers for the policy tests: the shipped district policy, as a file and loaded."""

from __future__ import annotations

import pytest

from policies.loader import default_policy_path, load_policy

GOOD = default_policy_path().read_text()


@pytest.fixture(scope="module")
def district():
    return load_policy(default_policy_path())


def policy_from(tmp_path, *replacements):
    """The shipped district policy with each (old, new) text replaced, loaded from a tmp file."""
    text = GOOD
    for old, new in replacements:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return load_policy(path)
