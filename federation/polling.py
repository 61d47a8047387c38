"""Shorter waits between polls, on both sides of a deployment.

Flower 1.42 polls with fixed sleeps: a SuperNode with nothing to do sleeps 3 s before asking the
SuperLink again and 0.5 s between looks for its ClientApp's reply
(`flwr.supernode.start_client_internal`), the ServerApp's grid sleeps 3 s between pulls for
replies (`HttpGrid.send_and_receive`), and message contents (objects, pulled one HTTPS request
each) are retried with a backoff from 1 s, doubling to 10 s (`PULL_INITIAL_BACKOFF`): a message
is announced before its objects are in place, so the first pull often finds nothing.

A poll is not free either: every SuperNode poll is an authenticated HTTPS request that the
SuperLink (one Python process: FastAPI, SQLAlchemy on SQLite) answers with a few milliseconds of
CPU, on the same cores as everything else. So waits here are short right after something
happened and grow while nothing does (`Backoff`):

- `PromptGrid` wraps the ServerApp's grid and pulls replies 20 ms after the push, then less
  often, up to every `poll` seconds; everything else is Flower's grid.
- `quick_pulls(module, role)` gives a module's object pulls a short retry backoff (same retries,
  same time limit): from the SuperLink 20 ms doubling to 100 ms, from the node's own SuperNode
  10 ms doubling to 50 ms (in memory, cheap).
- `python -m federation.polling --poll S -- <flower-supernode arguments>` runs Flower's own
  `flower-supernode` with idle polls from 20 ms growing to S seconds (to 1 s once nothing has
  come for 10 s), looks for the ClientApp's reply every 5 ms (the node's own memory) and quick
  object pulls.

These reach into module attributes of Flower 1.42; `patchable()` says whether the installed
Flower still has them (and still sleeps where these settings expect), and a test checks it, so
an upgrade fails loudly instead of silently polling slowly.
"""

from __future__ import annotations

import functools
import inspect
import sys
import time
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any, Literal

from flwr.app import Message
from flwr.serverapp import Grid


class PromptGrid(Grid):
    """Flower's grid, pulling replies soon after the push and then up to every `poll` seconds
    (Flower's: every 3)."""

    def __init__(self, grid: Grid, *, poll: float = 0.1) -> None:
        self._grid = grid
        self.poll = poll
        self.backoff = Backoff(floor=min(FIRST_POLL, poll), cap=poll)
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
        self.backoff.reset()
        polls = 0
        while timeout is None or time.time() < end:
            asked = time.monotonic()
            got = list(self.pull_messages(pending))
            polls += 1
            if not got:
                self.backoff.answered(time.monotonic() - asked)
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if not pending:
                break
            if got:
                self.backoff.reset()  # the other replies are likely close behind
            time.sleep(self.backoff.next())
        self.exchanges.append(
            {
                "began": began,
                "push": pushed - began,
                "replies": time.monotonic() - pushed,
                "sent": sent,
                "received": len(replies),
                "polls": polls,
            }
        )
        return replies

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


FIRST_POLL = 0.02  # seconds: the first wait after something happened
IDLE_AFTER = 10.0  # seconds without a message after which a SuperNode counts as idle
IDLE_POLL = 1.0  # seconds: the longest wait of an idle SuperNode
REPLY_CHECK = 0.005  # seconds between a SuperNode's looks for its ClientApp's reply (memory)
LOAD_FACTOR = 2.0  # wait at least this many times as long as an empty poll took to answer


class Backoff:
    """Short-then-backoff waits: `floor` after `reset()`, growing by `growth` up to `cap`; once
    nothing has reset it for `idle_after` seconds, on up to `idle_cap`.

    A wait is also at least `load_factor` times as long as the last empty poll took to be
    answered (`answered`): a slow answer means a busy server (on a small machine, a busy CPU),
    and asking it more often only makes every answer slower, the useful ones included."""

    def __init__(
        self,
        *,
        floor: float,
        cap: float,
        growth: float = 1.5,
        idle_after: float | None = None,
        idle_cap: float | None = None,
        load_factor: float = LOAD_FACTOR,
    ) -> None:
        self.floor, self.cap, self.growth = floor, cap, growth
        self.idle_after = idle_after
        self.idle_cap = max(cap, idle_cap if idle_cap is not None else cap)
        self.load_factor = load_factor
        self._answer = 0.0
        self.reset()

    def reset(self) -> None:
        self._wait = self.floor
        self._since = time.monotonic()

    def answered(self, seconds: float) -> None:
        """The last empty poll was answered in `seconds`."""
        self._answer = max(0.0, seconds)

    def next(self) -> float:
        """The next wait (and the one after it grows)."""
        idle = self.idle_after is not None and time.monotonic() - self._since >= self.idle_after
        limit = self.idle_cap if idle else self.cap
        wait = min(self._wait, limit)
        self._wait = min(max(wait, self.floor) * self.growth, limit)
        return max(wait, min(self.load_factor * self._answer, self.idle_cap))


