"""A whole district on this machine, on Flower's deployment engine (not the simulation engine).

One SuperLink (TLS, SuperNode authentication, state database) and one SuperNode per school,
each a separate process with its own node directory, built the way a school builds it: a
synthetic export (`schoolfed synth`), `node init`, `node ingest`, the family tables computed at
the node, `node register`, `node start`. Then `district run` trains, the report is written to
OUT/district/, and everything is stopped, also when something fails.

    OUT/exports/<school>/     the synthetic exports (and ground_truth.json)
    OUT/district/             the district directory (see federation.deployment)
    OUT/nodes/<school>/       each school's node directory
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from client_node.ingest import ingest_export
from client_node.snapshot import write_tables_from_store
from federation import deployment as dep
from policies.loader import default_policy_path, default_trust_anchor, load_policy
from simulations.errors import SimulationError
from simulations.synth import generate_district

Progress = Callable[[str], None]


@dataclass(frozen=True)
class LocalDistrictRequest:
    out: Path
    schools: int = 3
    families: int = 120
    weeks: int = 20
    rounds: int = 2
    seed: int = 0
    epsilon: float | None = None
    policy: Path | None = None
    trust_anchor: Path | None = None
    timeout: float = 600.0


@dataclass
class LocalDistrict:
    """A district and its schools' node directories, set up on this machine."""

    district_dir: Path
    node_dirs: dict[str, Path] = field(default_factory=dict)
    node_ids: dict[str, int] = field(default_factory=dict)

    def stop(self) -> None:
        """Stop every node and the SuperLink (safe to call more than once)."""
        for node_dir in self.node_dirs.values():
            with contextlib.suppress(Exception):
                dep.stop_node(node_dir)
        dep.district_down(self.district_dir)


def build_local_district(
    request: LocalDistrictRequest, *, progress: Progress | None = None
) -> LocalDistrict:
    """Exports, district and node directories; nothing is started."""
    say = progress or (lambda _m: None)
    out = Path(request.out).resolve()
    if (out / "district" / dep.DISTRICT_FILE).exists():
        raise SimulationError(
            f"--out {out}: a local district is already there; choose a new folder"
        )
    if request.schools < 1 or request.families < 1 or request.rounds < 1:
        raise SimulationError("schools, families and rounds must each be at least 1")
    policy = Path(request.policy) if request.policy else default_policy_path()
    trust = Path(request.trust_anchor) if request.trust_anchor else default_trust_anchor()
    if request.schools < 2 and load_policy(policy).secure_aggregation_required:
        raise SimulationError(
            f"--schools {request.schools}: the policy {policy} requires secure aggregation, "
            "which needs at least 2 schools"
        )
    say(
        f"writing {request.schools} synthetic schools × {request.families} families × "
        f"{request.weeks} weeks"
    )
    exports = generate_district(
        schools=request.schools,
        families=request.families,
        weeks=request.weeks,
        seed=request.seed,
        out=out / "exports",
    )
    school_ids = sorted(p.name for p in exports.iterdir() if p.is_dir())
    # The nodes are built first: the district's model width comes from the schools' tables.
    staging: dict[str, Path] = {}
    widths = set()
    district_dir = out / "district"
    settings = dep.init_district(
        district_dir, policy=policy, trust_anchor=trust, num_schools=len(school_ids)
    )
    address, ca, district_policy, anchor = dep.district_node_files(district_dir)
    for school in school_ids:
        node_dir = out / "nodes" / school
        say(f"{school}: node init, ingest, family tables")
        dep.init_node(
            node_dir,
            school_id=school,
            superlink=address,
            ca_cert=ca,
            policy=district_policy,
            trust_anchor=anchor,
        )
        ingest_export(exports / school, node_dir=node_dir)
        tables = write_tables_from_store(node_dir, week=request.weeks // 2, seed=request.seed)
        widths.add(tables.n_features)
        staging[school] = node_dir
    if len(widths) != 1:
        raise SimulationError(f"the schools' family tables differ in width: {sorted(widths)}")
    width = widths.pop()
    if width != settings.n_features:
        dep.set_district_features(district_dir, width)
    return LocalDistrict(district_dir=district_dir, node_dirs=staging)


@contextlib.contextmanager
def running(
    district: LocalDistrict, *, progress: Progress | None = None
) -> Iterator[LocalDistrict]:
    """SuperLink up, every school registered and started; all stopped on the way out."""
    say = progress or (lambda _m: None)
    try:
        say("district up: flower-superlink with TLS, SuperNode authentication, state database")
        dep.district_up(district.district_dir)
        for school, node_dir in district.node_dirs.items():
            if school not in district.node_ids:
                district.node_ids[school] = dep.register_node(
                    district_dir=district.district_dir, public_key=node_dir / "node.pub"
                )
        for school, node_dir in district.node_dirs.items():
            say(f"{school}: node start")
            dep.start_node(node_dir)
        yield district
    finally:
        say("stopping every node and the SuperLink")
        district.stop()


def run_local_district(request: LocalDistrictRequest, *, progress: Progress | None = None) -> dict:
    """Build, start, train `rounds` rounds, write the report, stop everything; the report."""
    say = progress or (lambda _m: None)
    started = time.monotonic()
    district = build_local_district(request, progress=say)
    with running(district, progress=say):
        run = dep.start_run(
            district.district_dir,
            dep.RunRequest(
                rounds=request.rounds,
                target_epsilon=request.epsilon or 0.0,
                seed=request.seed,
            ),
        )
        say(f"flower run {run} submitted")
        report = dep.wait_run(district.district_dir, run, timeout=request.timeout, progress=say)
    report["local_district_seconds"] = round(time.monotonic() - started, 1)
    return report
