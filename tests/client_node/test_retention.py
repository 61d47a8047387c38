"""Retention deletes what the policy no longer allows, logs it, and is safe to run daily."""

from datetime import date, timedelta

from cli.main import main
from client_node.ingest import ingest_export
from client_node.node import node_audit_log
from client_node.retention import apply_retention
from tests.client_node.test_ingest import DAY, counts, make_ingest_node, write_export
from tests.conftest import current_policy_text


def long_policy() -> str:
    """The district policy, valid long enough to look years ahead."""
    text = current_policy_text()
    start = text.index("valid_until: ")
    end = text.index("\n", start)
    return text[:start] + f"valid_until: {date.today() + timedelta(days=1500)}" + text[end:]


def test_records_past_their_retention_are_deleted_once(tmp_path, officer):
    node = make_ingest_node(tmp_path, officer, policy_text=long_policy())
    ingest_export(write_export(tmp_path / "export"), node_dir=node)
    before = counts(node)
    assert before["communications"] > 0 and before["grades"] > 0
    # 400 days on: communications (365 days) have expired, grades (730 days) have not
    later = DAY + timedelta(days=400)
    result = apply_retention(node, today=later)
    after = counts(node)
    assert after["communications"] == 0 and after["platform_activity"] == 0
    assert result.deleted["communications"] == before["communications"]
    assert after["grades"] == before["grades"] and after["events"] == before["events"]
    # the next day nothing more goes, and both runs are in the audit log (counts only)
    again = apply_retention(node, today=later + timedelta(days=1))
    assert again.total == 0
    runs = [e["data"] for e in node_audit_log(node).entries() if e["kind"] == "retention"]
    assert [r["deleted"] for r in runs] == [result.total, 0]
    assert node_audit_log(node).verify().ok


def test_a_category_the_policy_stops_allowing_is_emptied(tmp_path, officer):
    node = make_ingest_node(tmp_path, officer)
    ingest_export(write_export(tmp_path / "export"), node_dir=node)
    assert counts(node)["platform_activity"] > 0
    text = current_policy_text().replace(
        "  platform_activity:\n    enabled: true", "  platform_activity:\n    enabled: false"
    )
    node2 = make_ingest_node(tmp_path / "v2", officer, policy_text=text)
    (node / "policy.yaml").write_bytes((node2 / "policy.yaml").read_bytes())
    (node / "policy.yaml.sig").write_bytes((node2 / "policy.yaml.sig").read_bytes())
    result = apply_retention(node, today=DAY)
    assert counts(node)["platform_activity"] == 0
    assert result.cutoffs["platform_activity"].startswith("all")


def test_the_cli_runs_retention(tmp_path, officer, capsys):
    node = make_ingest_node(tmp_path, officer, policy_text=long_policy())
    ingest_export(write_export(tmp_path / "export"), node_dir=node)
    later = (DAY + timedelta(days=800)).isoformat()
    assert main(["node", "retention", "--node-dir", str(node), "--date", later]) == 0
    out = capsys.readouterr().out
    assert "grades:" in out and "row(s) deleted in all" in out
    assert counts(node)["grades"] == 0


def test_retention_still_deletes_after_the_policy_expired(tmp_path, officer):
    node = make_ingest_node(tmp_path, officer)  # valid for about a year from now
    ingest_export(write_export(tmp_path / "export"), node_dir=node)
    years_later = date.today() + timedelta(days=1200)
    result = apply_retention(node, today=years_later)
    assert result.total > 0 and counts(node)["grades"] == 0
