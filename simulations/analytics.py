"""`schoolfed analytics run`: a researcher's query answered by every school through Flower.

Each school of the dataset is a node directory under OUT/nodes/ (created from the dataset the
first time; reused afterwards, so every school's analytics ledger continues). Before anything
is sent, the district computes what the query costs each school (the Gaussian mechanism the
school will calibrate, at its policy's analytics δ) against what its analytics ledger has left,
and refuses the whole query with the figures if any school would exceed its budget. Then
Flower's simulation engine sends the query to every school, the answers are combined
(aggregator/analytics.py) and OUT receives analytics.json, analytics.md, analytics.html and
the charts.

The schools' policies decide the mode: if a school's verified policy requires secure
aggregation (the shipped district policy does), the query is one SecAgg+ round
(federation/analytics_secagg.py: each school adds a noise share σ²/t, the district sees only
the sum); otherwise local mode (`query.analytics` messages, each school adds the full σ²).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from aggregator.analytics import AnalyticsResult, Query, SchoolAnswer, SecureTotal, combine
from aggregator.analytics_report import write_analytics_report
from client_node.analytics import (
    AnalyticsRequest,
    Cost,
    ExactStatistics,
    cost_of,
    exact_statistics,
    mechanism_for,
    refusal,
    secure_noise_std,
    secure_share,
    secure_statistic_names,
    secure_values,
)
from client_node.node import (
    NodeConfig,
    SchoolNode,
    install_policy,
    write_family_tables,
    write_node_config,
)
from federation import deployment as dep
from federation import secagg
from federation.analytics_app import Mod, build_analytics_server_app
from federation.analytics_secagg import (
    SecureAnalyticsOutcome,
    build_secure_analytics_server_app,
    secure_sum,
    secure_total,
)
from federation.client_app import build_client_app
from federation.secagg_server import SecAggSettings
from federation.simulation import run_in_simulation
from policies.loader import default_policy_path, default_trust_anchor
from privacy.mechanisms import noise_generator
from simulations.datasets import load_dataset
from simulations.errors import SimulationError
from simulations.involvement import involvement_district
from simulations.split import split_families

SYNTHETIC_INVOLVEMENT = "synthetic-involvement"
DATASETS = ("nhes-pfi-2019", SYNTHETIC_INVOLVEMENT)  # uci-student: no involvement columns mapped

Progress = Callable[[str], None]
Mode = Literal["local", "secure"]
SECURE_SETTINGS = SecAggSettings(max_weight=secagg.ANALYTICS_MAX_WEIGHT)


class QueryRefused(SimulationError):
    """The query would take at least one school past its analytics budget; nothing was sent."""


class QueryFailed(SimulationError):
    """The secure round failed (e.g. fewer schools than SecAgg+'s threshold): nothing revealed;
    or no school answered (each refused, e.g. its budget was spent meanwhile): no report."""


def _some_answered(query_id: str, answers: Sequence[SchoolAnswer]) -> None:
    if any(a.status == "answered" for a in answers):
        return
    why = sorted({f"{a.school_id} {a.status}: {a.reason}" for a in answers})
    raise QueryFailed(
        f"query {query_id}: no school answered ({len(answers)} replied), so there is no report; "
        + (why[0] if why else "no reply")
    )


def policy_mode(node_dirs: list[Path]) -> Mode:
    """Secure if any school's verified policy requires secure aggregation, else local."""
    required = [SchoolNode(d).policy.secure_aggregation_required for d in node_dirs]
    return "secure" if any(required) else "local"


def default_threshold(schools: int, settings: SecAggSettings = SECURE_SETTINGS) -> int:
    """SecAgg+'s reconstruction threshold t for a round of `schools` (all sharing keys)."""
    return max(2, round(settings.reconstruction_threshold * schools))


def school_tables(dataset: str, *, seed: int = 0) -> dict[str, pd.DataFrame]:
    if dataset == SYNTHETIC_INVOLVEMENT:
        return involvement_district(seed=seed)
    if dataset not in DATASETS:
        raise SimulationError(
            f"--dataset {dataset!r} is not known; choose one of: {', '.join(DATASETS)}"
        )
    return load_dataset(dataset)


def prepare_nodes(
    out: Path,
    tables: dict[str, pd.DataFrame],
    *,
    policy: Path | None = None,
    trust_anchor: Path | None = None,
    seed: int = 0,
) -> list[Path]:
    """Node directories under OUT/nodes/: created from `tables` unless they already exist."""
    policy = policy or default_policy_path()
    trust_anchor = trust_anchor or default_trust_anchor()
    dirs = []
    for school_id, table in tables.items():
        node_dir = out / "nodes" / school_id
        if not (node_dir / "node.yaml").is_file():
            train, test = split_families(table, test_fraction=0.2, seed=seed)
            write_node_config(node_dir, NodeConfig(school_id=school_id))
            install_policy(node_dir, policy=policy, trust_anchor=trust_anchor)
            write_family_tables(node_dir, train=train, test=test)
        dirs.append(node_dir)
    return dirs


def costs(node_dirs: list[Path], request: AnalyticsRequest) -> list[Cost]:
    """What `request` costs each school, from its own policy and analytics ledger."""
    return [cost_of(SchoolNode(node_dir), request) for node_dir in node_dirs]


def check_costs(found: list[Cost]) -> None:
    reason = refusal(found)
    if reason:
        raise QueryRefused(reason)


def run_query(
    query: Query,
    *,
    node_dirs: list[Path],
    seed: int | None = None,
    say: Progress = lambda _: None,
    on_costs: Callable[[list[Cost]], None] = lambda _: None,
    verbose: bool = False,
    extra_mods: Sequence[Mod] = (),
    secure_settings: SecAggSettings = SECURE_SETTINGS,
    value_bound: float = secagg.DEFAULT_VALUE_BOUND,
    query_id: str | None = None,
) -> tuple[AnalyticsResult, list[Cost]]:
    """Check the budget, send the query through Flower's simulation engine, combine. The
    schools' policies choose local or secure mode (`policy_mode`)."""
    query_id = query_id or f"{query.query_id}-{uuid.uuid4().hex[:8]}"
    wire = query.request(seed=seed, query_id=query_id)
    request = AnalyticsRequest.model_validate(wire)
    found = costs(node_dirs, request)
    on_costs(found)
    check_costs(found)
    mode = policy_mode(node_dirs)
    say(
        f"query {query_id}: ε {found[0].epsilon_query:.3f} per school, {len(node_dirs)} schools,"
        f" {'secure aggregation (SecAgg+)' if mode == 'secure' else 'local noise'}"
    )
    received: dict[str, object] = {}

    def done(answers: list[SchoolAnswer], missing: int) -> None:
        received["answers"], received["missing"] = answers, missing

    def done_secure(outcome: SecureAnalyticsOutcome) -> None:
        received["secure"] = outcome

    dirs = [str(d.resolve()) for d in node_dirs]
    server_app = (
        build_secure_analytics_server_app(
            wire,
            num_schools=len(dirs),
            on_done=done_secure,
            settings=secure_settings,
            bound=value_bound,
        )
        if mode == "secure"
        else build_analytics_server_app(wire, num_schools=len(dirs), on_done=done)
    )
    run_in_simulation(
        server_app=server_app,
        client_app=build_client_app(
            node_dir_of=lambda context: Path(dirs[int(context.node_config["partition-id"])]),
            extra_mods=extra_mods,
        ),
        num_nodes=len(dirs),
        verbose=verbose,
    )
    if mode == "secure":
        outcome = received.get("secure")
        if not isinstance(outcome, SecureAnalyticsOutcome):
            raise SimulationError(f"query {query_id}: the federation ended without an outcome")
        if outcome.total is None:
            raise QueryFailed(
                f"query {query_id}: secure aggregation failed, nothing was revealed: "
                f"{outcome.failed or 'no sum'}"
            )
        say(f"secure sum of {outcome.total.vectors} schools (t = {outcome.total.threshold})")
        _some_answered(query_id, outcome.answers)
        return combine(query, outcome.answers, secure=outcome.total), found
    answers = received.get("answers")
    if not isinstance(answers, list):
        raise SimulationError(f"query {query_id}: the federation ended without answers")
    say(f"{len(answers)} answers, {received['missing']} missing")
    _some_answered(query_id, answers)
    return combine(query, answers), found


def run_and_report(
    query: Query,
    *,
    dataset: str,
    out: Path,
    seed: int | None = None,
    say: Progress = lambda _: None,
    on_costs: Callable[[list[Cost]], None] = lambda _: None,
    verbose: bool = False,
) -> AnalyticsResult:
    """The whole command: nodes, budget check, Flower, report files in `out`."""
    tables = school_tables(dataset, seed=seed or 0)
    say(f"{len(tables)} schools of {dataset}: node directories in {out / 'nodes'}")
    node_dirs = prepare_nodes(out, tables, seed=seed or 0)
    result, _ = run_query(
        query, node_dirs=node_dirs, seed=seed, say=say, on_costs=on_costs, verbose=verbose
    )
    write_analytics_report(result, out)
    return result


def run_on_district(
    query: Query,
    *,
    district_dir: Path,
    out: Path,
    say: Progress = lambda _: None,
    on_costs: Callable[[list[Cost]], None] = lambda _: None,
    timeout: float = 600.0,
) -> AnalyticsResult:
    """The same query on a deployed district (Flower's deployment engine, `district up` and
    the schools' SuperNodes running): only the schools can read their ledgers, so the
    ServerApp asks them first what the query costs and sends it only if all can pay. The
    district's verified policy decides the mode (SecAgg+ under the shipped policy)."""
    query_id = f"{query.query_id}-{uuid.uuid4().hex[:8]}"
    run = dep.start_analytics(district_dir, query.request(query_id=query_id), timeout=timeout)
    say(f"query {query_id}: Flower run {run}")
    result = dep.wait_run(district_dir, run, timeout=timeout + 60, progress=say)
    found = [Cost(**c) for c in result.get("costs", [])]
    on_costs(found)
    if result.get("refused"):
        raise QueryRefused(str(result["refused"]))
    answers = [SchoolAnswer(**a) for a in result.get("answers", [])]
    say(f"{len(answers)} answers, {result.get('missing', 0)} missing")
    _some_answered(query_id, answers)
    if result.get("mode") == "secure":
        if not result.get("secure"):
            raise QueryFailed(
                f"query {query_id}: secure aggregation failed, nothing was revealed: "
                f"{result.get('failed') or 'no sum'}"
            )
        combined = combine(query, answers, secure=SecureTotal(**result["secure"]))
    else:
        combined = combine(query, answers)
    write_analytics_report(combined, out)
    return combined


# --- direct computation (benchmarks, tests): the ClientApp handler's statistics code path -----


def exact_answers(
    tables: dict[str, pd.DataFrame], request: AnalyticsRequest, *, k: int
) -> dict[str, dict[str, float]]:
    """Each school's released statistics before noise (the same function the handler uses)."""
    return {s: exact_statistics(t, request, school_id=s, k=k).values for s, t in tables.items()}


def noisy_answers(
    exact: dict[str, dict[str, float]],
    request: AnalyticsRequest,
    *,
    delta: float,
    seed: int,
    noise_scale: float = 1.0,
) -> list[SchoolAnswer]:
    """One seeded repetition of every school's noisy answer. `noise_scale` multiplies each
    school's σ (1: the school's own calibrated noise; 1/√schools: a pooled cell every school
    released carries one school's noise, the central-DP level — a floor, not a release)."""
    mech = mechanism_for(request, delta=delta)
    sigma = mech.sigma * noise_scale
    out = []
    for school, values in exact.items():
        names = list(values)
        generator = noise_generator(seed=seed, label=f"{request.query_id}/{school}")
        noisy = np.array([values[n] for n in names]) + generator.normal(0.0, sigma, len(names))
        out.append(
            SchoolAnswer(
                school, "answered", "", dict(zip(names, map(float, noisy), strict=True)),
                noise_std=sigma,
            )
        )  # fmt: skip
    return out


def secure_answer_total(
    exact: dict[str, dict[str, float]],
    request: AnalyticsRequest,
    *,
    delta: float,
    seed: int,
    threshold: int,
    bound: float = secagg.DEFAULT_VALUE_BOUND,
    settings: SecAggSettings = SECURE_SETTINGS,
) -> SecureTotal:
    """One seeded repetition of secure mode: every school's share (the ClientApp's code:
    `secure_values`, `secure_share`, `encode_analytics`), SecAgg+'s quantized sum without the
    masks (`secure_sum`), and the district's decoding."""
    mech = mechanism_for(request, delta=delta)
    std = secure_noise_std(mech, threshold)
    names = secure_statistic_names(request)
    vectors = []
    for school, values in exact.items():
        released = secure_values(ExactStatistics(values, 0, ()), request, school_id=school)
        generator = noise_generator(seed=seed, label=f"{request.query_id}/{school}/secure")
        share = secure_share(released, names, noise_std=std, generator=generator)
        vector, _ = secagg.encode_analytics(
            share.values,
            share.released,
            suppressed=share.suppressed,
            bound=bound,
            clipping_range=settings.clipping_range,
        )
        vectors.append(vector)
    mean = secure_sum(
        vectors,
        clipping_range=settings.clipping_range,
        quantization_range=settings.quantization_range,
    )
    summed = secagg.decode_analytics(
        mean, vectors=len(vectors), bound=bound, clipping_range=settings.clipping_range
    )
    return secure_total(
        summed,
        request,
        vectors=len(vectors),
        threshold=threshold,
        delta=delta,
        bound=bound,
        quantization_range=settings.quantization_range,
    )


def exact_result(query: Query, exact: dict[str, dict[str, float]]) -> AnalyticsResult:
    """The same estimates without noise, on the pooled (released, k-suppressed) cells."""
    return combine(query, [SchoolAnswer(s, "answered", "", v) for s, v in exact.items()])


@dataclass(frozen=True)
class CoverageStudy:
    """Seeded repetitions of a query against its noise-free (or true) values."""

    repetitions: int
    coverage: dict[str, dict[str, float]]  # type -> {"adjusted": share, "raw": share}
    all_adjusted_covered: float  # share of repetitions where every adjusted interval covers
    top3_order: float  # share of repetitions whose top three (in order) match the reference
    top3_set: float  # share whose top three types (any order) match
    reference_ranking: list[str]
    median_noise_sd: dict[str, float]  # type -> median DP noise sd of the adjusted estimate


def coverage_study(
    query: Query,
    tables: dict[str, pd.DataFrame],
    *,
    repetitions: int,
    k: int,
    delta: float,
    truth: dict[str, float] | None = None,
    noise_scale: float = 1.0,
    mode: Mode = "local",
    threshold: int | None = None,
) -> CoverageStudy:
    """How often each interval covers the noise-free pooled estimate (or `truth`, adjusted
    effects only), and how often the top three match the noise-free ranking. `mode`
    "secure": the SecAgg+ sum of the schools' noise shares, t = `threshold` (SecAgg+'s
    default for the schools if None)."""
    request = AnalyticsRequest.model_validate(query.request(seed=0))
    exact = exact_answers(tables, request, k=k)
    reference = exact_result(query, exact)
    ref = {e["type"]: e for e in reference.effects if e["adjusted"] is not None}
    target = {
        t: {"adjusted": truth[t] if truth else e["adjusted"]["value"], "raw": e["raw"]["value"]}
        for t, e in ref.items()
    }
    hits: dict[str, dict[str, int]] = {t: {"adjusted": 0, "raw": 0} for t in ref}
    noise: dict[str, list[float]] = {t: [] for t in ref}
    all_in = order = same = 0
    top = reference.ranking()[:3]
    for rep in range(repetitions):
        if mode == "secure":
            t = threshold or default_threshold(len(exact))
            total = secure_answer_total(exact, request, delta=delta, seed=rep, threshold=t)
            result = combine(query, [], secure=total)
        else:
            result = combine(
                query,
                noisy_answers(exact, request, delta=delta, seed=rep, noise_scale=noise_scale),
            )
        covered_all = True
        for e in result.effects:
            if e["type"] not in ref or e["adjusted"] is None:
                continue
            for kind in ("adjusted", "raw"):
                est = e[kind]
                inside = est is not None and est["low"] <= target[e["type"]][kind] <= est["high"]
                hits[e["type"]][kind] += int(inside)
                if kind == "adjusted" and not inside:
                    covered_all = False
            noise[e["type"]].append(e["adjusted"]["noise_sd"])
        all_in += covered_all
        order += result.ranking()[:3] == top
        same += set(result.ranking()[:3]) == set(top)
    return CoverageStudy(
        repetitions,
        {t: {kind: n / repetitions for kind, n in h.items()} for t, h in hits.items()},
        all_in / repetitions,
        order / repetitions,
        same / repetitions,
        reference.ranking(),
        {t: float(np.median(v)) if v else float("nan") for t, v in noise.items()},
    )
