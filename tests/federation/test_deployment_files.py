"""District and node directories (no process started): what `init` writes and refuses."""

from __future__ import annotations

import stat
import tomllib

import pytest

from federation import deployment as dep
from federation import linkstate, polling
from federation.errors import DeploymentError
from federation.polling import patchable
from tests.conftest import current_policy_text, signed_policy


@pytest.fixture
def district_dir(tmp_path, officer):
    policy = signed_policy(tmp_path, current_policy_text(), officer[0])
    d = tmp_path / "district"
    dep.init_district(d, policy=policy, trust_anchor=officer[1], port=45678, num_schools=4)
    return d


def test_district_init_writes_settings_certificates_policy_and_the_flwr_connection(district_dir):
    settings = dep.read_district(district_dir)
    assert (settings.host, settings.port, settings.num_schools) == ("127.0.0.1", 45678, 4)
    config = tomllib.loads((district_dir / "flwr" / "config.toml").read_text())
    connection = config["superlink"][dep.CONNECTION]
    assert config["superlink"]["default"] == dep.CONNECTION
    assert connection["address"] == "127.0.0.1:45678"
    assert connection["root-certificates"] == str((district_dir / "certs" / "ca.crt").resolve())
    assert (district_dir / "policy" / "district.yaml.sig").is_file()

    with pytest.raises(DeploymentError, match="already set up"):
        dep.init_district(
            district_dir,
            policy=district_dir / "policy" / "district.yaml",
            trust_anchor=district_dir / "policy" / "officer.pub",
        )


def test_a_misspelled_key_in_district_yaml_is_an_error(district_dir):
    path = district_dir / dep.DISTRICT_FILE
    path.write_text(path.read_text() + "num_school: 3\n")

    with pytest.raises(DeploymentError, match="district.yaml: invalid"):
        dep.read_district(district_dir)


def test_node_init_makes_a_directory_the_clientapp_can_open(district_dir, tmp_path):
    from client_node.node import SchoolNode

    address, ca, policy, anchor = dep.district_node_files(district_dir)
    node_dir = tmp_path / "node"
    settings = dep.init_node(
        node_dir, school_id="school-07", superlink=address, ca_cert=ca, policy=policy,
        trust_anchor=anchor,
    )  # fmt: skip

    assert settings.superlink == "127.0.0.1:45678"
    assert (node_dir / "ca.crt").read_bytes() == ca.read_bytes()
    assert stat.S_IMODE((node_dir / "school.secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((node_dir / "node.key").stat().st_mode) == 0o600
    node = SchoolNode(node_dir)  # verifies the signed policy with the officer's key
    assert node.school_id == "school-07"
    with pytest.raises(DeploymentError, match="already set up"):
        dep.init_node(
            node_dir, school_id="school-07", superlink=address, ca_cert=ca, policy=policy,
            trust_anchor=anchor,
        )  # fmt: skip


def test_starting_a_district_that_was_never_initialised_says_so(tmp_path):
    with pytest.raises(DeploymentError, match="district.yaml: not found"):
        dep.district_up(tmp_path)


def test_the_installed_flower_still_has_what_the_poll_settings_change():
    assert patchable() == []
    assert linkstate.patchable() == []


def test_idle_polls_start_short_grow_and_wait_longer_when_answers_are_slow(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(polling.time, "monotonic", lambda: clock[0])
    polls = polling.Backoff(floor=0.02, cap=0.1, idle_after=10.0, idle_cap=1.0)
    waits = [polls.next() for _ in range(6)]
    assert waits == pytest.approx([0.02, 0.03, 0.045, 0.0675, 0.1, 0.1])
    clock[0] += 11.0  # nothing for 11 s: idle, the waits grow on to 1 s
    assert [polls.next() for _ in range(3)] == pytest.approx([0.1, 0.15, 0.225])
    polls.reset()  # a message came in
    assert polls.next() == pytest.approx(0.02)
    polls.answered(0.2)  # the server took 0.2 s to say "nothing": it is busy
    assert polls.next() == pytest.approx(0.4)
    polls.answered(5.0)  # never more than the idle cap
    assert polls.next() == pytest.approx(1.0)


def test_the_superlink_token_cleanup_runs_at_most_once_per_interval(monkeypatch):
    calls = []

    class State:
        def _cleanup_expired_task_tokens(self):
            calls.append(self)

    clock = [0.0]
    monkeypatch.setattr(linkstate.time, "monotonic", lambda: clock[0])
    linkstate.throttle_cleanup(State, interval=1.0)
    linkstate.throttle_cleanup(State, interval=1.0)  # twice is once
    a, b = State(), State()
    for _ in range(5):
        a._cleanup_expired_task_tokens()
    b._cleanup_expired_task_tokens()  # each state keeps its own clock
    clock[0] = 1.5
    a._cleanup_expired_task_tokens()
    assert calls == [a, b, a]


def test_the_app_is_declared_for_flwr_run():
    config = tomllib.loads((dep.app_dir() / "pyproject.toml").read_text())
    app = config["tool"]["flwr"]["app"]
    assert app["components"] == {
        "serverapp": "federation.deployment_app:server_app",
        "clientapp": "federation.client_app:app",
    }
    assert app["config"]["n-features"] == dep.V1_FEATURES
