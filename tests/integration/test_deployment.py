"""A real district on Flower's deployment engine, on loopback: one SuperLink (TLS, SuperNode
authentication, state database) and three SuperNodes, each its own process tree with its own
node directory built from a synthetic school export. Every process is stopped at the end, also
when a test fails."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from federation import deployment as dep
from federation.errors import DeploymentError
from privacy.accountant import Spend, epsilon_of
from simulations.local_district import LocalDistrictRequest, build_local_district, running
from tests.conftest import current_policy_text, signed_policy

ROUNDS = 3


def _spends(node_dir: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(node_dir / "ledger.sqlite") as db:
        return [(r, int(n)) for r, n in db.execute("SELECT run_id, round FROM spends")]


def _history(node_dir: Path) -> list[Spend]:
    with sqlite3.connect(node_dir / "ledger.sqlite") as db:
        rows = db.execute("SELECT noise_multiplier, sample_rate, steps FROM spends ORDER BY id")
        return [Spend(float(s), float(q), int(k)) for s, q, k in rows]


def _processes_under(root: Path) -> list[str]:
    """Command lines of running processes that name a path under `root`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(root) in cmd and state != "Z":
            found.append(cmd)
    return found


@pytest.fixture(scope="module")
def district(tmp_path_factory, officer):
    root = tmp_path_factory.mktemp("deploy")
    policy = signed_policy(root, current_policy_text(), officer[0])
    built = build_local_district(
        LocalDistrictRequest(
            out=root / "local",
            families=120,
            weeks=20,
            rounds=ROUNDS,
            policy=policy,
            trust_anchor=officer[1],
        )
    )
    with running(built):
        yield built
    assert _processes_under(root / "local") == []  # nothing outlives the district


def test_three_schools_train_under_secagg_one_restarted_between_rounds_rejoins(district):
    """The district policy requires SecAgg+, so every round here is securely aggregated. One
    school is stopped and started again as soon as round 1 ends: a round in flight goes on
    without it (within SecAgg+'s threshold) and it trains again in the next round."""
    restarted_school = sorted(district.node_dirs)[1]
    node_dir = district.node_dirs[restarted_school]
    run = dep.start_run(district.district_dir, dep.RunRequest(rounds=ROUNDS, target_epsilon=1.0))
    progress = district.district_dir / "runs" / f"flwr-{run}.progress"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if progress.is_file() and "round 1:" in progress.read_text():
            break  # round 1 trained and evaluated: restart one school
        time.sleep(0.1)
    else:
        pytest.fail("round 1 did not finish")
    assert dep.stop_node(node_dir)
    assert dep.node_state(node_dir) == dep.NodeState.STOPPED
    dep.start_node(node_dir)
    report = dep.wait_run(district.district_dir, run, timeout=300)

    assert report["flower_run_id"] == run
    assert report["secure_aggregation"]["on"] is True
    assert report["secure_aggregation"]["failed_rounds"] == {}  # no round was lost
    assert [r["round"] for r in report["rounds"]] == list(range(1, ROUNDS + 1))
    for r in report["rounds"]:
        assert 0.0 <= r["auc"] <= 1.0 and 0.0 <= r["accuracy"] <= 1.0
        assert r["secagg"]["trained"] >= 2 and r["secagg"]["failed"] == ""
    assert report["rounds"][-1]["secagg"]["trained"] == 3  # the restarted school is back
    assert sorted(s["school_id"] for s in report["schools"]) == sorted(district.node_dirs)
    assert report["schools_missing"] == 0
    for s in report["schools"]:
        node = district.node_dirs[s["school_id"]]
        spends = _spends(node)
        assert len(spends) == len(set(spends))  # no round charged twice
        assert s["status"] == "trained"
        if s["school_id"] == restarted_school:  # rounds 1 and 3 at least; 2 if it got in first
            assert s["rounds_trained"] >= ROUNDS - 1
            assert {(report["run_id"], 1), (report["run_id"], ROUNDS)} <= set(spends)
        else:
            assert s["rounds_trained"] == ROUNDS
            assert sorted(spends) == [(report["run_id"], r) for r in range(1, ROUNDS + 1)]
        # ε recomputed from the school's own ledger with Opacus' RDP analysis
        history = _history(node)
        assert s["epsilon_spent"] == pytest.approx(epsilon_of(history, delta=s["delta"]), rel=1e-9)
        assert 0 < s["epsilon_spent"] <= 1.0 + 1e-6
    saved = json.loads((district.district_dir / "report.json").read_text())
    assert saved["run_id"] == report["run_id"]
    assert (district.district_dir / "runs" / report["run_id"] / "report.md").is_file()
    assert "SecAgg+" in (district.district_dir / "report.md").read_text()

    # the same SchoolFed run submitted again (a resume): no school pays for a round twice; a
    # school that missed a round may train it now, the last round is refused by everyone
    again = dep.start_run(
        district.district_dir,
        dep.RunRequest(rounds=ROUNDS, target_epsilon=1.0, run_id=report["run_id"]),
    )
    repeat = dep.wait_run(district.district_dir, again, timeout=300)
    for s in repeat["schools"]:
        assert s["status"] == "failed" and "already" in s["reason"]
        spends = _spends(district.node_dirs[s["school_id"]])
        assert sorted(spends) == [(report["run_id"], r) for r in range(1, ROUNDS + 1)]


