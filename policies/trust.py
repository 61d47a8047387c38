"""A policy a node may act under: signed by the trusted officer, unchanged, and in force today.

A school may run under a school override: then both the district policy and the override must
verify, and the override must be stricter than the district policy (policies/override.py).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from policies.errors import PolicyError
from policies.lint import Severity, lint
from policies.loader import load_policy
from policies.override import is_override, load_override
from policies.schema import Policy
from privacy.signing import SignatureError, verify_file


class PolicyRefused(PolicyError):
    """The node must not act under this policy: unsigned, tampered, foreign key or expired."""


def _verified(path: Path, pubkey: Path) -> None:
    try:
        verify_file(path, pubkey=pubkey)
    except SignatureError as exc:
        raise PolicyRefused(f"policy refused: {exc}") from None


def load_trusted_policy(
    path: Path,
    *,
    pubkey: Path,
    today: date | None = None,
    district: Path | None = None,
    in_force: bool = True,
) -> Policy:
    """Verify the signature(s), the schema, the linter's error rules and (unless `in_force` is
    False, as for deleting data under the last policy) the validity dates. Fail closed."""
    _verified(path, pubkey)
    if is_override(path):
        if district is None:
            raise PolicyRefused(
                f"policy refused: {path} is a school override; the district policy it extends "
                "is needed too"
            )
        _verified(district, pubkey)
        policy = load_override(path, district=load_policy(district))
    else:
        policy = load_policy(path)
    day = today or date.today()
    errors = [
        f
        for f in lint(policy, today=day)
        if f.severity == Severity.ERROR and f.rule != "policy-expired"
    ]
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise PolicyRefused(
            f"policy refused: {path} breaks a rule: {errors[0].field}: {errors[0].message}{more}"
        )
    if in_force and not policy.is_valid_on(day):
        raise PolicyRefused(
            f"policy refused: {path} ({policy.policy_id} v{policy.version}) is valid from "
            f"{policy.valid_from} to {policy.valid_until}, not on {day}"
        )
    return policy
