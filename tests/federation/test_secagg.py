"""SecAgg+ training rounds on Flower's simulation engine, with real schools.

One run (in its own process) of 5 schools × 3 rounds under the district policy:
- round 1: school 0 crashes at the masked-vector stage (within the reconstruction threshold);
- round 2: schools 0, 1 and 2 crash there (below it: the round fails);
- round 3: school 1 is down when the round starts (it fails the setup stage); the others
  go on (Flower 1.42 alone would lose this round: see federation/secagg_server.py).
School 4's policy was changed after signing: it declines every round and says why.
Twins of schools 0–3 (same families, same seed, a policy without SecAgg+) answer the same
round 1 through the plain path in this process, so both aggregates start from the same updates.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import Key

from client_node.node import SchoolNode, node_audit_log
from client_node.table import read_table
from federation import keys, secagg
from federation.client_app import PLAIN_UPDATE_REFUSED, build_client_app, weights_to_arrays
from federation.server_app import RunSettings, train_config
from federation.strategy import SchoolFedAvg
from tests.conftest import current_policy_text, make_node
from tests.integration import capture

SCHOOLS = {"west-town": 100, "west-rural": 120, "northeast-rural": 90, "south-town": 150}
BROKEN = "northeast-town"  # its policy file changes after signing
ROUNDS, SEED = 3, 11
DROP = {"1": [0], "2": [0, 1, 2]}
DROP_AT_SETUP = {"3": [1]}


def _message(content: RecordDict, *, node: int, group: str = "1") -> Message:
    metadata = Metadata(
        run_id=1, message_id=f"m{node}", src_node_id=0, dst_node_id=node,
        reply_to_message_id="", group_id=group, created_at=time.time(), ttl=3600,
        message_type="train",
    )  # fmt: skip
    return Message(content=content, metadata=metadata)


def _context(node_dir: Path, node: int) -> Context:
    return Context(
        run_id=1, node_id=node, node_config={"node-dir": str(node_dir)}, state=RecordDict(),
        run_config={},
    )  # fmt: skip


def _plain_request(n_features: int, *, node: int) -> Message:
    settings = RunSettings(
        run_id="plain", num_rounds=ROUNDS, n_features=n_features, num_schools=4, seed=SEED
    )
    config = train_config(settings)
    config["server-round"] = 1
    zeros = {"weight": np.zeros((1, n_features), np.float32), "bias": np.zeros(1, np.float32)}
    content = RecordDict({keys.ARRAYS: weights_to_arrays(zeros), keys.CONFIG: config})
    return _message(content, node=node)


@pytest.fixture(scope="module")
def run(tmp_path_factory, nhes_tables, officer):
    root = tmp_path_factory.mktemp("secagg")
    plain_policy = current_policy_text().replace(
        "secure_aggregation_required: true", "secure_aggregation_required: false"
    )
    nodes, twins = [], []
    for school, families in SCHOOLS.items():
        table = nhes_tables[school].iloc[:families].reset_index(drop=True)
        nodes.append(make_node(root / "nodes", school, table, officer=officer))
        twins.append(
            make_node(root / "twins", school, table, officer=officer, policy_text=plain_policy)
        )
    broken = make_node(root / "nodes", BROKEN, nhes_tables[BROKEN], officer=officer)
    with (broken / "policy.yaml").open("a") as fh:
        fh.write("# one more line\n")
    nodes.append(broken)
    n_features = len(read_table(nodes[0] / "data" / "train.csv").feature_names)
    sizes = [len(read_table(n / "data" / "train.csv")) for n in nodes[:4]]
    spec = {
        "nodes": [str(n) for n in nodes], "out": str(root / "out"), "rounds": ROUNDS,
        "seed": SEED, "max_weight": max(sizes), "drop": DROP, "drop_at_setup": DROP_AT_SETUP, "n_features": n_features,
    }  # fmt: skip
    (root / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run(
        [sys.executable, "-m", "tests.federation.secagg_run", str(root / "spec.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = root / "out"
    outcome = json.loads((out / "outcome.json").read_text())
    models = {r: dict(np.load(out / f"round-{r}.npz")) for r in range(1, ROUNDS + 1)}
    return {
        "nodes": nodes, "twins": twins, "sizes": sizes, "n_features": n_features,
        "outcome": outcome, "models": models, "messages": capture.load(out / "captured"),
    }  # fmt: skip


def _masked_replies(messages, *, group: str) -> dict[str, list[np.ndarray]]:
    """school id -> the masked vector it sent in round `group`."""
    found = {}
    for _, m in messages:
        stage = m.content.get(secagg.SECAGG_RECORD)
        if m.metadata.group_id == group and stage is not None and Key.MASKED_PARAMETERS in stage:
            sid = m.content[secagg.FITRES_METRICS]["school-id"]
            found[sid] = [bytes_to_ndarray(b) for b in stage[Key.MASKED_PARAMETERS]]
    return found


@pytest.fixture(scope="module")
def plain_round_1(run):
    """The same round 1 through the plain path: the twins' replies and Flower's FedAvg of the
    ones that trained (school 0 dropped out of SecAgg+'s round 1, so it is left out here)."""
    app = build_client_app()
    replies = [
        app(_plain_request(run["n_features"], node=i + 1), _context(twin, i + 1))
        for i, twin in enumerate(run["twins"])
    ]
    for reply in replies:
        assert not reply.has_error() and reply.content[keys.STATUS]["status"] == "trained"
    strategy = SchoolFedAvg(min_available_nodes=4)
    arrays, _ = strategy.aggregate_train(1, replies[1:])
    updates = {
        reply.content[keys.STATUS]["school-id"]: {
            k: v.numpy() for k, v in reply.content[keys.ARRAYS].items()
        }
        for reply in replies
    }
    return {k: v.numpy() for k, v in arrays.items()}, updates


def test_securely_aggregated_model_equals_plain_fedavg_within_quantization(run, plain_round_1):
    fedavg, _ = plain_round_1
    secure = run["models"][1]
    trained = run["sizes"][1:]
    bound = secagg.quantization_error_bound(
        schools=4,  # three that trained and the broken school's zero vector
        update_bound=secagg.DEFAULT_UPDATE_BOUND,
        max_weight=max(run["sizes"]),
        total_weight=sum(trained),
    )
    assert bound < 1e-5
    for name in ("weight", "bias"):
        gap = np.abs(secure[name].astype(np.float64) - fedavg[name].astype(np.float64)).max()
        assert gap <= bound + 1e-6, (name, gap, bound)  # + float32 rounding of both models
    assert np.abs(secure["weight"]).max() > 0.05  # a real model moved, not zeros on both sides


def test_what_the_server_receives_from_a_school_is_masked(run, plain_round_1):
    _, updates = plain_round_1
    masked = _masked_replies(run["messages"], group="1")
    assert set(masked) == set(list(SCHOOLS)[1:]) | {BROKEN}  # school 0 dropped before sending
    xs, ys = [], []
    for school in list(SCHOOLS)[1:]:
        vector = masked[school]
        # the weight factor, the two model arrays and the clipped share, all masked
        assert [v.shape for v in vector] == [(1,), (1, run["n_features"]), (1,), (1,)]
        update = updates[school]["weight"].astype(np.float64).ravel()  # from zeros: the delta
        values = vector[1].astype(np.float64).ravel()
        # a quantized update lies in [0, 2^22]; masked values spread over [0, 2^32)
        assert values.max() > 2**26 and not np.allclose(values, update)
        xs.append(values)
        ys.append(update)
    r = np.corrcoef(np.concatenate(xs), np.concatenate(ys))[0, 1]
    assert abs(r) < 0.4, r
    for data, message in run["messages"]:
        for school in list(SCHOOLS)[1:]:
            for arr in updates[school].values():
                assert arr.astype(np.float32).tobytes() not in data
                assert arr.astype(np.float64).tobytes() not in data
        if secagg.FITRES_METRICS in message.content:
            plain = set(message.content[secagg.FITRES_METRICS].keys())
            assert plain <= keys.TRAIN_METRICS | keys.STATUS_KEYS
            assert len(message.content[secagg.FITRES_ARRAYS]) == 0  # nothing unmasked


def test_a_round_survives_a_dropout_within_the_threshold(run):
    rounds = run["outcome"]["secagg_rounds"]
    assert rounds["1"] == {
        "schools": 4, "trained": 3, "dropped": 1, "clipped_share": 0.0, "failed": "",
    }  # fmt: skip
    assert np.abs(run["models"][1]["weight"]).max() > 0


def test_below_the_threshold_the_round_fails_cleanly_and_the_next_goes_on(run):
    outcome, models = run["outcome"], run["models"]
    failed = outcome["secagg_rounds"]["2"]["failed"]
    assert "halted at the masked-vectors stage: 2 of 5 schools" in failed
    assert "need 3" in failed
    for name in ("weight", "bias"):
        assert np.array_equal(models[2][name], models[1][name])  # the model did not move
        assert not np.array_equal(models[3][name], models[2][name])  # round 3 trained
    assert outcome["secagg_rounds"]["3"]["trained"] == 3  # school 1 was down at setup
    assert outcome["secagg_rounds"]["3"]["failed"] == ""
    assert sorted(outcome["federated"]) == ["1", "2", "3"]  # evaluation went on every round
    schools = outcome["schools"]
    first = list(SCHOOLS)
    assert schools[first[0]]["rounds_trained"] == 1  # dropped in rounds 1 and 2
    assert schools[first[1]]["rounds_trained"] == 1  # round 2: never sent; round 3: down
    assert schools[first[3]]["rounds_trained"] == 2  # its round-2 update was lost with the round
    # the lost round still cost school 3 its ε: the ledger charges before training
    assert (
        schools[first[3]]["metrics"]["epsilon-spent"]
        > schools[first[1]]["metrics"]["epsilon-spent"]
    )


def test_a_school_whose_policy_fails_declines_and_the_district_records_why(run):
    broken = run["outcome"]["schools"][BROKEN]
    assert broken["status"] == "failed"
    assert "signature" in broken["reason"]
    assert broken["rounds_trained"] == 0


def test_every_secagg_message_a_school_sent_is_in_its_audit_log(run):
    node = run["nodes"][1]
    audit = node_audit_log(node)
    assert audit.verify().ok
    egress = [e["data"] for e in audit.entries() if e["kind"] == "egress"]
    stages = [e.get("secagg_keys") for e in egress if e["message_type"] == "train"]
    one_round = [["pk1", "pk2"], ["ctxts", "dsts"], ["masked_params"], ["nids", "shares"]]
    # round 1 complete; round 2 two stages, then it crashed; round 3: down at setup, nothing
    assert stages == one_round + one_round[:2]
    masked = [e for e in egress if e.get("secagg_keys") == ["masked_params"]]
    assert all(e["status"] == "trained" and e["epsilon_spent"] > 0 for e in masked)


def test_a_school_under_a_secagg_policy_refuses_a_plain_update(run, tmp_path, nhes_tables, officer):
    node_dir = make_node(tmp_path, "west-town", nhes_tables["west-town"], officer=officer)
    reply = build_client_app()(_plain_request(run["n_features"], node=1), _context(node_dir, 1))
    assert not reply.has_error()
    assert keys.ARRAYS not in reply.content
    status = reply.content[keys.STATUS]
    assert (status["status"], status["reason"]) == ("refused", PLAIN_UPDATE_REFUSED)
    assert reply.content[keys.METRICS]["epsilon-spent"] == 0.0
    assert SchoolNode(node_dir).ledger.spent() == 0.0  # nothing was trained or spent
    refusals = [e for e in node_audit_log(node_dir).entries() if e["kind"] == "refusal"]
    assert refusals[-1]["data"]["reason"] == PLAIN_UPDATE_REFUSED


def test_the_guard_stops_unmasked_arrays_in_a_secagg_reply():
    from federation.egress import check_reply

    request = _message(RecordDict({secagg.SECAGG_RECORD: ConfigRecord({})}), node=1)
    leaking = RecordDict(
        {
            secagg.FITRES_ARRAYS: weights_to_arrays({"w": np.ones(3, np.float32)}),
            secagg.SECAGG_RECORD: ConfigRecord({Key.MASKED_PARAMETERS: [b"x"]}),
        }
    )
    assert "unmasked arrays" in check_reply(request, Message(leaking, reply_to=request))
    extra = RecordDict({secagg.SECAGG_RECORD: ConfigRecord({"rows": "F-1"})})
    assert "'rows'" in check_reply(request, Message(extra, reply_to=request))


def test_updates_are_clipped_to_the_bound_and_scaled_into_the_clipping_range():
    update = {"weight": np.array([[0.5, -5.0, 3.9, 4.1]]), "bias": np.array([-0.25])}
    vector, share = secagg.encode_update(update, names=["weight", "bias"], bound=4.0, scale=2.0)
    assert share == pytest.approx(2 / 5)
    assert np.allclose(vector[0], [[1.0, -8.0, 7.8, 8.0]]) and np.allclose(vector[1], [-0.5])
    delta, clipped = secagg.decode_aggregate(vector, names=["weight", "bias"], scale=2.0)
    assert np.allclose(delta["weight"], [[0.5, -4.0, 3.9, 4.0]]) and clipped == pytest.approx(0.4)


def test_the_guard_lets_the_incoming_models_evaluation_pass_beside_the_masked_vector():
    from federation.egress import check_reply

    request = _message(RecordDict({secagg.SECAGG_RECORD: ConfigRecord({})}), node=1)
    plain = {"school-id": "s", "status": "trained", "reason": "", keys.NUM_EXAMPLES: 10}
    fused = {**plain, keys.EVAL_PREFIX + "auc": 0.7, keys.EVAL_PREFIX + keys.NUM_EXAMPLES: 5}
    reply = RecordDict({secagg.FITRES_METRICS: ConfigRecord(fused)})
    assert check_reply(request, Message(reply, reply_to=request)) is None
    leaking = RecordDict({secagg.FITRES_METRICS: ConfigRecord({**plain, "eval-rows": 3})})
    assert "'eval-rows'" in check_reply(request, Message(leaking, reply_to=request))
