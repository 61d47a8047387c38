"""Flower's own `flower-superlink`, with one housekeeping query run less often.

Measured (BENCHMARKS.md, py-spy on the SuperLink during SecAgg+ rounds): the SuperLink is one
Python process answering every HTTPS request of a round (each object of each message is its own
request) and is the busiest process of a deployment round. About a quarter of its CPU went to
`SqlCoreState._cleanup_expired_task_tokens`, two UPDATE statements (a write transaction) that
Flower 1.42 runs before nearly every request: `check_abort` asks for the run's status on every
object pushed or pulled, and the status query cleans up first. The cleanup expires the tokens of
tasks whose heartbeat stopped (Flower's heartbeat patience: tens of seconds), so running it at
most once per `CLEANUP_INTERVAL` seconds changes when an expired task is noticed by at most that
much, and nothing else: every request still reads the run's real status.

    python -m federation.linkstate -- <flower-superlink arguments>

`patchable()` says whether the installed Flower still has what this changes (a test checks it).
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

CLEANUP_INTERVAL = 1.0  # seconds


def _state_class() -> type:
    from flwr.supercore.corestate.sql_corestate import SqlCoreState

    return SqlCoreState


def patchable() -> list[str]:
    """What this Flower lacks of what `throttle_cleanup` changes ([] = all there)."""
    cls = _state_class()
    if not callable(getattr(cls, "_cleanup_expired_task_tokens", None)):
        return [f"{cls.__module__}.{cls.__name__}._cleanup_expired_task_tokens"]
    return []


def throttle_cleanup(cls: type, *, interval: float = CLEANUP_INTERVAL) -> None:
    """Run `cls._cleanup_expired_task_tokens` at most once per `interval` seconds per state."""
    original: Callable[[Any], None] = cls._cleanup_expired_task_tokens  # type: ignore[attr-defined]
    if getattr(original, "throttled", False):
        return
    lock = threading.Lock()
    last: dict[int, float] = {}

    @functools.wraps(original)
    def cleanup(self: Any) -> None:
        now = time.monotonic()
        with lock:
            if now - last.get(id(self), -interval) < interval:
                return
            last[id(self)] = now
        original(self)

    cleanup.throttled = True  # type: ignore[attr-defined]
    cls._cleanup_expired_task_tokens = cleanup  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "--":
        sys.exit("usage: python -m federation.linkstate -- [flower-superlink args]")
    if patchable():
        sys.exit("this Flower's SuperLink cannot be tuned; use flower-superlink")
    throttle_cleanup(_state_class())
    from flwr.superlink.cli import flower_superlink

    sys.argv = ["flower-superlink", *args[1:]]
    flower_superlink()


if __name__ == "__main__":
    main()
