"""`schoolfed simulate --dataset synthetic`: exports written, ingested at each node, features
computed there, and the same federated training, on a small synthetic district."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import current_policy_text, signed_policy


@pytest.fixture(scope="module")
def run(tmp_path_factory, officer):
    out = tmp_path_factory.mktemp("synthetic")
    policy = signed_policy(tmp_path_factory.mktemp("policy"), current_policy_text(), officer[0])
    result = subprocess.run(
        [
            sys.executable, "-m", "cli.main", "simulate", "--dataset", "synthetic",
            "--synthetic", "3", "90", "16", "--rounds", "2", "--seed", "5", "--out", str(out),
            "--policy", str(policy), "--pubkey", str(officer[1]),
        ],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out, json.loads((out / "report.json").read_text()), result.stdout


def test_every_school_was_ingested_and_trained(run):
    out, report, stdout = run
    assert report["dataset"] == "synthetic"
    assert [s["school_id"] for s in report["schools"]] == ["school-01", "school-02", "school-03"]
    assert all(s["status"] == "trained" and s["epsilon_spent"] <= 3.0 for s in report["schools"])
    for school in report["schools"]:
        node = out / "nodes" / school["school_id"]
        assert (node / "store.sqlite").is_file()
        train = pd.read_csv(node / "data" / "train.csv")
        assert len(train) == school["n_families"]
        assert train["family_id"].str.fullmatch(r"[0-9a-f]{32}").all()  # pseudonyms only
    assert "Disengagement" in stdout


def test_the_report_compares_the_model_with_the_rule_of_thumb_and_the_truth(run):
    _, report, _ = run
    d = report["disengagement"]
    assert d["families"] == report["test_split"]["families"]
    assert d["rule_of_thumb"] == "no school event attended in the last 4 weeks"
    assert 0 <= d["model_auc"] <= 1 and 0 <= d["rule_of_thumb_auc"] <= 1
    assert "ground_truth" in d and d["ground_truth"]["disengaging"] >= 0


def test_nothing_identifying_from_the_exports_is_in_any_node(run):
    out, _, _ = run
    secrets: set[bytes] = set()
    for users in (out / "exports").glob("*/users.csv"):
        frame = pd.read_csv(users, dtype=str).fillna("")
        for column in ("givenName", "familyName", "email", "sms", "phone", "sourcedId"):
            if column in frame:
                secrets |= {v.encode() for v in frame[column] if len(v) >= 6}
    for roster in (out / "exports").glob("*/roster.csv"):
        frame = pd.read_csv(roster, dtype=str).fillna("")
        for column in (
            "student_id",
            "family_id",
            "guardian_email",
            "guardian_phone",
            "guardian_name",
        ):
            if column in frame:
                secrets |= {v.encode() for v in frame[column] if len(v) >= 6}
    public = current_policy_text().encode()  # the policy names its officer, a public person
    secrets = {s for s in secrets if s not in public}
    assert len(secrets) > 100
    hexlike = re.compile(rb"[0-9a-f]+")

    def found(secret: bytes, data: bytes) -> bool:
        if not hexlike.fullmatch(secret):
            return secret in data
        # a digits-only id can turn up inside a 32-hex-digit pseudonym by chance: not a leak
        return re.search(rb"(?<![0-9a-f])" + re.escape(secret) + rb"(?![0-9a-f])", data) is not None

    for path in (out / "nodes").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            leaked = [s for s in secrets if found(s, data)]
            assert leaked == [], f"{path} holds {leaked[:3]}"
