"""A real 2-round federated simulation on a small subset of the real NHES data."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from flwr.app import ArrayRecord
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import Key
from flwr.common.serde import recorddict_to_proto

from aggregator.registry import load_model
from client_node.node import node_audit_log
from client_node.table import read_table
from federation import keys, secagg
from privacy.crypto import sha256_hex
from tests.conftest import current_policy_text, signed_policy
from tests.integration import capture
from tests.privacy import rdp_reference

SCHOOLS = ("west-town", "west-rural", "northeast-rural")
FAMILIES = 150


@pytest.fixture(scope="module")
def policy(tmp_path_factory, officer):
    """The district policy, valid today, signed by the test officer."""
    return signed_policy(tmp_path_factory.mktemp("policy"), current_policy_text(), officer[0])


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, policy, officer):
    out = tmp_path_factory.mktemp("sim")
    captured = tmp_path_factory.mktemp("captured")
    args = [str(out), str(captured), "2", "3", ",".join(SCHOOLS), str(FAMILIES)]
    args += [str(policy), str(officer[1])]
    run = subprocess.run(
        [sys.executable, "-m", "tests.integration.capture", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = json.loads((out / "report.json").read_text())
    return out, report, capture.load(captured)


def test_the_report_has_every_round_and_school(first_run):
    out, report, _ = first_run
    on_disk = report
    assert on_disk["dataset"] == "nhes-pfi-2019"
    assert [r["round"] for r in on_disk["rounds"]] == [1, 2]
    for r in on_disk["rounds"]:
        assert 0.5 < r["auc"] <= 1 and 0 < r["accuracy"] <= 1 and r["loss"] > 0
    assert [s["school_id"] for s in on_disk["schools"]] == list(SCHOOLS)
    assert {s["n_families"] for s in on_disk["schools"]} == {120}  # 150 minus 20 % held out
    assert on_disk["test_split"]["families"] == 90
    final = on_disk["final"]
    assert 0.5 < final["federated"]["auc"] <= 1
    assert 0.5 < final["centralized"]["auc"] <= 1
    assert final["local_only"]["auc_mean"] is not None
    assert (out / "report.md").read_text().startswith("# SchoolFed run")
    # the district policy requires SecAgg+, and the report says it was on
    assert on_disk["secure_aggregation"]["on"] is True
    assert on_disk["secure_aggregation"]["max_weight"] == 120
    assert [r["secagg"] for r in on_disk["rounds"]] == [
        {"schools": 3, "trained": 3, "dropped": 0, "clipped_share": 0.0, "failed": ""}
    ] * 2
    assert "Secure aggregation: **on** (Flower's SecAgg+)" in (out / "report.md").read_text()
    assert (out / "auc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    weights, features, meta = load_model(out / "model.npz")
    assert weights["weight"].shape == (1, len(features)) and meta["rounds"] == 2


def test_every_school_stays_within_budget_and_its_epsilon_recomputes(first_run):
    _, report, _ = first_run
    for school in report["schools"]:
        assert school["status"] == "trained"
        assert school["epsilon_spent"] <= school["epsilon_budget"] == 3.0
        assert school["steps"] == 2 * 2 * 2  # 2 rounds × 2 local epochs × 2 batches
        recomputed = rdp_reference.epsilon(
            [(school["noise_multiplier"], school["sample_rate"], school["steps"])],
            delta=school["delta"],
        )
        assert school["epsilon_spent"] == pytest.approx(recomputed, rel=0.03)
        assert school["epsilon_spent"] > 2.95  # the budget is used, not wasted


def test_nothing_a_client_sends_carries_a_family(first_run):
    out, _, messages = first_run
    # the district policy requires SecAgg+: 4 protocol stages + evaluate, 2 rounds
    assert len(messages) == len(SCHOOLS) * 2 * (4 + 1)
    raw = pd.read_csv("simulations/datasets/data/nhes-2019-pfi/CuratedData.csv", usecols=["BASMID"])
    family_ids: list[str] = []
    rows: list[np.ndarray] = []
    sizes: dict[str, tuple[int, int]] = {}
    for school in SCHOOLS:
        train = read_table(out / "nodes" / school / "data" / "train.csv")
        test = read_table(out / "nodes" / school / "data" / "test.csv")
        sizes[school] = (len(train), len(test))
        for table in (train, test):
            family_ids.extend(table.family_ids.tolist())
            rows.extend(table.features)
    # the node's tables hold pseudonyms; the survey's own ids (BASMID) never reach a node
    assert all(len(f) == 32 and int(f, 16) >= 0 for f in family_ids)
    basmids = raw["BASMID"].to_numpy()
    on_disk = b"".join(
        p.read_bytes() for school in SCHOOLS for p in (out / "nodes" / school).rglob("*.csv")
    )
    assert not any(str(b).encode() in on_disk for b in basmids)
    raw_forms = [
        form for b in basmids
        for form in (str(b).encode(), np.int64(b).tobytes(), np.float64(b).tobytes())
    ]  # fmt: skip
    masked = 0
    for data, message in messages:
        assert not message.has_error()
        assert not any(form in data for form in raw_forms)
        for fid in family_ids:
            assert fid.encode() not in data
        for row in rows:
            assert row.astype(np.float32).tobytes() not in data
            assert row.astype(np.float64).tobytes() not in data
        if secagg.SECAGG_RECORD in message.content:  # a SecAgg+ stage: no unmasked array
            assert set(message.content.keys()) <= secagg.SECAGG_REPLY_RECORDS
            assert all(len(r) == 0 for r in message.content.values() if isinstance(r, ArrayRecord))
            stage = message.content[secagg.SECAGG_RECORD]
            if Key.MASKED_PARAMETERS not in stage:
                continue
            masked += 1
            plain = message.content[secagg.FITRES_METRICS]
            assert set(plain.keys()) == keys.TRAIN_METRICS | keys.STATUS_KEYS
            n_train, _ = sizes[plain["school-id"]]
            assert plain[keys.NUM_EXAMPLES] == n_train
            assert message.content[secagg.FITRES_NUM_EXAMPLES]["num_examples"] == n_train
            vector = [bytes_to_ndarray(b) for b in stage[Key.MASKED_PARAMETERS]]
            assert [v.shape for v in vector] == [(1,), (1, len(rows[0])), (1,), (1,)]
            continue
        assert set(message.content.keys()) <= {keys.ARRAYS, keys.METRICS, keys.STATUS}
        status = message.content[keys.STATUS]
        n_train, n_test = sizes[status["school-id"]]
        metrics = message.content[keys.METRICS]
        assert keys.ARRAYS not in message.content
        assert set(metrics.keys()) == keys.EVALUATE_METRICS
        assert metrics[keys.NUM_EXAMPLES] == n_test
    assert masked == len(SCHOOLS) * 2


def ray_processes() -> set[int]:
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return {
        int(line.split(None, 1)[0])
        for line in ps.splitlines()
        if "raylet" in line or "gcs_server" in line or "ray::" in line
    }


def test_every_school_audit_log_verifies_and_records_what_left(first_run, policy):
    out, report, messages = first_run
    for school in SCHOOLS:
        log = node_audit_log(out / "nodes" / school)
        assert log.verify().ok
        egress = [e["data"] for e in log.entries() if e["kind"] == "egress"]
        # SecAgg+: four training stages (keys, shares, masked vector, unmasking shares)
        assert [e["message_type"] for e in egress] == (["train"] * 4 + ["evaluate"]) * 2
        # every reply with a status names its policy (key-exchange stages carry no status)
        assert all(
            e["policy_id"] == "district-default" and e["policy_version"] == "1"
            for e in egress
            if e["status"]
        )
        assert sum(1 for e in egress if e["status"]) == 2 * 2  # masked vector + evaluate
        sent = {sha256_hex(recorddict_to_proto(m.content).SerializeToString()) for _, m in messages}
        assert {e["sha256"] for e in egress} <= sent  # the log names exactly what was sent
        trained = [e for e in egress if e.get("secagg_keys") == [Key.MASKED_PARAMETERS]]
        assert trained[-1]["epsilon_spent"] == pytest.approx(
            next(s for s in report["schools"] if s["school_id"] == school)["epsilon_spent"]
        )


def test_running_again_continues_each_ledger_and_refuses_clearly(first_run, policy, officer):
    out, report, _ = first_run
    ray_before = ray_processes()
    result = subprocess.run(
        [
            sys.executable, "-m", "cli.main", "simulate", "--rounds", "2", "--seed", "3",
            "--out", str(out), "--schools", ",".join(SCHOOLS),
            "--families-per-school", str(FAMILIES), "--policy", str(policy),
            "--pubkey", str(officer[1]),
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # finished, but no school could train
    again = json.loads((out / "report.json").read_text())
    assert again["run_id"] != report["run_id"]
    before = {s["school_id"]: s["epsilon_spent"] for s in report["schools"]}
    for school in again["schools"]:
        assert school["status"] == "refused"
        assert "remains" in school["reason"] and "budget 3.0000" in school["reason"]
        refusals = [
            e for e in node_audit_log(out / "nodes" / school["school_id"]).entries()
            if e["kind"] == "refusal"
        ]  # fmt: skip
        assert refusals and "remains" in refusals[-1]["data"]["reason"]
        assert school["epsilon_spent"] == pytest.approx(before[school["school_id"]])
        assert school["epsilon_spent"] <= 3.0
        assert school["steps"] == 0
    assert "refused" in result.stdout
    assert "secure aggregation (SecAgg+): on" in result.stdout
    assert again["stopped_early"] == "no school can train from round 1 on"
    assert again["final"]["federated"]["auc"] is None  # nothing trained...
    weights, _, meta = load_model(out / "model.npz")
    assert meta["run_id"] == report["run_id"]  # ...so the first run's model is kept
    assert (out / "runs" / report["run_id"] / "report.json").is_file()
    # the command stopped every Ray process it started
    deadline = time.monotonic() + 10
    while (left := ray_processes() - ray_before) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == set()
