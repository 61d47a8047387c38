"""Run a ServerApp and ClientApp on Flower's simulation engine (Ray backend), in-process.

Ray is started by Flower for the run and shut down when it ends, so no process outlives the
call. Each virtual SuperNode uses one CPU, so two schools train at once on a 2-core machine.
"""

from __future__ import annotations

import logging

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation


class _HideRunSimulationDeprecation(logging.Filter):
    """`run_simulation` is deprecated in favour of `flwr run`; it is still Flower's simulation
    engine, and the in-process form keeps one process tree that we start and stop ourselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "run_simulation` function is deprecated" not in record.getMessage()


logging.getLogger("flwr").addFilter(_HideRunSimulationDeprecation())


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
