"""Shorter waits between polls, on both sides of a deployment.

Flower 1.42 polls with fixed three-second sleeps: a SuperNode with nothing to do sleeps 3 s
before asking the SuperLink again (`flwr.supernode.start_client_internal`), and the ServerApp's
grid sleeps 3 s between pulls for replies (`HttpGrid.send_and_receive`). A round has a train and
an evaluate exchange, so most of a small round's time was spent asleep (measured: about 10 s
per round for 3 schools whose training takes well under a second; see BENCHMARKS.md).

- `PromptGrid` wraps the ServerApp's grid and pulls replies every `poll` seconds; everything
  else is Flower's grid.
- Message contents (the model's arrays) travel as objects pulled separately, with a retry
  backoff starting at 1 s and doubling (`PULL_INITIAL_BACKOFF`); a message is announced before
  its objects are in place, so a pull usually waited 1 to 3 s. `quick_pulls(module)` gives a
  module's object pulls a 50 ms backoff capped at 0.5 s.
- `python -m federation.polling --poll S -- <flower-supernode arguments>` runs Flower's own
  `flower-supernode` with its idle sleep capped at S seconds and quick object pulls.

These reach into module attributes of Flower 1.42; `patchable()` says whether the installed
Flower still has them, and a test checks it, so an upgrade fails loudly instead of silently
polling slowly.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid


class PromptGrid(Grid):
    """Flower's grid, pulling replies every `poll` seconds instead of every 3."""

    def __init__(self, grid: Grid, *, poll: float = 0.1) -> None:
        self._grid = grid
        self.poll = poll
        # one entry per exchange: when it began, seconds to push, seconds until the last reply
        self.exchanges: list[dict[str, float]] = []

    def set_run(self, run: Any) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> Any:
        return self._grid.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def get_nodes(self) -> Any:
        return self._grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push, then pull until every reply is in or `timeout` has passed (Flower's loop)."""
        messages = list(messages)
        if not messages:
            return []
        began = time.monotonic()
        pending = set(self.push_messages(messages))
        pushed = time.monotonic()
        sent = len(pending)
        end = time.time() + (timeout if timeout is not None else 0.0)
        replies: list[Message] = []
        while timeout is None or time.time() < end:
            got = list(self.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if not pending:
                break
            time.sleep(self.poll)
        self.exchanges.append(
            {
                "began": began,
                "push": pushed - began,
                "replies": time.monotonic() - pushed,
                "sent": sent,
                "received": len(replies),
            }
        )
        return replies

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


class _CappedSleep:
    """The `time` module, with every sleep capped at `cap` seconds."""

    def __init__(self, cap: float) -> None:
        self.cap = cap

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.cap))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


PULL_BACKOFF = 0.05
PULL_BACKOFF_CAP = 0.5
_PULLS = ("pull_objects", "pull_and_inflate_object_from_tree")


def quick_pulls(module: ModuleType) -> None:
    """Give `module`'s object pulls a short retry backoff (same retries, same time limit)."""
    for name in _PULLS:
        function = getattr(module, name, None)
        if function is not None and not isinstance(function, functools.partial):
            setattr(
                module,
                name,
                functools.partial(
                    function, initial_backoff=PULL_BACKOFF, backoff_cap=PULL_BACKOFF_CAP
                ),
            )


def pull_modules() -> dict[str, ModuleType]:
    """The Flower modules whose object pulls `quick_pulls` shortens, by role."""
    from flwr.superlink.grid import http_grid
    from flwr.supernode import start_client_internal
    from flwr.supernode.runtime import run_clientapp

    return {
        "serverapp": http_grid,
        "supernode": start_client_internal,
        "clientapp": run_clientapp,
    }


def patchable() -> list[str]:
    """What this Flower lacks of what the poll and pull settings change ([] = all there)."""
    missing = []
    modules = pull_modules()
    for role, name in (
        ("serverapp", "pull_objects"),
        ("supernode", "pull_objects"),
        ("clientapp", "pull_and_inflate_object_from_tree"),
    ):
        if not callable(getattr(modules[role], name, None)):
            missing.append(f"{modules[role].__name__}.{name}")
    if not supernode_poll_patchable():
        missing.append("flwr.supernode.start_client_internal.time")
    if not callable(getattr(_supernode_module(), "_pull_and_store_message", None)):
        missing.append("flwr.supernode.start_client_internal._pull_and_store_message")
    return missing


def _supernode_module() -> ModuleType:
    from flwr.supernode import start_client_internal

    return start_client_internal


def supernode_poll_patchable() -> bool:
    module = _supernode_module()
    return getattr(module, "time", None) is time or isinstance(
        getattr(module, "time", None), _CappedSleep
    )


def forget_unreceived_messages(module: ModuleType) -> None:
    """Mend Flower 1.42's SuperNode for a SuperLink that restarts in the middle of a run.

    The SuperNode creates a task and stores a message before it pulls the message's objects;
    when the run stops meanwhile (the SuperLink restarted: `RunNotRunningException`), it returns
    without finishing that task. The ClientApp executor then claims that oldest pending task
    and waits for objects that never come, and every later message, of every run, waits
    behind it: the school never answers again until its node is restarted. This wraps the
    receive step so that such a task is finished as failed and its message dropped, exactly
    as Flower's own "failed to receive" path does.
    """
    original = module._pull_and_store_message
    if getattr(original, "_schoolfed_forgets", False):
        return

    @functools.wraps(original)
    def pull_and_store(*, state: Any, object_store: Any, **kwargs: Any) -> int | None:
        created: list[int] = []
        stored: list[str] = []
        create_task, store_message = state.create_task, state.store_message

        def recording_create_task(*a: Any, **k: Any) -> int | None:
            task_id = create_task(*a, **k)
            if task_id is not None:
                created.append(task_id)
            return task_id

        def recording_store_message(message: Message) -> Any:
            stored.append(message.metadata.message_id)
            return store_message(message)

        state.create_task, state.store_message = recording_create_task, recording_store_message
        try:
            run_id = original(state=state, object_store=object_store, **kwargs)
        finally:
            state.create_task, state.store_message = create_task, store_message
        if run_id is None and created:
            from flwr.common.constant import SubStatus

            if stored:
                state.delete_messages(message_ids=stored)
                for message_id in stored:
                    object_store.delete(message_id)
            state.finish_task(
                created[-1],
                sub_status=SubStatus.FAILED,
                details="the run stopped while its message was being received",
            )
        return run_id

    pull_and_store._schoolfed_forgets = True  # type: ignore[attr-defined]
    module._pull_and_store_message = pull_and_store  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[0] != "--poll" or args[2] != "--":
        sys.exit("usage: python -m federation.polling --poll SECONDS -- [flower-supernode args]")
    cap = float(args[1])
    if not supernode_poll_patchable():
        sys.exit("this Flower's SuperNode cannot take a shorter poll; use flower-supernode")
    _supernode_module().time = _CappedSleep(cap)  # type: ignore[attr-defined]
    quick_pulls(_supernode_module())
    forget_unreceived_messages(_supernode_module())
    from flwr.supercore.logger import console_handler
    from flwr.supernode.cli import flower_supernode

    console_handler.timestamps = True  # the log says when each message came and went

    sys.argv = ["flower-supernode", *args[3:]]
    flower_supernode()


if __name__ == "__main__":
    main()
