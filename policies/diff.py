"""What changed between two versions of a policy, and whether each change loosens privacy.

    changes = diff(old, new)
    print(render_diff(changes))
    if any(c.direction == "looser" for c in changes): ...

The two policies are compared by walking their `model_dump()`, so a field added to the schema
later shows up here without code changes, as a neutral, not privacy-relevant change until it is
classified in `_RULES` (tests/policies/test_diff.py fails until every schema field is).

Each change has a direction: "looser" (the new policy allows more: more ε or δ, a category
turned on, more fields, purposes or access items, longer retention, weaker consent, lower k, no
secure aggregation, a smaller minimum school size, a longer validity, more training rounds or a
higher clipping bound), "stricter" (the reverse) or "neutral". A list that both gains and loses
items is "looser": something is allowed that was not before. The school-override checker
(policies/override.py) refuses every "looser" change, so the two always agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from enum import Enum
from typing import Any, Literal

from policies.schema import Policy

Direction = Literal["looser", "stricter", "neutral"]


@dataclass(frozen=True, slots=True)
class Change:
    """One changed field (dotted path) with its old and new value (None: absent)."""

    field: str
    old: Any
    new: Any
    privacy_relevant: bool
    direction: Direction
    message: str

    def __str__(self) -> str:
        return self.message


class _Kind(Enum):
    NEUTRAL = "neutral"  # any change is neutral
    HIGHER_LOOSER = "higher"  # numbers or dates; None (no limit) is the highest
    LOWER_LOOSER = "lower"  # numbers or dates
    ON_LOOSER = "on"  # a boolean that allows more when true; absent = false
    OFF_LOOSER = "off"  # a boolean that protects families when true
    ADDED_LOOSER = "added"  # a list of allowed items, compared as a set; absent = empty
    CONSENT = "consent"  # "explicit" is stricter than "none"
    CHANGED_LOOSER = "changed"  # any change, addition or removal needs the district's word


@dataclass(frozen=True, slots=True)
class _Rule:
    relevant: bool
    kind: _Kind
    label: str  # "{0}" is replaced by the path segment matched by "*"
    unit: str = ""


_CONSENT_RANK = {"none": 0, "explicit": 1}

# Every schema field, by dotted path ("*" matches one segment: a category, a purpose, a role).
_RULES: dict[str, _Rule] = {
    "schema_version": _Rule(False, _Kind.NEUTRAL, "schema version"),
    "policy_id": _Rule(False, _Kind.NEUTRAL, "policy id"),
    "version": _Rule(False, _Kind.NEUTRAL, "policy version"),
    "title": _Rule(False, _Kind.NEUTRAL, "title"),
    "issued_by.*": _Rule(False, _Kind.NEUTRAL, "issuer's {0}"),
    "valid_from": _Rule(True, _Kind.LOWER_LOOSER, "start of validity"),
    "valid_until": _Rule(True, _Kind.HIGHER_LOOSER, "end of validity"),
    # the ledger counts spends per period: a new period label starts a fresh budget
    "period": _Rule(True, _Kind.CHANGED_LOOSER, "budget period"),
    "privacy_unit": _Rule(True, _Kind.NEUTRAL, "privacy unit"),
    # what a purpose means is what families are told: a school may not reword or add one
    "purposes.*": _Rule(True, _Kind.CHANGED_LOOSER, "purpose {0}"),
    "categories.*.enabled": _Rule(True, _Kind.ON_LOOSER, "category {0}"),
    "categories.*.fields": _Rule(True, _Kind.ADDED_LOOSER, "fields of {0}"),
    "categories.*.retention_days": _Rule(
        True, _Kind.HIGHER_LOOSER, "retention of {0}", unit=" days"
    ),
    "categories.*.purposes": _Rule(True, _Kind.ADDED_LOOSER, "purposes of {0}"),
    "categories.*.consent": _Rule(True, _Kind.CONSENT, "consent for {0}"),
    "budget.epsilon": _Rule(True, _Kind.HIGHER_LOOSER, "ε budget"),
    "budget.delta": _Rule(True, _Kind.HIGHER_LOOSER, "δ budget"),
    "budget.training_share": _Rule(True, _Kind.NEUTRAL, "training share of the budget"),
    "min_cohort_k": _Rule(True, _Kind.LOWER_LOOSER, "minimum cohort k"),
    "secure_aggregation_required": _Rule(True, _Kind.OFF_LOOSER, "secure aggregation"),
    "min_school_size": _Rule(True, _Kind.LOWER_LOOSER, "minimum school size", unit=" families"),
    "consent.opt_out": _Rule(True, _Kind.OFF_LOOSER, "families' right to opt out"),
    "consent.opt_out_takes_effect": _Rule(True, _Kind.NEUTRAL, "when an opt-out takes effect"),
    "consent.inspect": _Rule(True, _Kind.OFF_LOOSER, "families' right to inspect their data"),
    "consent.correct": _Rule(True, _Kind.OFF_LOOSER, "families' right to correct their data"),
    "access.*": _Rule(True, _Kind.ADDED_LOOSER, "{0} access"),
    "training.max_rounds_per_run": _Rule(False, _Kind.HIGHER_LOOSER, "maximum rounds per run"),
    "training.max_grad_norm": _Rule(False, _Kind.HIGHER_LOOSER, "maximum gradient norm"),
}


class _Missing:
    """A key present in one policy only (a category listed in one of them)."""

    def __repr__(self) -> str:
        return "MISSING"


_MISSING = _Missing()


def diff(old: Policy, new: Policy) -> list[Change]:
    """The changes from `old` to `new`.

    Privacy-relevant changes come first (looser, then stricter, then neutral), then the other
    changes; each group keeps the order of the policy's fields.
    """
    changes: list[Change] = []
    _walk(old.model_dump(), new.model_dump(), (), changes)
    rank = {"looser": 0, "stricter": 1, "neutral": 2}
    return sorted(changes, key=lambda c: (0, rank[c.direction]) if c.privacy_relevant else (1, 0))


def looser(changes: Iterable[Change]) -> list[Change]:
    """The changes that loosen the policy, in the order given."""
    return [c for c in changes if c.direction == "looser"]


def is_classified(field: str) -> bool:
    """Whether the dotted path `field` has a rule (else it is compared as neutral)."""
    return _rule_for(tuple(field.split("."))) is not None


def render_diff(changes: Iterable[Change]) -> str:
    """Plain text for people: privacy-relevant changes, then the others; "No changes." if none."""
    changes = list(changes)
    if not changes:
        return "No changes."
    lines: list[str] = []
    for title, group in (
        ("Privacy-relevant changes", [c for c in changes if c.privacy_relevant]),
        ("Other changes", [c for c in changes if not c.privacy_relevant]),
    ):
        lines.append(f"{title}:")
        lines.extend(f"  - {c.message}" for c in group)
        if not group:
            lines.append("  (none)")
    return "\n".join(lines)


def _rule_for(path: tuple[str, ...]) -> tuple[_Rule, tuple[str, ...]] | None:
    """The rule whose pattern matches `path`, with the segments its "*"s matched."""
    for pattern, rule in _RULES.items():
        parts = pattern.split(".")
        if len(parts) == len(path) and all(p in ("*", s) for p, s in zip(parts, path, strict=True)):
            return rule, tuple(s for p, s in zip(parts, path, strict=True) if p == "*")
    return None


def _walk(old: Any, new: Any, path: tuple[str, ...], out: list[Change]) -> None:
    found = _rule_for(path)
    if found is None and (isinstance(old, Mapping) or isinstance(new, Mapping)):
        old_map = old if isinstance(old, Mapping) else {}
        new_map = new if isinstance(new, Mapping) else {}
        keys = list(old_map) + [k for k in new_map if k not in old_map]
        for key in keys:
            _walk(old_map.get(key, _MISSING), new_map.get(key, _MISSING), (*path, key), out)
        return
    change = _compare(old, new, path, found)
    if change is not None:
        out.append(change)


def _compare(
    old: Any, new: Any, path: tuple[str, ...], found: tuple[_Rule, tuple[str, ...]] | None
) -> Change | None:
    field = ".".join(path)
    rule, captured = found if found is not None else (_Rule(False, _Kind.NEUTRAL, field), ())
    label = rule.label.format(*captured)
    kind = rule.kind
    if kind is _Kind.ADDED_LOOSER:
        before = _items(old)
        after = _items(new)
        added = [x for x in after if x not in before]
        removed = [x for x in before if x not in after]
        if not added and not removed:
            return None  # same items, perhaps in another order
        direction: Direction = "looser" if added else "stricter"
        parts = [f"{', '.join(map(str, added))} added"] if added else []
        parts += [f"{', '.join(map(str, removed))} removed"] if removed else []
        text = f"{label}: {'; '.join(parts)}"
    elif old == new or (_is_nan(old) and _is_nan(new)):
        return None
    elif kind is _Kind.ON_LOOSER:
        on = bool(new) if new is not _MISSING else False
        was_on = bool(old) if old is not _MISSING else False
        if on == was_on:
            direction, text = "neutral", f"{label} listed as {_enabled(new)} (was {_show(old)})"
        else:
            direction = "looser" if on else "stricter"
            text = f"{label} {_enabled(new)}"
    elif kind is _Kind.OFF_LOOSER and isinstance(old, bool) and isinstance(new, bool):
        direction = "looser" if old else "stricter"
        text = f"{label} turned {'on' if new else 'off'}"
    elif kind is _Kind.CONSENT and old in _CONSENT_RANK and new in _CONSENT_RANK:
        direction = "looser" if _CONSENT_RANK[new] < _CONSENT_RANK[old] else "stricter"
        text = f"{label} changed from {old} to {new}"
    elif kind in (_Kind.HIGHER_LOOSER, _Kind.LOWER_LOOSER) and _comparable(old, new):
        higher = _key(new) > _key(old)
        direction = "looser" if higher == (kind is _Kind.HIGHER_LOOSER) else "stricter"
        if isinstance(old, date) or isinstance(new, date):
            verb = "moved later" if higher else "moved earlier"
        else:
            verb = "raised" if higher else "lowered"
        text = f"{label} {verb} from {_show(old, rule.unit)} to {_show(new, rule.unit)}"
    else:
        direction = "looser" if kind is _Kind.CHANGED_LOOSER and new is not _MISSING else "neutral"
        if kind is _Kind.CHANGED_LOOSER and new is _MISSING:
            direction = "stricter"  # a purpose dropped
        if old is _MISSING:
            text = f"{label} set to {_show(new, rule.unit)}"
        elif new is _MISSING:
            text = f"{label} removed (was {_show(old, rule.unit)})"
        else:
            text = f"{label} changed from {_show(old, rule.unit)} to {_show(new, rule.unit)}"
    return Change(
        field=field,
        old=None if old is _MISSING else old,
        new=None if new is _MISSING else new,
        privacy_relevant=rule.relevant,
        direction=direction,
        message=f"{text} ({direction})",
    )


def _items(value: Any) -> list[Any]:
    if value is _MISSING or value is None:
        return []
    if isinstance(value, list | tuple):
        return list(dict.fromkeys(value))
    return [value]


def _enabled(value: Any) -> str:
    return "enabled" if value is not _MISSING and bool(value) else "disabled"


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _comparable(old: Any, new: Any) -> bool:
    """Both present and of an ordered kind; None means "no limit" (higher than any number)."""
    if old is _MISSING or new is _MISSING:
        return False
    kinds = {type(v) for v in (old, new) if v is not None}
    if kinds == {date}:
        return old is not None and new is not None
    return bool(kinds) and kinds <= {int, float}


def _key(value: Any) -> Any:
    return math.inf if value is None else value


_SHOW: dict[type, Callable[[Any], str]] = {
    float: lambda v: f"{v:g}",
    str: repr,
    bool: lambda v: "true" if v else "false",
    date: lambda v: v.isoformat(),
    tuple: lambda v: "[" + ", ".join(map(str, v)) + "]",
    list: lambda v: "[" + ", ".join(map(str, v)) + "]",
}


def _show(value: Any, unit: str = "") -> str:
    """A value for a message: 4.0 -> "4", None -> "no limit", (a, b) -> "[a, b]"."""
    if value is _MISSING:
        return "absent"
    if value is None:
        return "no limit"
    shown = _SHOW.get(type(value), str)(value)
    return (
        f"{shown}{unit}"
        if isinstance(value, int | float) and not isinstance(value, bool)
        else shown
    )
