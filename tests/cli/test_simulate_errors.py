"""Bad input to `schoolfed simulate`: one clear line, exit status 2, nothing started."""

import subprocess
import sys

import pandas as pd
import pytest

from cli.main import main
from policies.loader import default_policy_path
from simulations.datasets import DATA_ROOT
from tests.conftest import current_policy_text, signed_policy


def run(capsys, *args):
    code = None
    try:
        code = main(["simulate", *args])
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    return code, err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    return lines[-1]


def test_missing_dataset_file(capsys, tmp_path):
    code, err = run(capsys, "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 2
    assert "data file" in one_line(err) and "CuratedData.csv not found" in err


def test_table_without_a_required_column(capsys, tmp_path):
    raw = pd.read_csv(DATA_ROOT / "nhes-2019-pfi" / "CuratedData.csv", nrows=20)
    raw.drop(columns=["FSMEMO"]).to_csv(tmp_path / "CuratedData.csv", index=False)
    code, err = run(capsys, "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 2
    assert "has no column FSMEMO" in one_line(err)


def test_policy_with_an_unknown_field(capsys, tmp_path, officer):
    policy = signed_policy(tmp_path, current_policy_text() + "epsilon_per_round: 1\n", officer[0])
    args = ("--policy", str(policy), "--pubkey", str(officer[1]), "--out", str(tmp_path / "o"))
    code, err = run(capsys, *args)
    assert code == 2
    assert "unknown field 'epsilon_per_round'" in one_line(err)
    assert not (tmp_path / "o").exists()  # nothing written


def test_an_unsigned_or_tampered_policy_starts_nothing(capsys, tmp_path, officer):
    policy = tmp_path / "p.yaml"
    policy.write_text(default_policy_path().read_text())
    code, err = run(capsys, "--policy", str(policy), "--out", str(tmp_path / "o"))
    assert code == 2 and "policy refused" in one_line(err) and "unsigned" in one_line(err)
    signed = signed_policy(tmp_path, current_policy_text(), officer[0])
    signed.write_text(signed.read_text().replace("min_cohort_k: 10", "min_cohort_k: 1"))
    args = ("--policy", str(signed), "--pubkey", str(officer[1]), "--out", str(tmp_path / "o"))
    code, err = run(capsys, *args)
    assert code == 2 and "changed after it was signed" in one_line(err)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value", ["-1", "nan", "0", "inf", "lots"])
def test_unusable_epsilon(capsys, tmp_path, value):
    code, err = run(capsys, "--epsilon", value, "--out", str(tmp_path / "o"))
    assert code == 2
    assert "--epsilon" in one_line(err) and value in one_line(err)


def test_epsilon_above_the_policy_budget(capsys, tmp_path):
    code, err = run(capsys, "--epsilon", "5", "--out", str(tmp_path / "o"))
    assert code == 2
    assert "--epsilon 5 is not allowed; the policy's training budget per school is 3" in one_line(
        err
    )


def test_rounds_beyond_the_policy(capsys, tmp_path):
    code, err = run(capsys, "--rounds", "51", "--out", str(tmp_path / "o"))
    assert code == 2
    assert "--rounds 51 is not allowed; the policy allows 1 to 50" in one_line(err)


def test_unknown_dataset_and_school(capsys, tmp_path):
    code, err = run(capsys, "--dataset", "nhes-2020", "--out", str(tmp_path / "o"))
    assert code == 2 and "--dataset 'nhes-2020' is neither a known dataset" in one_line(err)
    code, err = run(capsys, "--schools", "atlantis", "--out", str(tmp_path / "o"))
    assert code == 2 and "school 'atlantis' is not in nhes-pfi-2019" in one_line(err)


def test_the_console_script_exits_2_without_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "simulate", "--epsilon", "-1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "ε must be finite and > 0" in result.stderr
