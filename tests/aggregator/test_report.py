"""The run report says whether training used secure aggregation, and what SecAgg+ did."""

from __future__ import annotations

from aggregator.report import markdown


def report(secure_aggregation: dict, secagg_rounds: list) -> dict:
    return {
        "run_id": "r1",
        "dataset": "nhes-pfi-2019",
        "policy": {
            "policy_id": "district-default", "version": 1, "training_epsilon": 3.0,
            "training_delta": 1e-5, "period": "2026-2027",
        },
        "test_split": {"families": 90, "at_risk": 12, "schools": 3},
        "final": {
            "federated": {"auc": 0.8, "accuracy": 0.9},
            "centralized": {"auc": 0.85, "accuracy": 0.9},
            "local_only": {"auc_mean": 0.7},
        },
        "rounds": [
            {"round": i + 1, "auc": 0.8, "accuracy": 0.9, "loss": 0.4, "pooled_auc": 0.8,
             "secagg": s}
            for i, s in enumerate(secagg_rounds)
        ],
        "schools": [],
        "secure_aggregation": secure_aggregation,
    }  # fmt: skip


def test_the_report_says_secure_aggregation_was_on_and_what_each_round_did():
    rounds = [
        {"schools": 5, "trained": 3, "dropped": 1, "clipped_share": 0.0, "failed": ""},
        {"schools": 0, "trained": 0, "dropped": 0, "clipped_share": None,
         "failed": "secure aggregation halted at the masked-vectors stage"},
    ]  # fmt: skip
    text = markdown(report({"on": True, "failed_rounds": {"2": rounds[1]["failed"]}}, rounds))
    assert "Secure aggregation: **on** (Flower's SecAgg+)" in text
    assert "Rounds whose aggregate was lost: 2." in text
    assert "| round | AUC (pooled) | AUC (federated eval.) | accuracy | loss | SecAgg+ |" in text
    assert "| 3 trained of 5 summed, 1 dropped |" in text
    assert "| failed: secure aggregation halted at the masked-vectors stage |" in text


def test_the_report_says_secure_aggregation_was_off():
    text = markdown(report({"on": False}, [None]))
    assert "Secure aggregation: **off** (the policy does not require it)" in text
    assert "SecAgg+ |" not in text
