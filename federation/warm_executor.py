"""A warm ClientApp executor for a SuperNode started with `--isolation process`.

Flower's own executor starts a fresh `flwr-clientapp` process for every message, and that
process imports torch and Opacus again each time (seconds on a small machine, for a round whose
training takes well under one). This executor is Flower's SuperExec loop with one change: it
imports the ClientApp and its dependencies once, then forks a child per message that runs
Flower's own `run_clientapp` (pull the task from the SuperNode's Runtime API, run the ClientApp,
push the reply). Each message still gets its own process, so nothing of one message's memory is
in the next; only the already-imported code is shared.

    python -m federation.warm_executor --runtime-api-address 127.0.0.1:PORT --parent-pid PID

It ends when the SuperNode (`--parent-pid`) ends, and its children end with it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys

import federation  # noqa: F401  (sets the offline environment first)

# Task poll interval of Flower's SuperExec loop (default 1 s).
os.environ.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.05")


def _preload() -> None:
    """Import what every ClientApp message needs, once."""
    import opacus  # noqa: F401
    import torch

    import federation.client_app  # noqa: F401  (the app, torch, Opacus, the node)

    torch.set_num_threads(1)  # one core per school; the machine runs several


class ForkExecutor:
    """Flower's executor protocol: ClientApp tasks run in a forked child of this process."""

    def __init__(self) -> None:
        self.children: set[int] = set()

    def get_eligible_capacity(self, supported_task_types, *, insecure=False, root_certificates_path=None):  # type: ignore[no-untyped-def]
        del insecure, root_certificates_path
        return supported_task_types, set()

    def wait_for_capacity(self, task_type=None, *, fab_hash=None, insecure=False, root_certificates_path=None):  # type: ignore[no-untyped-def]
        del task_type, fab_hash, insecure, root_certificates_path

    def launch(self, spec):  # type: ignore[no-untyped-def]
        from flwr.supercore.constant import TaskType
        from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor
        from flwr.supercore.superexec.executor.types import LaunchResult

        if spec.task_type != TaskType.CLIENT_APP:
            return SubprocessExecutor().launch(spec)
        pid = os.fork()
        if pid == 0:  # the child: run one ClientApp task, then leave without unwinding
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                from flwr.supercore.tls import validate_and_resolve_root_certificates
                from flwr.supernode.runtime.run_clientapp import run_clientapp

                run_clientapp(
                    runtime_api_address=spec.runtime_api_address,
                    token=spec.token,
                    insecure=spec.insecure,
                    certificates=validate_and_resolve_root_certificates(
                        spec.root_certificates_path, spec.insecure
                    ),
                    parent_pid=spec.parent_pid,
                    runtime_dependency_install=False,
                )
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - a child must never return into the loop
                code = 1
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        self.children.add(pid)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done == 0:
                    continue
            self.children.discard(pid)

    def close(self) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)
    _preload()
    from flwr.supercore.constant import ExecutorType
    from flwr.supercore.superexec import run_superexec as superexec

    executor = ForkExecutor()
    superexec.get_executor = lambda *_a, **_k: executor  # type: ignore[assignment]
    superexec.run_superexec(
        runtime_api_address=args.runtime_api_address,
        insecure=True,  # loopback to this node's own SuperNode
        parent_pid=args.parent_pid,
        runtime_dependency_install=False,
        executor_type=ExecutorType.SUBPROCESS,
    )


if __name__ == "__main__":
    main()
