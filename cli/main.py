"""`schoolfed`: one command, subcommands by user.

    simulate            district researchers: a simulated federated run on real data
    synth               researchers: a synthetic district of school exports
    policy ...          privacy officers: keygen, sign, verify, lint, explain, diff
    audit ...           privacy officers: verify a node's audit log, report on it
    node ...            school IT: ingest, opt-outs, retention; init, register, start, stop
    district ...        district IT: init, up, status, down, run; local (a whole district here)
    analytics run       district researchers: a DP analytics query answered by every school

Every expected failure (bad option, bad file, bad policy, budget) is shown as one line on
stderr with exit status 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from rich.console import Console

from cli import analytics, audit, district, node, policy, simulate, synth

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with where to get help) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="schoolfed", description="Privacy-preserving federated analytics for schools."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (simulate, synth, policy, audit, node, district, analytics):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from aggregator.errors import AggregatorError
    from client_node.errors import NodeError
    from federation.errors import FederationError
    from policies.errors import PolicyError
    from privacy.errors import PrivacyError
    from simulations.errors import SimulationError

    name = " ".join(filter(None, [args.command, getattr(args, "action", None)]))
    # Piped output gets a wide console: school ids and reasons stay whole for grep.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    try:
        return int(args.handler(args, console))
    except (
        SimulationError,
        PolicyError,
        PrivacyError,
        NodeError,
        AggregatorError,
        FederationError,
    ) as exc:
        # One plain line (no wrapping, no markup): operators grep and paste these.
        print(f"schoolfed {name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a file or folder the operator named cannot be read or written
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"schoolfed {name}: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"schoolfed {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