def test_an_unregistered_node_is_refused(district, tmp_path):
    address, ca, policy, anchor = dep.district_node_files(district.district_dir)
    node_dir = tmp_path / "stranger"
    dep.init_node(
        node_dir, school_id="stranger", superlink=address, ca_cert=ca, policy=policy,
        trust_anchor=anchor,
    )  # fmt: skip
    before = {n.node_id for n in dep.supernodes(district.district_dir)}

    with pytest.raises(DeploymentError, match="not registered"):
        dep.start_node(node_dir, timeout=60)

    assert not dep.supernode_process(node_dir).running()
    assert not dep.executor_process(node_dir).running()
    assert {n.node_id for n in dep.supernodes(district.district_dir)} == before


def test_a_node_without_tls_cannot_join(district, tmp_path):
    address, *_ = dep.district_node_files(district.district_dir)
    env = {**os.environ, **dep.OFFLINE_ENV, "FLWR_HOME": str(tmp_path)}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    log = tmp_path / "supernode.log"
    with open(log, "wb") as out:
        child = subprocess.Popen(
            ["flower-supernode", "--insecure", "--superlink", address, "--max-retries", "1",
             "--isolation", "process", "--port", str(dep.free_port()),
             "--node-config", f'node-dir="{tmp_path}"'],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        code = child.wait(timeout=90)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, 9)
            child.wait()

    assert code != 0
    assert "could not establish a connection to the SuperLink" in log.read_text()


def test_a_superlink_restarted_mid_run_with_its_state_database_resumes_without_charging_twice(
    district,
):
    """The SuperLink goes down in the middle of a run and comes back on the same state
    database (registrations kept): the schools' SuperNodes reconnect by themselves, the run is
    submitted again with its SchoolFed run id, and no school pays for any round twice."""
    run_id = "superlink-restart"
    first = dep.start_run(
        district.district_dir, dep.RunRequest(rounds=2, target_epsilon=0.5, run_id=run_id)
    )
    progress = district.district_dir / "runs" / f"flwr-{first}.progress"
    deadline = time.monotonic() + 180
    while not (progress.is_file() and "round 1:" in progress.read_text()):
        assert time.monotonic() < deadline, "round 1 did not finish"
        time.sleep(0.1)

    assert dep.district_down(district.district_dir)
    dep.district_up(district.district_dir)
    again = dep.start_run(
        district.district_dir, dep.RunRequest(rounds=2, target_epsilon=0.5, run_id=run_id)
    )
    report = dep.wait_run(district.district_dir, again, timeout=300)

    assert report["schools_missing"] == 0  # every school answered the resumed run
    for s in report["schools"]:
        paid = [
            spend for spend in _spends(district.node_dirs[s["school_id"]]) if spend[0] == run_id
        ]
        assert sorted(paid) == [(run_id, 1), (run_id, 2)]  # each round paid once, in either run
    assert not dep.run_status(district.district_dir, first).endswith("completed")


