"""A ClientApp mod for tests: keeps the exact bytes of every reply a node sends."""

from __future__ import annotations

import uuid
from pathlib import Path

from flwr.app import Message
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage


class CaptureReplies:
    """Outermost mod: what it sees is what leaves the node."""

    def __init__(self, folder: Path) -> None:
        self.folder = str(folder)

    def __call__(self, message: Message, context, call_next) -> Message:
        reply = call_next(message, context)
        data = message_to_proto(reply).SerializeToString()
        (Path(self.folder) / f"{uuid.uuid4().hex}.bin").write_bytes(data)
        return reply


def load(folder: Path) -> list[tuple[bytes, Message]]:
    out = []
    for path in sorted(Path(folder).glob("*.bin")):
        data = path.read_bytes()
        out.append((data, message_from_proto(ProtoMessage.FromString(data))))
    return out


def main() -> None:
    """`python -m tests.integration.capture OUT CAPTURED ROUNDS SEED SCHOOLS FAMILIES POLICY KEY`.

    Runs the simulation in its own process (Ray stays out of the test process) with this mod.
    """
    import sys

    from simulations.runner import SimulationRequest, simulate

    out, captured, rounds, seed, schools, families, policy, pubkey = sys.argv[1:9]
    request = SimulationRequest(
        rounds=int(rounds),
        seed=int(seed),
        out=Path(out),
        schools=tuple(schools.split(",")),
        families_per_school=int(families),
        policy=Path(policy),
        trust_anchor=Path(pubkey),
    )
    simulate(request, client_mods=[CaptureReplies(Path(captured))])


if __name__ == "__main__":
    main()
