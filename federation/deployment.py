"""A real district on Flower's deployment engine: files, processes and runs.

District directory (`schoolfed district init --dir D`):

    district.yaml          DistrictSettings (host, port, policy, schools expected, ...)
    certs/                 ca.crt, ca.key (0600), superlink.crt, superlink.key (0600)
    policy/                the district policy, its signature and the officer's public key
    flwr/config.toml       the `flwr` connection "district" (FLWR_HOME for flwr run/register)
    state/superlink.db     the SuperLink's state database
    run/                   superlink.pid, superlink.log
    runs/<run id>/         each run's report; D/report.json etc. hold the latest

Node directory (`schoolfed node init --node-dir N`): the ClientApp's files (node.yaml,
policy.yaml, officer.pub, school.secret) plus

    supernode.yaml         SupernodeSettings (the SuperLink address, the runtime port, ...)
    ca.crt                 the district CA (to verify the SuperLink)
    node.key, node.pub     the SuperNode's authentication key pair (P-384, OpenSSH)
    flwr/                  FLWR_HOME of the node's processes (installed app bundles)
    run/                   supernode.pid, executor.pid and their logs

Every process is started in its own session with its pid (and start time) in a pid file;
stopping ends the whole process tree, first with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from client_node.node import (
    NODE_CONFIG,
    NodeConfig,
    install_policy,
    read_node_config,
    write_node_config,
)
from client_node.pseudonym import load_or_create_secret
from federation import certs
from federation.errors import DeploymentError

log = logging.getLogger(__name__)

DISTRICT_FILE = "district.yaml"
SUPERNODE_FILE = "supernode.yaml"
CONNECTION = "district"  # the name of the `flwr` connection in D/flwr/config.toml
REPORT = "report.json"
# The number of model inputs of the export format v1 family table (client_node.features);
# a node whose table has another width fails its round with a clear message.
V1_FEATURES = 50

OFFLINE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "PYTHONUNBUFFERED": "1",
}

Progress = Callable[[str], None]
_M = TypeVar("_M", bound=BaseModel)


class DistrictSettings(BaseModel):
    """district.yaml: written by `district init`, read by `up`, `run`, `node register`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="district", min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    num_schools: int = Field(default=3, ge=1)
    n_features: int = Field(default=V1_FEATURES, ge=1)
    round_timeout: float = Field(default=600.0, gt=0)
    policy: str = "policy/district.yaml"
    trust_anchor: str = "policy/officer.pub"
    database: str = "state/superlink.db"


class Executor(StrEnum):
    WARM = "warm"  # federation.warm_executor: torch imported once, one fork per message
    FLOWER = "flower"  # Flower's own: a new flwr-clientapp process per message


