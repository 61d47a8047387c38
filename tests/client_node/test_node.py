import numpy as np
import pytest

from client_node.errors import NodeError
from client_node.model import build_model, get_weights
from client_node.node import RoundStatus, SchoolNode
from client_node.training import TrainSettings, poisson_schedule
from privacy.accountant import Spend, epsilon_of
from tests.conftest import current_policy_text, make_node
from tests.privacy import rdp_reference

SETTINGS = TrainSettings(local_epochs=1, batch_size=64)


def zero_weights(node: SchoolNode):
    return get_weights(build_model(len(node.train_table().feature_names)))


def train(node, run_id, server_round=1, rounds=2, target=0.0):
    return node.train_round(
        weights=zero_weights(node),
        run_id=run_id,
        server_round=server_round,
        planned_rounds=rounds,
        target_epsilon=target,
        settings=SETTINGS,
        seed=1,
    )


def test_a_round_trains_and_charges_the_ledger_first(west_town):
    node = SchoolNode(west_town)
    outcome = train(node, "run-1")
    assert outcome.status == RoundStatus.TRAINED
    assert outcome.n_families == 192
    q, steps = poisson_schedule(192, SETTINGS)
    assert (outcome.sample_rate, outcome.steps) == (q, steps) == (1 / 3, 3)
    # ε reported equals ε recomputed independently from σ, q and the steps charged.
    recomputed = rdp_reference.epsilon([(outcome.noise_multiplier, q, steps)], delta=7.5e-6)
    assert outcome.epsilon_spent == pytest.approx(recomputed, rel=0.03)
    assert node.ledger.history() == [Spend(outcome.noise_multiplier, q, steps)]
    assert outcome.weights is not None
    assert set(outcome.weights) == {"weight", "bias"}
    assert np.abs(outcome.weights["weight"]).sum() > 0


def test_the_planned_rounds_spend_exactly_the_budget(west_town):
    node = SchoolNode(west_town)
    first = train(node, "run-1", 1)
    second = train(node, "run-1", 2)
    assert first.noise_multiplier == second.noise_multiplier  # σ fixed once for the run
    assert second.steps == 6
    assert 2.98 < second.epsilon_spent <= 3.0
    # a third round was not planned: the budget has no room for it
    third = train(node, "run-1", 3)
    assert third.status == RoundStatus.REFUSED
    assert "remains" in third.reason and "3.0000" in third.reason
    assert len(node.ledger.history()) == 2


def test_a_new_run_gets_only_what_remains(west_town):
    node = SchoolNode(west_town)
    train(node, "run-1", 1, rounds=1, target=1.0)
    spent_1 = node.ledger.spent()
    assert 0.98 < spent_1 <= 1.0
    again = SchoolNode(west_town)  # a restart: everything comes from disk
    outcome = train(again, "run-2", 1, rounds=1)
    assert outcome.status == RoundStatus.TRAINED
    assert 2.98 < outcome.epsilon_spent <= 3.0
    refused = train(SchoolNode(west_town), "run-3", 1, rounds=1)
    assert refused.status == RoundStatus.REFUSED
    assert refused.weights is None
    assert f"budget {3.0:.4f}" in refused.reason
    assert refused.epsilon_spent == pytest.approx(outcome.epsilon_spent)
    assert epsilon_of(again.ledger.history(), delta=7.5e-6) <= 3.0


def test_a_school_below_the_minimum_size_is_excluded(tmp_path, nhes_tables, officer):
    node_dir = make_node(tmp_path, "tiny", nhes_tables["northeast-town"].head(40), officer=officer)
    node = SchoolNode(node_dir)
    outcome = train(node, "run-1")
    assert outcome.status == RoundStatus.EXCLUDED
    assert "40 families is below the policy's minimum school size 50" in outcome.reason
    assert node.ledger.history() == []
    assert node.evaluate(weights=zero_weights(node)) is None


def test_too_many_rounds_are_refused(west_town):
    outcome = train(SchoolNode(west_town), "run-1", rounds=51)
    assert outcome.status == RoundStatus.REFUSED
    assert "at most 50" in outcome.reason


def test_a_node_directory_without_config_is_an_error(tmp_path):
    with pytest.raises(NodeError, match="node.yaml not found"):
        SchoolNode(tmp_path)


def test_a_node_refuses_an_invalid_policy(tmp_path, nhes_tables, officer):
    text = current_policy_text().replace("epsilon: 4.0", "epsilon: .nan")
    node_dir = make_node(tmp_path, "s", nhes_tables["west-town"], policy_text=text, officer=officer)
    with pytest.raises(Exception, match="field 'budget.epsilon'"):
        SchoolNode(node_dir)


def test_evaluation_reports_aggregates_only(west_town):
    node = SchoolNode(west_town)
    result = node.evaluate(weights=zero_weights(node))
    assert result.n == 48
    assert result.accuracy == pytest.approx(
        node.test_table().labels.mean()
    )  # 0.5 counts as at risk
    assert result.auc == 0.5  # a zero model scores every family the same
