"""A long-running ClientApp process for a SuperNode started with `--isolation process`.

Flower's own executor starts a fresh `flwr-clientapp` process for every message, and each one
imports torch and Opacus again (seconds on a small machine, for a round whose training takes
well under one). This executor is Flower's SuperExec loop (`run_superexec`, polling the
SuperNode's Runtime API for tasks) with two changes: a ClientApp task runs in this process,
which imported the ClientApp, torch and Opacus once, and the task polls back off while no task
comes (`TASK_POLLS`). Each task does what `flwr-clientapp` does, with
Flower's own functions: pull the message, context and app bundle from the Runtime API, run the
ClientApp, push the reply and the task's status.

Measured (BENCHMARKS.md): a fresh process per message cost about 3 s of imports per message
(torch, then torch._dynamo the first time an optimizer is made) and recomputed the RDP
accountant's per-step figures each time (about 1.5 s); here both are paid once.

What is given up: process isolation between messages. The ClientApp keeps no state between
messages (it opens the node directory afresh each time), and a task that crashes the process
ends the SuperNode's executor: `schoolfed node start` starts both again.

    python -m federation.warm_executor --runtime-api-address 127.0.0.1:PORT --parent-pid PID

It ends when the SuperNode (`--parent-pid`) ends.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from pathlib import Path
from typing import Any

import federation  # noqa: F401  (sets the offline environment first)
from federation.polling import Backoff

# Task polls of Flower's SuperExec loop (Flower's: every 1 s): every 50 ms after a task was
# launched, growing to 100 ms, and to 1 s once no task has come for 10 s. A task is created when
# the SuperNode receives a message, before it has pulled the message's objects from the
# SuperLink, so a short wait here is mostly hidden behind that pull.
TASK_POLLS = {"floor": 0.05, "cap": 0.1, "idle_after": 10.0, "idle_cap": 1.0}

log = logging.getLogger(__name__)


def preload() -> None:
    """Import what every ClientApp message needs, once (what a fresh process paid each time)."""
    import opacus  # noqa: F401
    import torch
    import torch._dynamo  # noqa: F401  (torch.optim imports it when the first optimizer is made)

    import federation.client_app  # noqa: F401  (the app, the node, the privacy accountant)

    torch.set_num_threads(1)  # one core per school: a small machine runs several

    from flwr.supernode.runtime import run_clientapp

    from federation.polling import quick_pulls

    quick_pulls(run_clientapp, "clientapp")


def run_task(*, runtime_api_address: str, token: str) -> None:
    """One ClientApp task, in this process: Flower's `run_clientapp` without its process exit."""
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.cli.install import install_from_fab
    from flwr.clientapp.utils import get_load_client_app_fn
    from flwr.common.config import get_project_dir
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supercore.interceptors import (
        RuntimeTokenHttpInterceptor,
        RuntimeVersionHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.runtime.tracing import RuntimeTracingInterceptor
    from flwr.supernode.runtime.run_clientapp import (
        pull_task_input,
        push_message,
        push_task_output,
    )

    retry = make_simple_http_retry_invoker()
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=True,  # loopback to this node's own SuperNode
        root_certificates=None,
        interceptors=[
            RuntimeTracingInterceptor(),
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
            RuntimeTokenHttpInterceptor(token),
        ],
        retry_invoker=retry,
    )
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    message = context = reply = None
    status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
    marks = [time.monotonic()]
    try:
        heartbeat.start()
        message, context, run, fab = pull_task_input(client)
        marks.append(time.monotonic())
        app_path = get_project_dir(run.fab_id, run.fab_version, fab.hash_str)
        if not Path(app_path).is_dir():  # installed once per app bundle, not per message
            install_from_fab(fab.content, skip_prompt=True)
        load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
        app = load(run.fab_id, run.fab_version, fab.hash_str)
        reply = app(message=message, context=context)
        marks.append(time.monotonic())
        status, details = SubStatus.COMPLETED, ""
    except Exception as exc:  # noqa: BLE001 - reported to the district like flwr-clientapp does
        log.exception("the ClientApp raised an exception")
        details = f"{type(exc)}:<'{exc}'>"
        if message is not None:
            reply = Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details),
                reply_to=message,
            )
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        finally:
            retry.max_tries = 1
            push_task_output(client=client, context=context, sub_status=status, details=details)
            if heartbeat.is_running:
                heartbeat.stop()
            client.close()
            marks.append(time.monotonic())
            steps = ", ".join(
                f"{name} {b - a:.2f} s"
                for name, a, b in zip(("pull", "app", "push"), marks, marks[1:], strict=False)
            )
            kind = message.metadata.message_type if message is not None else "?"
            log.info("task %s: %s", kind, steps)


class _TaskPollClock:
    """The `time` module for Flower's SuperExec loop: its sleep between task polls is the
    backoff's next wait."""

    def __init__(self, polls: Backoff) -> None:
        self.polls = polls

    def sleep(self, seconds: float) -> None:
        del seconds  # Flower's fixed interval; the backoff decides
        time.sleep(self.polls.next())

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class InProcessExecutor:
    """Flower's executor protocol: ClientApp tasks run one at a time in a worker thread of this
    process; other task types go to Flower's subprocess executor."""

    def __init__(self, polls: Backoff | None = None) -> None:
        self._worker: threading.Thread | None = None
        self.polls = polls

    def busy(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def get_eligible_capacity(
        self, supported_task_types, *, insecure=False, root_certificates_path=None
    ):  # type: ignore[no-untyped-def]
        del insecure, root_certificates_path
        # one task at a time (a SuperNode hands out one message at a time anyway)
        return (set() if self.busy() else supported_task_types), set()

    def wait_for_capacity(
        self, task_type=None, *, fab_hash=None, insecure=False, root_certificates_path=None
    ):  # type: ignore[no-untyped-def]
        del task_type, fab_hash, insecure, root_certificates_path

    def launch(self, spec):  # type: ignore[no-untyped-def]
        from flwr.supercore.constant import TaskType
        from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor
        from flwr.supercore.superexec.executor.types import LaunchResult

        if self.polls is not None:
            self.polls.reset()  # a round's next message comes soon
        if spec.task_type != TaskType.CLIENT_APP:
            return SubprocessExecutor().launch(spec)
        if self.busy() and self._worker is not None:
            self._worker.join()
        self._worker = threading.Thread(
            target=run_task,
            kwargs={"runtime_api_address": spec.runtime_api_address, "token": spec.token},
            daemon=True,
        )
        self._worker.start()
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Nothing to reap: tasks are threads of this process."""

    def close(self) -> None:
        """Nothing to end: the worker thread is a daemon of this process."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="SchoolFed's long-running ClientApp executor")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    preload()
    from flwr.supercore.constant import ExecutorType
    from flwr.supercore.superexec import run_superexec as superexec

    polls = Backoff(**TASK_POLLS)
    executor = InProcessExecutor(polls)
    superexec.get_executor = lambda *_a, **_k: executor  # type: ignore[assignment]
    superexec.time = _TaskPollClock(polls)  # type: ignore[assignment]
    superexec.run_superexec(
        runtime_api_address=args.runtime_api_address,
        insecure=True,
        parent_pid=args.parent_pid,
        runtime_dependency_install=False,
        executor_type=ExecutorType.SUBPROCESS,
    )


if __name__ == "__main__":
    main()