class SupernodeSettings(BaseModel):
    """supernode.yaml in a node directory: how this school's SuperNode reaches the district."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    superlink: str = Field(pattern=r"^[^\s:]+:\d{1,5}$")  # host:port
    root_certificates: str = "ca.crt"
    private_key: str = certs.NODE_KEY
    public_key: str = certs.NODE_PUB
    runtime_port: int = Field(ge=1, le=65535)
    executor: Literal["warm", "flower"] = "warm"
    # the longest a SuperNode waits between asks for its next message during a run (Flower's:
    # always 3 s); it asks 20 ms after a message and backs off to this (federation.polling)
    poll_interval: float = Field(default=0.1, gt=0, le=3)
    snapshot_week: int | None = Field(default=None, ge=0)


# --- files ------------------------------------------------------------------------------


def _read_model(path: Path, model: type[_M], what: str) -> _M:
    if not path.is_file():
        raise DeploymentError(f"{path}: not found; is this a {what} directory?")
    try:
        return model.model_validate(yaml.safe_load(path.read_text()))
    except (ValidationError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()
        detail = " ".join(first[:3]) if first else type(exc).__name__
        raise DeploymentError(f"{path}: invalid ({detail})") from None


def _write_model(path: Path, value: BaseModel) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(value.model_dump(mode="json"), sort_keys=False))
    tmp.replace(path)


def read_district(district_dir: Path) -> DistrictSettings:
    return _read_model(Path(district_dir) / DISTRICT_FILE, DistrictSettings, "district")


def read_supernode(node_dir: Path) -> SupernodeSettings:
    return _read_model(Path(node_dir) / SUPERNODE_FILE, SupernodeSettings, "node")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _copy_signed(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    sig = source.with_name(source.name + ".sig")
    if sig.is_file():
        shutil.copyfile(sig, target.with_name(target.name + ".sig"))


def _flwr_config(settings: DistrictSettings, ca_cert: Path) -> str:
    return (
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f"[superlink.{CONNECTION}]\n"
        f'address = "{settings.host}:{settings.port}"\n'
        f'root-certificates = "{ca_cert.resolve()}"\n'
    )


def init_district(
    district_dir: Path,
    *,
    policy: Path,
    trust_anchor: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    num_schools: int = 3,
    n_features: int = V1_FEATURES,
    round_timeout: float = 600.0,
    extra_hosts: Sequence[str] = (),
) -> DistrictSettings:
    """Write a district directory: CA, SuperLink certificate, policy, flwr connection."""
    district_dir = Path(district_dir)
    if (district_dir / DISTRICT_FILE).exists():
        raise DeploymentError(
            f"{district_dir / DISTRICT_FILE}: a district is already set up there; "
            "its keys are never replaced (choose another --dir)"
        )
    for path, what in ((policy, "--policy"), (trust_anchor, "--trust-anchor")):
        if not Path(path).is_file():
            raise DeploymentError(f"{what} {path}: not found")
    settings = DistrictSettings(
        host=host,
        port=port or free_port(host),
        num_schools=num_schools,
        n_features=n_features,
        round_timeout=round_timeout,
    )
    hosts = list(dict.fromkeys([host, *extra_hosts, "localhost"]))
    made = certs.write_district_certs(district_dir / "certs", hosts=hosts, district=settings.name)
    (district_dir / "policy").mkdir(parents=True, exist_ok=True)
    _copy_signed(Path(policy), district_dir / settings.policy)
    shutil.copyfile(trust_anchor, district_dir / settings.trust_anchor)
    for sub in ("state", "run", "runs", "flwr"):
        (district_dir / sub).mkdir(parents=True, exist_ok=True)
    (district_dir / "flwr" / "config.toml").write_text(_flwr_config(settings, made.ca_cert))
    _write_model(district_dir / DISTRICT_FILE, settings)
    return settings


def set_district_features(district_dir: Path, n_features: int) -> DistrictSettings:
    """Set the model's input width (the schools' family tables decide it)."""
    settings = read_district(district_dir).model_copy(update={"n_features": n_features})
    _write_model(
        Path(district_dir) / DISTRICT_FILE, DistrictSettings.model_validate(settings.model_dump())
    )
    return settings


# --- processes ----------------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _tree(pid: int) -> list[int]:
    """`pid` and every process below it, and every process in its process group."""
    tree, found, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        if p not in found:
            found.append(p)
            todo.extend(tree.get(p, []))
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in found:
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry.name)) == pid:
                    found.append(int(entry.name))
    return found


@dataclass(frozen=True)
class ProcessFile:
    """A process this package started: pid file and log file."""

    pid_file: Path
    log_file: Path

    def pid(self) -> int | None:
        """The pid if that process still runs (the start time guards against pid reuse)."""
        try:
            pid_text, started = self.pid_file.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        return pid if _start_time(pid) == started else None

    def running(self) -> bool:
        return self.pid() is not None

    def log_tail(self, lines: int = 6) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


def _env(flwr_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OFFLINE_ENV)
    env["FLWR_HOME"] = str(flwr_home.resolve())
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


# Children this process started and has not reaped yet (a dropped Popen warns that it runs on).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _reap() -> None:
    for pid, child in list(_CHILDREN.items()):
        if child.poll() is not None:
            del _CHILDREN[pid]


def spawn(cmd: list[str], proc: ProcessFile, *, env: dict[str, str], cwd: Path) -> int:
    """Start `cmd` in a new session, its output appended to the log, its pid in the pid file."""
    if proc.running():
        raise DeploymentError(f"{proc.pid_file}: already running (pid {proc.pid()})")
    proc.pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(proc.log_file, "ab") as out:
        child = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    started = None
    for _ in range(50):
        if (started := _start_time(child.pid)) is not None or child.poll() is not None:
            break
        time.sleep(0.01)
    proc.pid_file.write_text(f"{child.pid} {started}\n")
    _reap()
    _CHILDREN[child.pid] = child
    return child.pid


def stop(proc: ProcessFile, *, grace: float = 10.0) -> bool:
    """End the process and everything it started; True if something was running."""
    pid = proc.pid()
    if pid is None:
        proc.pid_file.unlink(missing_ok=True)
        return False
    members = _tree(pid)
    for p in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_start_time(p) for p in members):
        time.sleep(0.1)
    for p in _tree(pid) + members:  # what is left, and anything started meanwhile
        if _start_time(p) is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
    proc.pid_file.unlink(missing_ok=True)
    if (child := _CHILDREN.pop(pid, None)) is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)
    _reap()
    return True


def _wait_port(host: str, port: int, proc: ProcessFile, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.running():
            raise DeploymentError(
                f"{what} exited on start; its log ({proc.log_file}) ends:\n{proc.log_tail()}"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.2)
    raise DeploymentError(
        f"{what} did not listen on {host}:{port} within {timeout:g} s ({proc.log_file})"
    )


# --- district ------------------------------------------------------------------------------


def superlink_process(district_dir: Path) -> ProcessFile:
    run = Path(district_dir) / "run"
    return ProcessFile(run / "superlink.pid", run / "superlink.log")


def district_up(district_dir: Path, *, timeout: float = 60.0) -> DistrictSettings:
    """Start flower-superlink with TLS, SuperNode authentication and its state database."""
    district_dir = Path(district_dir).resolve()
    settings = read_district(district_dir)
    proc = superlink_process(district_dir)
    if proc.running():
        return settings
    cert_dir = district_dir / "certs"
    for name in (certs.CA_CERT, certs.SUPERLINK_CERT, certs.SUPERLINK_KEY):
        if not (cert_dir / name).is_file():
            raise DeploymentError(f"{cert_dir / name}: not found (run schoolfed district init)")
    with (
        contextlib.suppress(OSError),
        socket.create_connection((settings.host, settings.port), 0.5),
    ):
        raise DeploymentError(
            f"port {settings.port} on {settings.host} is already in use; set another port in "
            f"{district_dir / DISTRICT_FILE}"
        )
    cmd = [
        # Flower's flower-superlink, with its token cleanup run at most once a second
        sys.executable, "-m", "federation.linkstate", "--",
        "--ssl-ca-certfile", str(cert_dir / certs.CA_CERT),
        "--ssl-certfile", str(cert_dir / certs.SUPERLINK_CERT),
        "--ssl-keyfile", str(cert_dir / certs.SUPERLINK_KEY),
        "--enable-supernode-auth",
        "--database", str(district_dir / settings.database),
        "--host", settings.host,
        "--port", str(settings.port),
        "--disable-runtime-dependency-installation",
    ]  # fmt: skip
    (district_dir / settings.database).parent.mkdir(parents=True, exist_ok=True)
    spawn(cmd, proc, env=_env(district_dir / "flwr"), cwd=district_dir)
    try:
        _wait_port(settings.host, settings.port, proc, timeout=timeout, what="flower-superlink")
    except DeploymentError:
        stop(proc)
        raise
    return settings


def district_down(district_dir: Path) -> bool:
    return stop(superlink_process(district_dir))


def _flwr(
    args: list[str], *, district_dir: Path, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    district_dir = Path(district_dir).resolve()
    try:
        return subprocess.run(
            ["flwr", *args],
            env=_env(district_dir / "flwr"),
            cwd=district_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DeploymentError(f"flwr {args[0]} did not answer within {timeout:g} s") from None


def _json_of(result: subprocess.CompletedProcess[str], what: str) -> dict:
    text = result.stdout.strip()
    start = text.find("{")
    try:
        data = json.loads(text[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or data.get("success") is False or result.returncode != 0:
        detail = (data or {}).get("error-message") if isinstance(data, dict) else None
        detail = detail or (result.stderr.strip() or text).splitlines()[-1:] or ["no output"]
        raise DeploymentError(f"{what} failed: {detail if isinstance(detail, str) else detail[0]}")
    return data


@dataclass(frozen=True)
class SuperNodeInfo:
    node_id: int
    status: str
    name: str


def supernodes(district_dir: Path) -> list[SuperNodeInfo]:
    """The SuperNodes the SuperLink knows (registered, online or offline)."""
    data = _json_of(
        _flwr(["supernode", "list", CONNECTION, "--format", "json"], district_dir=district_dir),
        "flwr supernode list",
    )
    nodes = data.get("nodes", [])
    return [
        SuperNodeInfo(
            node_id=int(n.get("node-id", 0)),
            status=str(n.get("status", "")),
            name=str(n.get("name", "") or ""),
        )
        for n in nodes
    ]


def register_node(*, district_dir: Path, public_key: Path, name: str | None = None) -> int:
    """Register a SuperNode's public key with the district's SuperLink; its node id."""
    if not Path(public_key).is_file():
        raise DeploymentError(f"{public_key}: not found (run schoolfed node init first)")
    args = [
        "supernode",
        "register",
        str(Path(public_key).resolve()),
        CONNECTION,
        "--format",
        "json",
    ]
    if name:
        args += ["--name", name]
    data = _json_of(_flwr(args, district_dir=district_dir), "flwr supernode register")
    return int(data["node-id"])


def register_command(*, district_dir: Path, public_key: Path) -> str:
    """What the district runs to register a node (for the operator to copy)."""
    return (
        f"FLWR_HOME={Path(district_dir).resolve() / 'flwr'} flwr supernode register "
        f"{Path(public_key).resolve()} {CONNECTION}"
    )


# --- node ---------------------------------------------------------------------------------


def supernode_process(node_dir: Path) -> ProcessFile:
    run = Path(node_dir) / "run"
    return ProcessFile(run / "supernode.pid", run / "supernode.log")


def executor_process(node_dir: Path) -> ProcessFile:
    run = Path(node_dir) / "run"
    return ProcessFile(run / "executor.pid", run / "executor.log")


def init_node_deployment(
    node_dir: Path,
    *,
    superlink: str,
    ca_cert: Path,
    runtime_port: int | None = None,
    executor: Executor = Executor.WARM,
    school_id: str = "",
) -> SupernodeSettings:
    """The SuperNode's part of a node directory: CA certificate, key pair, supernode.yaml."""
    node_dir = Path(node_dir)
    if (node_dir / SUPERNODE_FILE).exists():
        raise DeploymentError(
            f"{node_dir / SUPERNODE_FILE}: this node is already set up; its keys are never replaced"
        )
    if not Path(ca_cert).is_file():
        raise DeploymentError(f"--ca-cert {ca_cert}: not found")
    node_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca_cert, node_dir / "ca.crt")
    certs.write_node_keys(node_dir, comment=f"schoolfed-{school_id}" if school_id else "")
    settings = SupernodeSettings(
        superlink=superlink,
        runtime_port=runtime_port or free_port(),
        executor=executor.value,
    )
    for sub in ("flwr", "run"):
        (node_dir / sub).mkdir(exist_ok=True)
    _write_model(node_dir / SUPERNODE_FILE, settings)
    return settings


