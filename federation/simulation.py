"""Run a ServerApp and ClientApp on Flower's simulation engine (Ray backend), in-process.

Ray is started by Flower for the run and shut down when it ends, so no process outlives the
call. Each virtual SuperNode uses one CPU, so two schools train at once on a 2-core machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation


class _HideRunSimulationDeprecation(logging.Filter):
    """`run_simulation` is deprecated in favour of `flwr run`; it is still Flower's simulation
    engine, and the in-process form keeps one process tree that we start and stop ourselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "run_simulation` function is deprecated" not in record.getMessage()


logging.getLogger("flwr").addFilter(_HideRunSimulationDeprecation())
log = logging.getLogger(__name__)


def run_in_simulation(
    *,
    server_app: ServerApp,
    client_app: ClientApp,
    num_nodes: int,
    cpus: int = 2,
    verbose: bool = False,
) -> None:
    """Run the apps over `num_nodes` virtual SuperNodes; returns when the ServerApp ends."""
    if not verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    before = _ray_processes()
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=num_nodes,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {
                "num_cpus": cpus,
                "num_gpus": 0,
                "include_dashboard": False,
                "log_to_driver": verbose,
                "logging_level": logging.INFO if verbose else logging.ERROR,
                "configure_logging": True,
            },
        },
        verbose_logging=verbose,
    )
    _reap(_ray_processes() - before)


def _ray_processes() -> set[int]:
    """PIDs of Ray's processes in this process group (Linux /proc): the ones Ray started for
    us, never another user's or another command's."""
    group = os.getpgid(0)
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if (
            b"ray::" in cmdline
            or b"raylet" in cmdline
            or b"gcs_server" in cmdline
            or (b"/ray/" in cmdline and b"python" in cmdline)
        ):
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(int(entry.name)) == group:
                    found.add(int(entry.name))
    return found


def _reap(pids: set[int], *, grace: float = 10.0) -> None:
    """Ray shuts its workers down asynchronously: wait for the ones this run started, then
    end any that are left, so no process outlives the command."""
    deadline = time.monotonic() + grace
    while (pids := {p for p in pids if _alive(p)}) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        log.warning("ending Ray process %d that outlived the simulation", pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie is already gone; its parent (init) reaps it
