"""A policy a node may act under: signed by the trusted officer, unchanged, and in force today."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from policies.errors import PolicyError
from policies.loader import load_policy
from policies.schema import Policy
from privacy.signing import SignatureError, verify_file


class PolicyRefused(PolicyError):
    """The node must not act under this policy: unsigned, tampered, foreign key or expired."""


def load_trusted_policy(path: Path, *, pubkey: Path, today: date | None = None) -> Policy:
    """Verify the signature, then the schema, then the validity dates. Fail closed."""
    try:
        verify_file(path, pubkey=pubkey)
    except SignatureError as exc:
        raise PolicyRefused(f"policy refused: {exc}") from None
    policy = load_policy(path)
    day = today or date.today()
    if not policy.is_valid_on(day):
        raise PolicyRefused(
            f"policy refused: {path} ({policy.policy_id} v{policy.version}) is valid from "
            f"{policy.valid_from} to {policy.valid_until}, not on {day}"
        )
    return policy