def init_node(
    node_dir: Path,
    *,
    school_id: str,
    superlink: str,
    ca_cert: Path,
    policy: Path,
    trust_anchor: Path,
    runtime_port: int | None = None,
    executor: Executor = Executor.WARM,
) -> SupernodeSettings:
    """A node directory the ClientApp can use: node.yaml, the signed policy and the officer's
    key, the school secret (0600), and the SuperNode's CA certificate, key pair and settings."""
    node_dir = Path(node_dir)
    for path, what in ((policy, "--policy"), (trust_anchor, "--trust-anchor")):
        if not Path(path).is_file():
            raise DeploymentError(f"{what} {path}: not found")
    if (node_dir / SUPERNODE_FILE).exists():
        raise DeploymentError(
            f"{node_dir / SUPERNODE_FILE}: this node is already set up; its keys are never replaced"
        )
    if (node_dir / NODE_CONFIG).is_file():
        existing = read_node_config(node_dir).school_id
        if existing != school_id:
            raise DeploymentError(
                f"{node_dir / NODE_CONFIG}: this node is school {existing!r}, not {school_id!r}"
            )
    else:
        write_node_config(node_dir, NodeConfig(school_id=school_id))
    install_policy(node_dir, policy=Path(policy), trust_anchor=Path(trust_anchor))
    load_or_create_secret(node_dir)
    return init_node_deployment(
        node_dir,
        superlink=superlink,
        ca_cert=ca_cert,
        runtime_port=runtime_port,
        executor=executor,
        school_id=school_id,
    )