# Flower 1.42's own sleeps in flwr.supernode.start_client_internal
SUPERNODE_IDLE_SLEEP = 3  # nothing pulled: wait before asking the SuperLink again
SUPERNODE_REPLY_SLEEP = 0.5  # waiting for the ClientApp's reply (or its objects) in memory


class _SupernodeClock:
    """The `time` module for Flower's SuperNode loop: its idle sleep becomes `polls.next()`,
    its shorter sleeps (looking for the ClientApp's reply in memory) become `reply_check`."""

    def __init__(self, polls: Backoff, *, reply_check: float = REPLY_CHECK) -> None:
        self.polls = polls
        self.reply_check = reply_check

    def sleep(self, seconds: float) -> None:
        if seconds >= SUPERNODE_IDLE_SLEEP:
            time.sleep(self.polls.next())
        else:
            time.sleep(min(seconds, self.reply_check))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


# Object pull backoffs (first retry, longest retry), by where the objects are pulled from:
# the SuperLink answers each retry with real work; the node's own SuperNode from memory.
PULL_BACKOFF = {"superlink": (0.02, 0.1), "supernode": (0.01, 0.05)}
_PULLS = ("pull_objects", "pull_and_inflate_object_from_tree")
Role = Literal["serverapp", "supernode", "clientapp"]
_ROLE_SOURCE: dict[str, str] = {
    "serverapp": "superlink",
    "supernode": "superlink",
    "clientapp": "supernode",
}


def quick_pulls(module: ModuleType, role: Role) -> None:
    """Give `module`'s object pulls a short retry backoff (same retries, same time limit).
    `role`: serverapp, supernode (both pull from the SuperLink) or clientapp (from the node's
    SuperNode)."""
    initial, cap = PULL_BACKOFF[_ROLE_SOURCE[role]]
    for name in _PULLS:
        function = getattr(module, name, None)
        if function is not None and not isinstance(function, functools.partial):
            setattr(
                module,
                name,
                functools.partial(function, initial_backoff=initial, backoff_cap=cap),
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
    missing += _supernode_sleeps_missing()
    return missing


def _supernode_sleeps_missing() -> list[str]:
    """The SuperNode loop's sleeps `_SupernodeClock` tells apart by their length, and the
    function whose result says a message came in."""
    module = _supernode_module()
    if not callable(getattr(module, "_pull_and_store_message", None)):
        return [f"{module.__name__}._pull_and_store_message"]
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return [f"{module.__name__} (source)"]
    return [
        f"{module.__name__}: time.sleep({seconds})"
        for seconds in (SUPERNODE_IDLE_SLEEP, SUPERNODE_REPLY_SLEEP)
        if f"time.sleep({seconds})" not in source
    ]


def _supernode_module() -> ModuleType:
    from flwr.supernode import start_client_internal

    return start_client_internal


def supernode_poll_patchable() -> bool:
    module = _supernode_module()
    return getattr(module, "time", None) is time or isinstance(
        getattr(module, "time", None), _SupernodeClock
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


def quick_supernode(module: ModuleType, *, cap: float) -> Backoff:
    """Short-then-backoff idle polls for Flower's SuperNode loop in `module`, reset whenever a
    message comes in; quick object pulls. The idle polls' backoff."""
    polls = Backoff(
        floor=min(FIRST_POLL, cap),
        cap=cap,
        idle_after=IDLE_AFTER,
        idle_cap=max(cap, IDLE_POLL),
    )
    module.time = _SupernodeClock(polls)  # type: ignore[attr-defined]
    pull_and_store: Callable[..., int | None] = module._pull_and_store_message

    @functools.wraps(pull_and_store)
    def pull_and_store_message(*args: Any, **kwargs: Any) -> int | None:
        began = time.monotonic()
        run_id = pull_and_store(*args, **kwargs)
        if run_id is not None:
            polls.reset()  # the next message of a round comes soon
        else:
            polls.answered(time.monotonic() - began)
        return run_id

    module._pull_and_store_message = pull_and_store_message  # type: ignore[attr-defined]
    quick_pulls(module, "supernode")
    return polls


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[0] != "--poll" or args[2] != "--":
        sys.exit("usage: python -m federation.polling --poll SECONDS -- [flower-supernode args]")
    cap = float(args[1])
    if not supernode_poll_patchable():
        sys.exit("this Flower's SuperNode cannot take a shorter poll; use flower-supernode")
    forget_unreceived_messages(_supernode_module())  # inside the poll timing below
    quick_supernode(_supernode_module(), cap=cap)
    from flwr.supercore.logger import console_handler
    from flwr.supernode.cli import flower_supernode

    console_handler.timestamps = True  # the log says when each message came and went

    sys.argv = ["flower-supernode", *args[3:]]
    flower_supernode()


if __name__ == "__main__":
    main()
