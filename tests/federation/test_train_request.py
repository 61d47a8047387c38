import pytest

from client_node.errors import NodeError
from federation.client_app import TrainRequest
from federation.server_app import RunSettings, train_config


def test_the_server_config_reads_back_exactly():
    settings = RunSettings(run_id="r1", num_rounds=5, n_features=3, num_schools=2, seed=7)
    config = train_config(settings)
    config["server-round"] = 2
    request = TrainRequest.from_record(config)
    assert (request.run_id, request.server_round, request.planned_rounds) == ("r1", 2, 5)
    assert request.settings == settings.train
    assert request.seed == 7


def test_a_deployment_request_has_no_seed():
    config = train_config(RunSettings(run_id="r", num_rounds=1, n_features=3, num_schools=1))
    config["server-round"] = 1
    assert TrainRequest.from_record(config).seed is None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("learning-rate", -1.0, "'learning-rate' = -1.0"),
        ("planned-rounds", 0, "'planned-rounds' = 0"),
        ("dump-rows", 1, "'dump-rows' = 1: Extra inputs are not permitted"),
    ],
)
def test_a_bad_request_is_refused_with_its_key(key, value, message):
    config = train_config(RunSettings(run_id="r", num_rounds=1, n_features=3, num_schools=1))
    config["server-round"] = 1
    config[key] = value
    with pytest.raises(NodeError, match=message):
        TrainRequest.from_record(config)


def test_a_request_without_config_is_refused():
    with pytest.raises(NodeError, match="no config record"):
        TrainRequest.from_record(None)