def district_node_files(district_dir: Path) -> tuple[str, Path, Path, Path]:
    """What a school gets from its district: (SuperLink address, CA certificate, policy,
    officer's public key)."""
    district_dir = Path(district_dir)
    s = read_district(district_dir)
    return (
        f"{s.host}:{s.port}",
        district_dir / "certs" / certs.CA_CERT,
        district_dir / s.policy,
        district_dir / s.trust_anchor,
    )


class NodeState(StrEnum):
    CONNECTED = "connected"
    STARTING = "starting"
    STOPPED = "stopped"


def node_state(node_dir: Path) -> NodeState:
    proc = supernode_process(node_dir)
    if not proc.running():
        return NodeState.STOPPED
    try:
        text = proc.log_file.read_text(errors="replace")
    except OSError:
        text = ""
    started = text.rfind("Starting Flower SuperNode")
    return NodeState.CONNECTED if "SuperNode ID:" in text[started:] else NodeState.STARTING


_REFUSALS = {
    "code: 2004": "the SuperLink refused this node: its public key is not registered "
    "(run schoolfed node register)",
    "Server disconnected without sending a response": "the SuperLink refused the connection "
    "(no TLS, or the wrong certificate)",
    "CERTIFICATE_VERIFY_FAILED": "the SuperLink's certificate is not signed by this node's ca.crt",
}


