"""School overrides: a school's stricter version of the district policy.

An override file names the district policy it extends, its own id and version, and the fields it
changes:

    extends: {policy_id: district-default, version: 1}
    policy_id: lincoln-elementary
    version: 1
    changes:
      budget: {epsilon: 2.0}
      categories:
        platform_activity: {enabled: false}

`changes` is deep-merged into the district policy: mappings merge key by key, lists and single
values replace what the district has (so a shortened `fields` list names every field it keeps).
The result must validate as a `Policy` and must not be looser than the district policy anywhere;
"looser" is decided by policies/diff.py, so `schoolfed policy diff` and this check always agree.

    school = load_override(Path("policies/schools/lincoln-elementary.yaml"), district=district)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from policies.diff import Change, diff, looser
from policies.errors import PolicyError
from policies.loader import fields_at, read_yaml_mapping
from policies.schema import Policy

# Set at the top level of an override, never inside `changes`.
_TOP_LEVEL_ONLY = ("policy_id", "version")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Extends(_Frozen):
    """The district policy (id and version) an override is written against."""

    policy_id: str = Field(min_length=1)
    version: int = Field(ge=1)


class SchoolOverride(_Frozen):
    """A school's override file: what it extends, its own id and version, and its changes."""

    extends: Extends
    policy_id: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    version: int = Field(ge=1)
    changes: dict[str, Any] = Field(
        default_factory=dict, description="any subset of the policy's fields, deep-merged"
    )

    @field_validator("changes")
    @classmethod
    def _no_identity_in_changes(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in _TOP_LEVEL_ONLY:
            if key in value:
                raise ValueError(
                    f"{key!r} is set at the top level of an override, not inside changes"
                )
        return value


def load_override(path: Path, *, district: Policy) -> Policy:
    """Read the override at `path` and return the school policy it makes from `district`.

    Raises PolicyError, naming the file and the field, when the file is unreadable or not valid
    YAML, has an unknown key, extends another policy or version than `district`, does not make
    a valid policy, or loosens the district policy anywhere.
    """
    return apply_override(read_override(path), district=district, where=str(path))


def read_override(path: Path) -> SchoolOverride:
    """Read and validate an override file, without applying it."""
    data = read_yaml_mapping(path, what="override")
    try:
        return SchoolOverride.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(f"{path}: {_explain_override(exc)}") from None


def apply_override(override: SchoolOverride, *, district: Policy, where: str) -> Policy:
    """The school policy `override` makes from `district`; `where` names the file in errors."""
    wanted = (override.extends.policy_id, override.extends.version)
    if wanted != (district.policy_id, district.version):
        raise PolicyError(
            f"{where}: field 'extends' = {override.extends.policy_id} version "
            f"{override.extends.version}, but the district policy is {district.policy_id} "
            f"version {district.version}; an override must extend the district policy in force"
        )
    merged = deep_merge(district.model_dump(), override.changes)
    merged.update(policy_id=override.policy_id, version=override.version)
    try:
        school = Policy.model_validate(merged)
    except ValidationError as exc:
        raise PolicyError(f"{where}: changes: {_explain_policy(exc)}") from None
    loosened = looser(diff(district, school))
    if loosened:
        raise PolicyError(f"{where}: {_loosening(loosened)}")
    return school


def deep_merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`base` updated by `changes`: mappings merge recursively, anything else replaces."""
    merged = dict(base)
    for key, value in changes.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def _loosening(changes: list[Change]) -> str:
    first = changes[0]
    text = (
        f"field '{first.field}' = {_show(first.new)} loosens the district policy "
        f"({_show(first.old)}); a school override may only be stricter"
    )
    if len(changes) > 1:
        text += f" (also looser: {', '.join(c.field for c in changes[1:])})"
    return text


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return repr(value)


def _explain_override(exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        model: type[BaseModel] = Extends if err["loc"][0] == "extends" else SchoolOverride
        return f"unknown field '{field}'; allowed here: {', '.join(model.model_fields)}"
    if err["type"] == "missing":
        return f"field '{field}' is required"
    message = err["msg"].removeprefix("Value error, ")
    return f"field '{field}' = {err.get('input')!r}: {message}"


def _explain_policy(exc: ValidationError) -> str:
    """The first problem of the merged policy, named by its field path in `changes`."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    field = ".".join(str(p) for p in loc)
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"unknown field '{field}'; allowed here: {', '.join(fields_at(loc[:-1]))}"
    if err["type"] == "missing":
        return f"field '{field}' is required"
    if not loc:  # a rule across fields (dates, purposes): the message names the fields
        return message
    return f"field '{field}' = {err.get('input')!r}: {message}"


def is_override(path: Path) -> bool:
    """A school override names the district policy it `extends` (a district policy does not)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # the loader will say what is wrong with it
    return isinstance(data, dict) and "extends" in data
