"""Read a policy YAML file into a `Policy`, with one clear message for anything wrong."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from policies.errors import PolicyError
from policies.schema import Policy

DISTRICT_POLICY = "district.yaml"
DISTRICT_OFFICER_KEY = "district-officer.pub"


def default_policy_path() -> Path:
    """The district default policy shipped in this package (signed: district.yaml.sig)."""
    return Path(str(resources.files("policies").joinpath(DISTRICT_POLICY)))


def default_trust_anchor() -> Path:
    """The public key of the officer who signed the shipped district policy."""
    return Path(str(resources.files("policies").joinpath(DISTRICT_OFFICER_KEY)))


def read_yaml_mapping(path: Path, *, what: str) -> dict:
    """The mapping in a YAML file; PolicyError naming `what` file, where and why otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(f"{what} file {path}: not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{what} file {path}: cannot be read ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise PolicyError(f"{what} file {path}{where}: not valid YAML") from None
    if not isinstance(data, dict):
        raise PolicyError(
            f"{what} file {path}: expected a mapping of fields, got {type(data).__name__}"
        )
    return data


def load_policy(path: Path) -> Policy:
    """Load and validate `path`. Raises PolicyError naming the file, field, value and rule."""
    data = read_yaml_mapping(path, what="policy")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(f"policy file {path}: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(fields_at(tuple(err["loc"][:-1])))
        return f"unknown field '{field}'; allowed here: {allowed}"
    if err["type"] == "missing":
        return f"field '{field}' is required"
    message = err["msg"].removeprefix("Value error, ")
    if not err["loc"]:  # a rule across several fields: the message names them
        return message
    return f"field '{field}' = {err.get('input')!r}: {message}"


def fields_at(loc: tuple) -> list[str]:
    """Field names of the model found by following `loc` from Policy (for error messages)."""
    model: type[BaseModel] = Policy
    for part in loc:
        if not isinstance(part, str) or part not in model.model_fields:
            continue  # a dict key (a category name): its value is the model already reached
        annotation = model.model_fields[part].annotation
        nested = [a for a in (annotation, *getattr(annotation, "__args__", ())) if _is_model(a)]
        if not nested:
            return []
        model = nested[-1]
    return list(model.model_fields)


def _is_model(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)
