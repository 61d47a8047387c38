"""`schoolfed analytics run`: bad input and refusals are one clear line and exit status 2."""

import pytest

from cli.main import main
from client_node.node import SchoolNode
from privacy.accountant import Spend
from simulations.analytics import prepare_nodes
from simulations.involvement import involvement_district
from tests.aggregator.test_analytics import EXAMPLE
from tests.conftest import current_policy_text, signed_policy


def run(capsys, *args):
    try:
        code = main(["analytics", "run", *args])
    except SystemExit as exc:  # argparse
        code = exc.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, [line for line in captured.err.splitlines() if line.strip()], captured.out


def test_a_folder_that_is_no_district_is_one_line(capsys, tmp_path):
    code, err, _ = run(capsys, str(EXAMPLE), "--dir", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"schoolfed analytics run: {tmp_path.resolve() / 'district.yaml'}")
    assert not (tmp_path / "o").exists()


def test_a_district_that_is_not_up_is_one_line(capsys, tmp_path):
    from federation.deployment import init_district
    from policies.loader import default_policy_path, default_trust_anchor

    district = tmp_path / "d"
    init_district(district, policy=default_policy_path(), trust_anchor=default_trust_anchor())
    code, err, _ = run(capsys, str(EXAMPLE), "--dir", str(district))
    assert code == 2 and err == [
        f"schoolfed analytics run: the district in {district.resolve()} is not up "
        f"(schoolfed district up --dir {district.resolve()})"
    ]


def test_a_seed_is_refused_for_a_deployed_district(capsys, tmp_path):
    code, err, _ = run(capsys, str(EXAMPLE), "--dir", str(tmp_path), "--seed", "3")
    assert code == 2 and err == [
        "schoolfed analytics run: --seed 3: seeds are for simulated districts only; a deployed"
        " district's schools draw their noise from the OS"
    ]


def test_a_misspelled_query_key_names_file_field_and_value(capsys, tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text(EXAMPLE.read_text().replace("adjust_for:", "ajust_for:"))
    code, err, _ = run(capsys, str(path), "--out", str(tmp_path / "o"))
    assert code == 2 and len(err) == 1
    assert f"query file {path}: effects.ajust_for = " in err[0]
    assert "Extra inputs are not permitted" in err[0]
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_a_query_past_the_budget_shows_the_costs_and_is_refused(capsys, tmp_path, officer):
    # Prepare: the synthetic district's schools, each with ε ≈ 0.5 of its analytics 1 spent
    policy = signed_policy(tmp_path, current_policy_text(), officer[0])
    out = tmp_path / "out"
    nodes = prepare_nodes(out, involvement_district(seed=0), policy=policy, trust_anchor=officer[1])
    for node_dir in nodes:
        SchoolNode(node_dir).analytics_ledger.charge(Spend(8.0, 1.0, 1), run_id="before", round=1)
    # Execute
    code, err, printed = run(
        capsys, str(EXAMPLE), "--dataset", "synthetic-involvement", "--out", str(out)
    )
    # Assert: the cost table was shown, then one line with the figures; no report written
    assert code == 2 and len(err) == 1
    assert "What the query costs each school" in printed and "over budget" in printed
    assert "query refused before anything was sent: 8 of 8 schools" in err[0]
    assert "needs ε 1.0000 but has 0." in err[0] and "of 1.0000 left (spent 0." in err[0]
    assert not (out / "analytics.json").exists()
    for node_dir in nodes:
        assert len(SchoolNode(node_dir).analytics_ledger.history()) == 1


@pytest.mark.parametrize("seed", ["-1", "x"])
def test_a_bad_seed_is_a_usage_error(capsys, seed):
    code, err, _ = run(capsys, str(EXAMPLE), "--seed", seed)
    assert code == 2 and "argument --seed" in err[-1]