def test_an_analytics_query_is_answered_by_the_deployed_schools_and_a_second_one_refused(
    district, tmp_path
):
    """`analytics run --dir`: a pre-flight asks every school what the query costs it (only a
    school can read its ledger); the query goes out only when all can pay — under the district
    policy as one SecAgg+ round, so the district holds only the sum (t = 2 of 3)."""
    from aggregator.analytics import load_query
    from client_node.analytics import AnalyticsRequest, analytics_frame, mechanism_for
    from client_node.node import SchoolNode
    from federation.analytics_app import MESSAGE_TYPE
    from simulations.analytics import QueryRefused, run_on_district

    query = load_query(Path(__file__).parents[2] / "queries" / "export-involvement.yaml")
    nodes = {school: SchoolNode(d) for school, d in district.node_dirs.items()}
    mech = mechanism_for(AnalyticsRequest.model_validate(query.request()), delta=2.5e-6)
    seen: list = []

    result = run_on_district(
        query, district_dir=district.district_dir, out=tmp_path / "first", on_costs=seen.append
    )

    (costs,) = seen
    assert sorted(c.school_id for c in costs) == sorted(nodes)
    for c in costs:  # what the schools said before: their analytics pool was untouched
        assert c.spent == 0.0 and c.epsilon_query == pytest.approx(0.5, abs=1e-3) and c.fits
    assert {s: a["status"] for s, a in result.schools.items()} == dict.fromkeys(nodes, "answered")
    for node in nodes.values():
        (spend,) = node.analytics_ledger.history()  # one Gaussian release, charged once
        assert spend.noise_multiplier == pytest.approx(mech.noise_multiplier)
        assert node.analytics_ledger.spent() == pytest.approx(costs[0].after, abs=1e-9)
        sent = [e["data"] for e in node.audit.entries() if e["kind"] == "egress"]
        preflight = [d for d in sent if d["message_type"] == MESSAGE_TYPE]
        assert [d["epsilon_spent"] for d in preflight] == [0.0]  # no plain answer left
        (masked,) = [d for d in sent if d.get("secagg_keys") == ["masked_params"]
                     and d["run_id"].startswith(query.query_id)]  # fmt: skip
        assert masked["status"] == "answered"
        assert masked["epsilon_spent"] == pytest.approx(node.analytics_ledger.spent())
    effects = {e["type"]: e for e in result.effects}
    assert set(effects) == set(query.effects.involvement)
    assert effects["homework_help"]["raw"] is None  # no export column: reported, not estimated
    # secure mode: one pooled description, the three schools' families plus their noise shares
    assert result.mode == "secure" and result.per_school == {}
    assert (result.secure["vectors"], result.secure["threshold"]) == (3, 2)
    (described,) = result.describe
    (group,) = described["groups"]
    families = sum(len(analytics_frame(n)) for n in nodes.values())
    assert group["group"] == "all-schools"
    assert abs(group["families"] - families) < 5 * mech.sigma * (3 / 2) ** 0.5
    assert group["families"] != families
    report = json.loads((tmp_path / "first" / "analytics.json").read_text())
    assert report["ranking"] == result.ranking() and report["schools"] == result.schools
    assert (tmp_path / "first" / "effects.png").stat().st_size > 500

    entries = {s: len(n.audit.entries()) for s, n in nodes.items()}
    with pytest.raises(QueryRefused, match="refused before anything was sent: 3 of 3 schools"):
        run_on_district(
            query.model_copy(update={"epsilon": 0.9}),
            district_dir=district.district_dir,
            out=tmp_path / "second",
        )
    for school, node in nodes.items():  # only the pre-flight reply left; nothing charged
        assert len(node.analytics_ledger.history()) == 1
        new = node.audit.entries()[entries[school] :]
        assert [e["data"]["epsilon_spent"] for e in new if e["kind"] == "egress"] == [
            pytest.approx(node.analytics_ledger.spent())
        ]
    assert not (tmp_path / "second" / "analytics.json").exists()
