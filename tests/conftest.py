"""Shared fixtures: small node directories built from the real bundled data."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from client_node.node import NodeConfig, install_policy, write_family_tables, write_node_config
from policies.loader import default_policy_path
from privacy.signing import generate_keypair, sign_file
from simulations.datasets import load_dataset
from simulations.split import split_families


@pytest.fixture(scope="session")
def nhes_tables():
    return load_dataset("nhes-pfi-2019")


@pytest.fixture(scope="session")
def officer(tmp_path_factory) -> tuple[Path, Path]:
    """A test privacy officer's key pair (private key, public key)."""
    return generate_keypair(tmp_path_factory.mktemp("officer"), name="officer")


def signed_policy(folder: Path, text: str, key: Path) -> Path:
    path = folder / "policy.yaml"
    path.write_text(text)
    sign_file(path, key=key)
    return path


def current_policy_text() -> str:
    """The shipped district policy, with validity dates around today (the shipped file is
    valid for one school year; tests must not depend on the day they run)."""
    today = date.today()
    text = default_policy_path().read_text()
    text = text.replace("valid_from: 2026-08-01", f"valid_from: {today - timedelta(days=30)}")
    return text.replace("valid_until: 2027-07-31", f"valid_until: {today + timedelta(days=300)}")


def make_node(
    root: Path,
    school_id: str,
    table,
    *,
    officer: tuple[Path, Path],
    policy_text: str | None = None,
) -> Path:
    """A node directory with real families and `policy_text` (default: the district policy,
    valid today) signed by the test `officer`."""
    node_dir = root / school_id
    train, test = split_families(table, test_fraction=0.2, seed=0)
    write_node_config(node_dir, NodeConfig(school_id=school_id))
    write_family_tables(node_dir, train=train, test=test)
    folder = root / f"{school_id}-policy"
    folder.mkdir(exist_ok=True)
    policy = signed_policy(folder, policy_text or current_policy_text(), officer[0])
    install_policy(node_dir, policy=policy, trust_anchor=officer[1])
    return node_dir


@pytest.fixture
def west_town(tmp_path, nhes_tables, officer) -> Path:
    """A real school of 240 families (192 to train on), under the district policy."""
    return make_node(tmp_path, "west-town", nhes_tables["west-town"], officer=officer)