def start_node(node_dir: Path, *, timeout: float = 60.0, wait: bool = True) -> int | None:
    """Start flower-supernode (TLS, authentication, node-dir in its node config) and its
    executor; wait until the SuperLink accepts it. The SuperNode id, or None if not waited."""
    node_dir = Path(node_dir).resolve()
    settings = read_supernode(node_dir)
    proc, exe = supernode_process(node_dir), executor_process(node_dir)
    if proc.running():
        raise DeploymentError(
            f"the node in {node_dir} is already running (pid {proc.pid()}); stop it first"
        )
    stop(exe)  # an executor left from a SuperNode that died
    for name in (settings.root_certificates, settings.private_key):
        if not (node_dir / name).is_file():
            raise DeploymentError(f"{node_dir / name}: not found (run schoolfed node init)")
    env = _env(node_dir / "flwr")
    launcher = (
        ["flower-supernode"]
        if settings.poll_interval >= 3
        else [
            sys.executable,
            "-m",
            "federation.polling",
            "--poll",
            str(settings.poll_interval),
            "--",
        ]
    )
    cmd = [
        *launcher,
        "--superlink", settings.superlink,
        "--root-certificates", str(node_dir / settings.root_certificates),
        "--auth-supernode-private-key", str(node_dir / settings.private_key),
        "--host", "127.0.0.1",
        "--port", str(settings.runtime_port),
        "--node-config", f'node-dir="{node_dir}"',
    ]  # fmt: skip
    if settings.executor == Executor.WARM:
        cmd += ["--isolation", "process"]
    with contextlib.suppress(OSError):
        proc.log_file.unlink()
    pid = spawn(cmd, proc, env=env, cwd=node_dir)
    if settings.executor == Executor.WARM:
        spawn(
            [
                sys.executable,
                "-m",
                "federation.warm_executor",
                "--runtime-api-address",
                f"127.0.0.1:{settings.runtime_port}",
                "--parent-pid",
                str(pid),
            ],  # fmt: skip
            exe,
            env=env,
            cwd=node_dir,
        )
    if not wait:
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = proc.log_file.read_text(errors="replace") if proc.log_file.exists() else ""
        if "SuperNode ID:" in text:
            return int(text.split("SuperNode ID:")[1].split()[0])
        if not proc.running():
            stop(exe)
            for marker, reason in _REFUSALS.items():
                if marker in text:
                    raise DeploymentError(f"node {node_dir.name}: {reason}")
            raise DeploymentError(
                f"node {node_dir.name}: flower-supernode exited; its log ({proc.log_file}) ends:\n"
                + proc.log_tail()
            )
        time.sleep(0.2)
    stop_node(node_dir)
    raise DeploymentError(
        f"node {node_dir.name}: the SuperLink at {settings.superlink} did not accept it within "
        f"{timeout:g} s (is the district up?)"
    )


def stop_node(node_dir: Path) -> bool:
    stopped = stop(supernode_process(node_dir))
    return stop(executor_process(node_dir)) or stopped


# --- runs ---------------------------------------------------------------------------------


def app_dir() -> Path:
    """The Flower app (this project: pyproject.toml declares [tool.flwr.app])."""
    root = Path(__file__).resolve().parents[1]
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or "[tool.flwr.app]" not in pyproject.read_text():
        raise DeploymentError(
            f"{root}: no pyproject.toml with [tool.flwr.app]; `district run` needs the SchoolFed "
            "source tree (an editable install)"
        )
    return root


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


