"""The import rules of DESIGN.md, read from the source: they stay true or this test fails."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# package -> the project packages it may import
ALLOWED = {
    "privacy": set(),
    "policies": {"privacy"},
    "client_node": {"privacy", "policies"},
    "aggregator": {"privacy", "policies"},
    "federation": {"privacy", "policies", "client_node", "aggregator"},
    "simulations": {"privacy", "policies", "client_node", "aggregator", "federation"},
    "cli": {"privacy", "policies", "client_node", "aggregator", "federation", "simulations"},
}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_imports_point_one_way():
    problems = []
    for package, allowed in ALLOWED.items():
        for path in (ROOT / package).rglob("*.py"):
            used = imports(path) & set(ALLOWED)
            for other in used - allowed - {package}:
                problems.append(f"{path.relative_to(ROOT)} imports {other}")
    assert problems == []


def test_only_federation_imports_flower_and_nothing_imports_fastapi_yet():
    for package in ALLOWED:
        for path in (ROOT / package).rglob("*.py"):
            used = imports(path)
            if package != "federation":
                assert "flwr" not in used, path
            assert "fastapi" not in used, path  # only the node API may, once it exists
