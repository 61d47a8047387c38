"""`schoolfed policy ...` and `schoolfed audit ...` on the shipped files and hand-broken ones."""

from __future__ import annotations

import pytest

from cli.main import main
from policies.loader import default_policy_path, default_trust_anchor
from tests.conftest import current_policy_text, signed_policy

SCHOOLS = default_policy_path().parent / "schools"
PUB = str(default_trust_anchor())


def run(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def err_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    "path",
    [default_policy_path(), SCHOOLS / "lincoln-elementary.yaml", SCHOOLS / "riverside-high.yaml"],
)
def test_shipped_policies_verify_lint_and_explain(capsys, tmp_path, path):
    code, out, _ = run(
        capsys, "policy", "verify", str(path), "--pubkey", PUB, "--date", "2026-12-03"
    )
    assert code == 0 and "signed by the trusted key, unchanged" in out
    code, out, _ = run(capsys, "policy", "lint", str(path))
    assert code == 0 and "0 error(s)" in out
    for lang in ("en", "es"):
        target = tmp_path / f"notice-{lang}.html"
        code, _, _ = run(
            capsys,
            "policy",
            "explain",
            str(path),
            "--format",
            "html",
            "--lang",
            lang,
            "--out",
            str(target),
        )
        html = target.read_text()
        assert code == 0 and html.lower().startswith("<!doctype html>") and "<table" in html


def broken(tmp_path, old: str, new: str):
    text = current_policy_text()
    assert old in text
    path = tmp_path / "broken.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("min_cohort_k: 10", "min_cohort_k: 10\nmin_cohort: 5", "unknown field 'min_cohort'"),
        ("epsilon: 4.0", "epsilon: -1", "field 'budget.epsilon' = -1"),
        ("epsilon: 4.0", "epsilon: .nan", "field 'budget.epsilon' = nan"),
        ("delta: 1.0e-5", "delta: 1", "field 'budget.delta' = 1"),
    ],
)
def test_schema_breaks_are_one_line_and_exit_2(capsys, tmp_path, old, new, message):
    path = broken(tmp_path, old, new)
    for command in (["lint"], ["explain"], ["diff", str(default_policy_path())]):
        code, _, err = run(capsys, "policy", command[0], *command[1:], str(path))
        assert code == 2 and message in err_line(err)


@pytest.mark.parametrize(
    ("old", "new", "rule"),
    [
        ("epsilon: 4.0", "epsilon: 1.0e9", "epsilon-too-high"),
        ("min_cohort_k: 10", "min_cohort_k: 0", "k-zero"),
        ("delta: 1.0e-5", "delta: 0.5", "delta-too-high"),
    ],
)
def test_lint_errors_exit_2_with_the_rule(capsys, tmp_path, old, new, rule):
    code, out, _ = run(capsys, "policy", "lint", str(broken(tmp_path, old, new)))
    assert code == 2
    assert f"[{rule}]" in out and "error" in out


def test_a_k_below_10_is_a_warning_exit_1(capsys, tmp_path):
    code, out, _ = run(
        capsys, "policy", "lint", str(broken(tmp_path, "min_cohort_k: 10", "min_cohort_k: 5"))
    )
    assert code == 1 and "[k-low]" in out


def test_a_looser_override_is_refused(capsys, tmp_path):
    text = (SCHOOLS / "lincoln-elementary.yaml").read_text()
    path = tmp_path / "loose.yaml"
    path.write_text(text.replace("min_cohort_k: 20", "min_cohort_k: 5"))
    code, _, err = run(capsys, "policy", "lint", str(path))
    assert code == 2 and "'min_cohort_k' = 5 loosens the district policy (10)" in err_line(err)


def test_verify_refuses_expired_foreign_and_edited(capsys, tmp_path, officer):
    code, _, err = run(
        capsys,
        "policy",
        "verify",
        str(default_policy_path()),
        "--pubkey",
        PUB,
        "--date",
        "2027-08-01",
    )
    assert code == 2 and "not on 2027-08-01" in err_line(err)
    foreign = signed_policy(tmp_path, current_policy_text(), officer[0])
    code, _, err = run(capsys, "policy", "verify", str(foreign), "--pubkey", PUB)
    assert code == 2 and "signed by another key" in err_line(err)
    data = foreign.read_bytes()
    foreign.write_bytes(data.replace(b"min_cohort_k: 10", b"min_cohort_k: 11"))
    code, _, err = run(capsys, "policy", "verify", str(foreign), "--pubkey", str(officer[1]))
    assert code == 2 and "changed after it was signed" in err_line(err)


