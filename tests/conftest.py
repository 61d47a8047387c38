"""Shared fixtures: small node directories built from the real bundled data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from client_node.node import NodeConfig, write_node_config
from client_node.table import write_table
from policies.loader import default_policy_path
from simulations.datasets import load_dataset
from simulations.split import split_families


@pytest.fixture(scope="session")
def nhes_tables():
    return load_dataset("nhes-pfi-2019")


def make_node(root: Path, school_id: str, table, *, policy_text: str | None = None) -> Path:
    node_dir = root / school_id
    train, test = split_families(table, test_fraction=0.2, seed=0)
    write_table(train, node_dir / "data" / "train.csv")
    write_table(test, node_dir / "data" / "test.csv")
    if policy_text is None:
        shutil.copyfile(default_policy_path(), node_dir / "policy.yaml")
    else:
        (node_dir / "policy.yaml").write_text(policy_text)
    write_node_config(node_dir, NodeConfig(school_id=school_id))
    return node_dir


@pytest.fixture
def west_town(tmp_path, nhes_tables) -> Path:
    """A real school of 240 families (192 to train on)."""
    return make_node(tmp_path, "west-town", nhes_tables["west-town"])
