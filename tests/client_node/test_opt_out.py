"""A family that opts out leaves no trace in what the node sends: the canary test."""

import numpy as np
import pandas as pd
import pytest

from cli.main import main
from client_node.model import build_model, get_weights
from client_node.node import SchoolNode
from client_node.pseudonym import Pseudonymizer
from client_node.training import TrainSettings
from tests.conftest import make_node

CANARY = "canary-0001"  # planted among the training families
CANARY_TEST = "canary-0002"  # planted among the held-out families
SETTINGS = TrainSettings(local_epochs=2, batch_size=64)


def plant(node_dir, family_id: str, table_name: str) -> None:
    """Add a family with extreme values (every feature 1, at risk) to one of the node's tables."""
    path = node_dir / "data" / table_name
    frame = pd.read_csv(path, dtype={"family_id": str})
    canary = frame.iloc[[0]].copy()
    canary["family_id"] = Pseudonymizer.for_node(node_dir)("family", family_id)  # as ingested
    canary["at_risk"] = 1
    canary[[c for c in frame.columns if c not in ("family_id", "at_risk")]] = 1.0
    pd.concat([frame, canary], ignore_index=True).to_csv(path, index=False)


def train_and_evaluate(node_dir):
    node = SchoolNode(node_dir)
    weights = get_weights(build_model(len(node.train_table().feature_names)))
    outcome = node.train_round(
        weights=weights, run_id="run-1", server_round=1, planned_rounds=1,
        target_epsilon=0.0, settings=SETTINGS, seed=11,
    )  # fmt: skip
    return outcome, node.evaluate(weights=outcome.weights)


@pytest.fixture
def canary_nodes(tmp_path, nhes_tables, officer):
    table = nhes_tables["west-town"]
    opted_out, planted, never_there = (
        make_node(tmp_path / name, "west-town", table, officer=officer) for name in "abc"
    )
    for node_dir in (opted_out, planted):
        plant(node_dir, CANARY, "train.csv")
        plant(node_dir, CANARY_TEST, "test.csv")
    for node_dir in (opted_out, never_there):  # rewrite alike: same bytes, same floats
        for name in ("train.csv", "test.csv"):
            path = node_dir / "data" / name
            pd.read_csv(path, dtype={"family_id": str}).to_csv(path, index=False)
    for family in (CANARY, CANARY_TEST):
        assert main(["node", "opt-out", family, "--node-dir", str(opted_out)]) == 0
    return opted_out, planted, never_there


def test_an_opted_out_family_changes_nothing_the_node_sends(canary_nodes):
    opted_out, planted, never_there = canary_nodes
    out_update, out_eval = train_and_evaluate(opted_out)
    ref_update, ref_eval = train_and_evaluate(never_there)
    # bit for bit the update of a school that never had the family
    for key in ref_update.weights:
        assert np.array_equal(out_update.weights[key], ref_update.weights[key])
    assert out_update.n_families == ref_update.n_families
    assert out_update.epsilon_spent == ref_update.epsilon_spent
    assert out_update.train_loss == ref_update.train_loss
    assert out_eval == ref_eval
    # and the test is sensitive: with the canary in, the node sends something else
    in_update, in_eval = train_and_evaluate(planted)
    assert in_update.n_families == ref_update.n_families + 1
    assert not np.array_equal(in_update.weights["weight"], ref_update.weights["weight"])
    assert in_eval.n == ref_eval.n + 1


def test_opting_out_is_audited_without_the_family_id(canary_nodes):
    opted_out = canary_nodes[0]
    node = SchoolNode(opted_out)
    entries = node.audit.entries()
    assert [e["kind"] for e in entries if e["kind"].startswith("opt")] == ["opt-out"] * 2
    assert "canary" not in node.audit.path.read_text()
    pid = node.pseudonym
    assert node.opt_outs.family_ids() == {pid("family", CANARY), pid("family", CANARY_TEST)}
    assert "canary" not in (opted_out / "opt_outs.sqlite").read_bytes().decode("latin-1")
    assert main(["node", "opt-out", CANARY, "--node-dir", str(opted_out), "--undo"]) == 0
    assert SchoolNode(opted_out).opt_outs.family_ids() == {pid("family", CANARY_TEST)}


def test_an_unknown_family_cannot_be_opted_out(canary_nodes, capsys):
    opted_out = canary_nodes[0]
    assert main(["node", "opt-out", "no-such-family", "--node-dir", str(opted_out)]) == 2
    err = capsys.readouterr().err
    assert "'no-such-family' is not one of this school's families" in err
    assert len(SchoolNode(opted_out).opt_outs.family_ids()) == 2