@dataclass(frozen=True)
class RunRequest:
    rounds: int = 2
    target_epsilon: float = 0.0
    run_id: str = ""  # "" = a new SchoolFed run id; give an old one to resume its ledger plan
    seed: int | None = None
    round_timeout: float | None = None
    evaluate_in_train: bool = True  # one exchange per round (FusedSchoolFedAvg)


def start_run(district_dir: Path, request: RunRequest) -> int:
    """Submit a run with `flwr run`; Flower's run id."""
    district_dir = Path(district_dir).resolve()
    settings = read_district(district_dir)
    if not superlink_process(district_dir).running():
        raise DeploymentError(
            f"the district in {district_dir} is not up (schoolfed district up --dir {district_dir})"
        )
    config = {
        "district-dir": str(district_dir),
        "num-rounds": request.rounds,
        "num-schools": settings.num_schools,
        "n-features": settings.n_features,
        "target-epsilon": float(request.target_epsilon),
        "round-timeout": float(request.round_timeout or settings.round_timeout),
        "schoolfed-run-id": request.run_id,
        "seed": -1 if request.seed is None else request.seed,
        "evaluate-in-train": request.evaluate_in_train,
    }
    return _submit(district_dir, config)


def start_analytics(district_dir: Path, request: dict, *, timeout: float | None = None) -> int:
    """Submit an analytics query (the wire form of aggregator.analytics.Query.request) with
    `flwr run`; Flower's run id. The request travels to the ServerApp as a file in D/runs/."""
    district_dir = Path(district_dir).resolve()
    settings = read_district(district_dir)
    if not superlink_process(district_dir).running():
        raise DeploymentError(
            f"the district in {district_dir} is not up (schoolfed district up --dir {district_dir})"
        )
    requests = district_dir / "runs" / "requests"
    requests.mkdir(parents=True, exist_ok=True)
    request_file = requests / f"{request['query_id']}.json"
    request_file.write_text(json.dumps(request, indent=1))
    config = {
        "district-dir": str(district_dir),
        "num-schools": settings.num_schools,
        "round-timeout": float(timeout or settings.round_timeout),
        "analytics-request": str(request_file),
    }
    return _submit(district_dir, config)


def _submit(district_dir: Path, config: dict[str, object]) -> int:
    overrides = " ".join(f"{k}={_toml_value(v)}" for k, v in config.items())
    result = _flwr(
        ["run", str(app_dir()), CONNECTION, "--run-config", overrides, "--format", "json"],
        district_dir=district_dir,
    )
    data = _json_of(result, "flwr run")
    if not data.get("run-id"):
        raise DeploymentError(f"flwr run did not start a run: {result.stdout.strip()[-300:]}")
    return int(data["run-id"])


def run_status(district_dir: Path, run_id: int) -> str:
    """Flower's status of a run, e.g. 'pending', 'running', 'finished:completed'."""
    data = _json_of(
        _flwr(
            ["list", CONNECTION, "--run-id", str(run_id), "--format", "json"],
            district_dir=district_dir,
        ),
        "flwr list",
    )
    runs = data.get("runs", [])
    return str(runs[0].get("status", "")) if runs else ""


def wait_run(
    district_dir: Path,
    run_id: int,
    *,
    timeout: float,
    progress: Progress | None = None,
    poll: float = 1.0,
) -> dict:
    """Wait for the run's result (the ServerApp writes it: a run's report, a query's answers);
    the result as a dict."""
    district_dir = Path(district_dir).resolve()
    marker = district_dir / "runs" / f"flwr-{run_id}.json"
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    last_check = 0.0
    while time.monotonic() < deadline:
        if marker.is_file():
            done = json.loads(marker.read_text())
            return json.loads((Path(done["run_dir"]) / done.get("result", REPORT)).read_text())
        progress_file = district_dir / "runs" / f"flwr-{run_id}.progress"
        if progress and progress_file.is_file():
            for line in progress_file.read_text().splitlines():
                if line not in seen:
                    seen.add(line)
                    progress(line)
        if time.monotonic() - last_check > 10:  # a failed ServerApp writes no report
            last_check = time.monotonic()
            status = run_status(district_dir, run_id)
            if status.startswith("finished") and not marker.is_file():
                time.sleep(1.0)
                if not marker.is_file():
                    raise DeploymentError(
                        f"run {run_id} ended ({status}) without a report; see flwr log {run_id} "
                        f"(FLWR_HOME={district_dir / 'flwr'})"
                    )
        time.sleep(poll)
    raise DeploymentError(f"run {run_id} did not finish within {timeout:g} s")