def test_keygen_sign_verify_round_trip(capsys, tmp_path):
    code, _, _ = run(capsys, "policy", "keygen", "--out", str(tmp_path / "keys"))
    assert code == 0
    policy = tmp_path / "policy.yaml"
    policy.write_text(current_policy_text())
    code, _, _ = run(
        capsys, "policy", "sign", str(policy), "--key", str(tmp_path / "keys" / "officer.key")
    )
    assert code == 0
    code, out, _ = run(
        capsys, "policy", "verify", str(policy), "--pubkey", str(tmp_path / "keys" / "officer.pub")
    )
    assert code == 0 and "ok:" in out
    code, _, err = run(capsys, "policy", "keygen", "--out", str(tmp_path / "keys"))
    assert code == 2 and "never overwritten" in err_line(err)


def test_diff_puts_privacy_changes_first(capsys, tmp_path):
    newer = broken(
        tmp_path, "secure_aggregation_required: true", "secure_aggregation_required: false"
    )
    code, out, _ = run(capsys, "policy", "diff", str(default_policy_path()), str(newer))
    assert code == 0
    assert out.index("Privacy-relevant") < out.index("secure") < out.index("Other changes")


def test_audit_verify_and_report(capsys, west_town):
    from client_node.node import SchoolNode

    node = SchoolNode(west_town)
    node.audit.append("egress", message_type="train", bytes=1200, sha256="0" * 64)
    node.audit.append("refusal", what="training", status="refused", reason="budget")
    code, out, _ = run(capsys, "audit", "verify", "--node-dir", str(west_town))
    assert code == 0 and "2 entries" in out
    code, out, _ = run(capsys, "audit", "report", "--node-dir", str(west_town))
    assert code == 0 and "train" in out and "1,200" in out and "training: refused ×1" in out
    log = west_town / "audit.log"
    log.write_bytes(log.read_bytes().replace(b'"bytes":1200', b'"bytes":1201'))
    code, _, err = run(capsys, "audit", "verify", "--node-dir", str(west_town))
    assert code == 1 and "entry 1 is bad" in err_line(err)


def test_audit_on_a_folder_that_is_not_a_node(capsys, tmp_path):
    code, _, err = run(capsys, "audit", "verify", "--node-dir", str(tmp_path))
    assert code == 2 and "not a node directory" in err_line(err)


def test_a_policy_with_lint_errors_is_never_signed_verified_or_used(capsys, tmp_path, officer):
    from client_node.node import SchoolNode
    from policies.trust import PolicyRefused
    from tests.conftest import make_node

    text = current_policy_text().replace("epsilon: 4.0", "epsilon: 1.0e9")
    path = tmp_path / "huge.yaml"
    path.write_text(text)
    code, _, err = run(capsys, "policy", "sign", str(path), "--key", str(officer[0]))
    assert code == 2 and "not signed: budget.epsilon" in err_line(err)
    signed = signed_policy(tmp_path, text, officer[0])  # signed anyway, by other means
    code, _, err = run(capsys, "policy", "verify", str(signed), "--pubkey", str(officer[1]))
    assert code == 2 and "breaks a rule: budget.epsilon" in err_line(err)
    import pandas as pd

    table = pd.DataFrame(
        {"family_id": [f"f{i}" for i in range(60)], "at_risk": [0, 1] * 30, "x": 0.5}
    )
    node = make_node(tmp_path / "n", "s", table, officer=officer, policy_text=text)
    with pytest.raises(PolicyRefused, match="breaks a rule"):
        SchoolNode(node)


def test_file_errors_are_one_line(capsys, tmp_path):
    code, _, err = run(
        capsys,
        "policy",
        "explain",
        str(default_policy_path()),
        "--out",
        str(tmp_path / "no" / "n.html"),
    )
    assert code == 2 and "No such file or directory" in err_line(err)
    (tmp_path / "afile").write_text("x")
    code, _, err = run(capsys, "policy", "keygen", "--out", str(tmp_path / "afile"))
    assert code == 2 and err_line(err).startswith("schoolfed policy keygen:")
