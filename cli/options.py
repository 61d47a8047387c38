"""Argument types shared by the subcommands: each rejects bad input with a clear message."""

from __future__ import annotations

import argparse
import math


def epsilon(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; ε must be finite and > 0")
    return value


def whole_number(text: str, *, minimum: int, what: str = "it") -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not allowed; {what} must be {minimum} or more"
            if minimum != 1
            else f"{text!r} is not allowed; {what} must be at least 1"
        )
    return value


def positive_int(text: str) -> int:
    return whole_number(text, minimum=1)


def seed(text: str) -> int:
    return whole_number(text, minimum=0, what="the seed")


def port(text: str) -> int:
    value = whole_number(text, minimum=1, what="the port")
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; a port is 1 to 65535")
    return value
