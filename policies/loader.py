"""Read a policy YAML file into a `Policy`, with one clear message for anything wrong."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from policies.errors import PolicyError
from policies.schema import Policy

DISTRICT_POLICY = "district.yaml"


def default_policy_path() -> Path:
    """The district default policy shipped in this package."""
    return Path(str(resources.files("policies").joinpath(DISTRICT_POLICY)))


def load_policy(path: Path) -> Policy:
    """Load and validate `path`. Raises PolicyError naming the file, field, value and rule."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(f"policy file {path}: not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"policy file {path}: cannot be read ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise PolicyError(f"policy file {path}{where}: not valid YAML") from None
    if not isinstance(data, dict):
        raise PolicyError(
            f"policy file {path}: expected a mapping of fields, got {type(data).__name__}"
        )
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(f"policy file {path}: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(sorted(Policy.model_fields))
        return f"unknown field '{field}'; allowed fields: {allowed}"
    if err["type"] == "missing":
        return f"field '{field}' is required"
    message = err["msg"].removeprefix("Value error, ")
    return f"field '{field}' = {err.get('input')!r}: {message}"
