"""Secure analytics: the schools' answers travel through Flower's SecAgg+, with distributed DP.

When the policy requires secure aggregation (`secure_aggregation_required`), an analytics query
is one SecAgg+ round of Flower's own protocol — the same legacy-workflow machinery training
uses (`SecAggPlusWorkflow` inside `DefaultWorkflow` at the district, `secaggplus_mod` in every
school's ClientApp, federation/secagg_server.py and federation/secagg.py) — so the district
only ever holds the SUM of the schools' answers. Because no single school's answer is revealed,
each school adds only a share of the noise:

- SecAgg+ removes the masks of a sum only if at least t schools' vectors are in it, t its
  reconstruction threshold (`max(2, round(threshold × schools))`; every school holds a share of
  every other's keys); with fewer survivors the round halts and nothing is revealed. Each school
  reads t from SecAgg+'s own protocol state (never from the district's request) and adds
  N(0, σ²/t) to every entry of its vector, σ the query's calibrated scale (ε at the policy's
  analytics δ, L2 sensitivity Δ₂, exactly as in local mode). Any sum the district can unmask
  contains ≥ t shares, so it carries noise of variance ≥ σ²: for every family the released sum
  is at least as noisy as the school's local-mode answer, so the same (ε, δ) per family holds,
  and the ledger charge per school stays the query's ε.
- Declining schools (budget spent, too small) still send zeros with their noise share,
  uncharged, so the share count never falls below the vectors in the sum; a school that cannot
  compute its share drops out of the round (and a round below t fails).
- The vector (client_node.analytics.secure_statistic_names): the k-suppressed statistics (a cell
  with fewer than k families at a school is zeroed there, before anything is sent, and not
  counted), a 1 per entry the school released (so the district knows how many schools'
  families are in each pooled entry), a 1 for the school's noise share, its suppressed-cell
  count and its clipped-entry count; scaled by clipping_range / value_bound into SecAgg+'s
  range, weight 1 (= max weight), so neither SecAgg+'s clip nor its weighting acts.
- Quantization: SecAgg+ rounds each scaled entry stochastically (unbiased) to steps of
  2C/Q, i.e. 2·value_bound/Q = 0.0048 families for the default bound 10,000 and Q = 2²²; a sum
  of k vectors is off by less than k steps (0.076 for 16 schools), with variance at most
  k·step²/4 (sd 0.0095), which the intervals add to the noise variance (σ² = 302: 3e-7 of it).

**Trust assumption.** The guarantee against the district relies on SecAgg+: it holds if the
district runs Flower's SecAgg+ as specified (honest-but-curious) and controls fewer than t of
the parties in a round. A coalition of the district with schools that reveal their own noise
(or with SuperNodes the district registered itself, posing as schools) subtracts their shares:
against it the remaining families are protected only by the honest schools' noise, σ²/t per
honest school in the sum — down to σ²/t, one school's share, in the worst case. Without a
SecAgg+ policy, analytics stay in local mode (each school adds the full σ², the district sees
every school's noisy answer).

`secure_sum` is the same arithmetic without Flower (masks cancel exactly): benchmarks and tests
combine the schools' shares with it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import (
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.quantization import dequantize, quantize
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_STATE
from flwr.server import ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import DefaultWorkflow
from flwr.serverapp import Grid, ServerApp
from pydantic import ValidationError

from aggregator.analytics import SchoolAnswer, SecureTotal
from client_node.analytics import (
    META_KEYS,
    AnalyticsOutcome,
    AnalyticsRequest,
    answer_secure,
    mechanism_for,
    secure_noise_std,
    secure_statistic_names,
)
from client_node.errors import NodeError
from client_node.node import SchoolNode
from federation import keys, secagg
from federation.secagg_server import SecAggFit, SecAggSettings

log = logging.getLogger(__name__)

# What a school's plain status beside its masked analytics vector may carry (egress allow-list).
# (an answer's own figures, less the suppressed-cell count, which travels masked, plus t)
SECURE_PLAIN_METRICS = (META_KEYS - {"suppressed", "epsilon-after"}) | {"threshold"}


def is_analytics(message: Message) -> bool:
    """Is this SecAgg+ training message an analytics query (not a training round)?"""
    config = message.content.get(secagg.FITINS_CONFIG)
    return isinstance(config, ConfigRecord) and isinstance(config.get(keys.REQUEST), str)


def _request_and_bound(message: Message) -> tuple[AnalyticsRequest, float]:
    config = message.content.get(secagg.FITINS_CONFIG)
    if not isinstance(config, ConfigRecord):
        raise NodeError("the secure analytics query carries no config record")
    try:
        request = AnalyticsRequest.model_validate_json(str(config.get(keys.REQUEST, "")))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise NodeError(
            f"analytics request: '{where}' = {err.get('input')!r}: {err['msg']}"
        ) from None
    bound = config.get(secagg.VALUE_BOUND)
    if not isinstance(bound, int | float) or isinstance(bound, bool) or not bound > 0:
        raise NodeError(f"secure analytics: '{secagg.VALUE_BOUND}' = {bound!r}: must be > 0")
    return request, float(bound)


def protocol_terms(context: Context) -> tuple[int, float, float]:
    """(t, clipping range, max weight) from SecAgg+'s own state at this school."""
    state = context.state.config_records.get(RECORD_KEY_STATE)
    if not isinstance(state, ConfigRecord) or not state.get("threshold"):
        raise NodeError("secure analytics: no SecAgg+ protocol state (setup stage missing)")
    return (
        int(state["threshold"]),  # type: ignore[arg-type]
        float(state["clipping_range"]),  # type: ignore[arg-type]
        float(state["max_weight"]),  # type: ignore[arg-type]
    )


def _plain(outcome: AnalyticsOutcome, node: SchoolNode) -> dict[str, Any]:
    reason = outcome.reason
    if outcome.unavailable and not reason:
        reason = "no column for: " + ", ".join(outcome.unavailable)
    return {
        "school-id": outcome.school_id,
        "status": str(outcome.status),
        "reason": reason,
        "policy-id": node.policy.policy_id,
        "policy-version": str(node.policy.version),
        "noise-std": outcome.noise_std,
        "noise-multiplier": outcome.noise_multiplier,
        "l2-sensitivity": outcome.l2_sensitivity,
        "epsilon-query": outcome.epsilon_query,
        "epsilon-spent": outcome.epsilon_spent,
        "epsilon-budget": outcome.epsilon_budget,
        "delta": outcome.delta,
        "threshold": outcome.threshold,
    }


def secure_analytics_input(message: Message, node_dir: Path, context: Context) -> RecordDict:
    """The masked-vector stage at a school (the ClientApp's train handler calls it; SecAgg+'s
    mod masks what it returns). Raises NodeError — the school drops out of the round — if it
    cannot compute its noise share."""
    request, bound = _request_and_bound(message)
    threshold, clipping_range, max_weight = protocol_terms(context)
    if max_weight != secagg.ANALYTICS_MAX_WEIGHT:
        raise NodeError(
            f"secure analytics: SecAgg+ max weight {max_weight:g}; analytics vectors need "
            f"{secagg.ANALYTICS_MAX_WEIGHT:g} (weight 1 each, so the district gets the sum)"
        )
    node = SchoolNode(node_dir)
    outcome, share = answer_secure(node, request, threshold=threshold, value_bound=bound)
    vector, clipped = secagg.encode_analytics(
        share.values,
        share.released,
        suppressed=share.suppressed,
        bound=bound,
        clipping_range=clipping_range,
    )
    if clipped:
        log.warning(
            "school %s: %d analytics entries clipped to ±%g", node.school_id, clipped, bound
        )
    return secagg.masked_input(vector, 1, _plain(outcome, node))


# --- the district ---------------------------------------------------------------------------


@dataclass
class SecureAnalyticsOutcome:
    """What the district has after a secure query: the sum (or why there is none) and the
    schools' plain statuses."""

    answers: list[SchoolAnswer]  # plain statuses only: no statistics
    total: SecureTotal | None
    failed: str = ""
    missing: int = 0  # schools asked that sent no masked vector


class SecureAnalyticsStrategy(LegacyFedAvg):
    """One SecAgg+ round whose masked vectors are the schools' analytics shares."""

    def __init__(
        self, request: dict[str, Any], *, num_schools: int, settings: SecAggSettings, bound: float
    ) -> None:
        super().__init__(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=num_schools,
            min_evaluate_clients=num_schools,
            min_available_clients=num_schools,
            initial_parameters=ndarrays_to_parameters([]),
            accept_failures=True,
        )
        self.request = AnalyticsRequest.model_validate(request)
        self.wire = json.dumps(request)
        self.num_schools = num_schools
        self.settings = settings
        self.bound = bound
        self.stopped = ""
        self.aggregated: set[int] = set()
        self.sampled: set[int] = set()
        self.outcome = SecureAnalyticsOutcome([], None)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        clients = client_manager.sample(
            num_clients=self.num_schools, min_num_clients=self.num_schools
        )
        self.sampled = {c.node_id for c in clients}
        config: dict[str, Scalar] = {
            keys.RUN_ID: self.request.query_id,
            keys.REQUEST: self.wire,
            secagg.VALUE_BOUND: self.bound,
            "server-round": server_round,
        }
        return [(c, FitIns(parameters, config)) for c in clients]

    def _answers(self, results: list[tuple[ClientProxy, FitRes]]) -> list[SchoolAnswer]:
        out = []
        for _, res in results:
            m = res.metrics

            def num(key: str, m: dict[str, Scalar] = m) -> float:
                value = m.get(key, 0.0)
                return float(value) if isinstance(value, int | float) else 0.0

            out.append(
                SchoolAnswer(
                    school_id=str(m.get("school-id", "")),
                    status=str(m.get("status", "")),
                    reason=str(m.get("reason", "")),
                    values={},
                    noise_std=num("noise-std"),
                    epsilon_query=num("epsilon-query"),
                    epsilon_spent=num("epsilon-spent"),
                    epsilon_budget=num("epsilon-budget"),
                    delta=num("delta"),
                    threshold=int(num("threshold")),
                )
            )
        return out

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        self.aggregated.add(server_round)
        self.outcome.answers = self._answers(results)
        self.outcome.missing = len(self.sampled) - len(results)
        if not results:
            self.outcome.failed = "no masked vector reached the district"
            return None, {}
        mean = parameters_to_ndarrays(results[0][1].parameters)  # the same for every school
        try:
            self.outcome.total = secure_total(
                secagg.decode_analytics(
                    mean,
                    vectors=len(results),
                    bound=self.bound,
                    clipping_range=self.settings.clipping_range,
                ),
                self.request,
                vectors=len(results),
                threshold=self._threshold(),
                delta=self._delta(),
                bound=self.bound,
                quantization_range=self.settings.quantization_range,
            )
        except (ValueError, NodeError) as exc:
            self.outcome.failed = f"the secure sum cannot be used: {exc}"
            log.error("%s", self.outcome.failed)
        return None, {}

    def _threshold(self) -> int:
        """t as SecAgg+ computed it for this round (every school shares keys with every other:
        num_shares = the schools sampled), checked against what each school read from its own
        protocol state and added its noise share for."""
        expected = max(2, round(self.settings.reconstruction_threshold * len(self.sampled)))
        reported = {a.threshold for a in self.outcome.answers}
        if reported != {expected}:
            raise ValueError(
                f"the schools added noise for t = {sorted(reported)}; SecAgg+ used t = {expected}"
            )
        return expected

    def _delta(self) -> float:
        deltas = {a.delta for a in self.outcome.answers if a.delta > 0}
        if len(deltas) != 1:
            raise ValueError(f"the schools report different analytics δ: {sorted(deltas)}")
        return deltas.pop()

    def round_failed(
        self, server_round: int, reason: str, replies: list[tuple[ClientProxy, FitRes]]
    ) -> None:
        self.outcome.answers = self._answers(replies)
        self.outcome.failed = reason
        self.outcome.total = None
        log.warning("secure analytics query failed: %s; nothing was revealed", reason)

    def configure_evaluate(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
        return []

    def evaluate(self, server_round: int, parameters: Parameters) -> None:
        return None


def secure_total(
    summed: secagg.AnalyticsSum,
    request: AnalyticsRequest,
    *,
    vectors: int,
    threshold: int,
    delta: float,
    bound: float,
    quantization_range: int = secagg.DEFAULT_QUANTIZATION_RANGE,
) -> SecureTotal:
    """The district's reading of a decoded sum; ValueError if it must not be used."""
    if vectors < threshold:
        raise ValueError(f"{vectors} vectors in the sum; SecAgg+ needs at least t = {threshold}")
    if summed.noise_shares != vectors:
        raise ValueError(
            f"{summed.noise_shares} noise shares in a sum of {vectors} vectors: a school sent no "
            "noise"
        )
    q_max, q_var = secagg.analytics_quantization(
        vectors=vectors, bound=bound, quantization_range=quantization_range
    )
    if q_max >= 0.5:
        raise ValueError(f"quantization error {q_max:.3f} would blur the contributor counts")
    names = secure_statistic_names(request)
    mech = mechanism_for(request, delta=delta)
    secure_noise_std(mech, threshold)  # t ≥ 2
    sigma = mech.sigma
    return SecureTotal(
        values={
            n: float(v)
            for n, v, c in zip(names, summed.values, summed.released, strict=True)
            if c > 0
        },
        contributors={n: int(c) for n, c in zip(names, summed.released, strict=True) if c > 0},
        vectors=vectors,
        threshold=threshold,
        sigma=sigma,
        quantization_max=q_max,
        quantization_var=q_var,
        suppressed=summed.suppressed,
        clipped=summed.clipped,
        value_bound=bound,
    )


def secure_sum(
    vectors: Sequence[list[np.ndarray]],
    *,
    clipping_range: float = secagg.DEFAULT_CLIPPING_RANGE,
    quantization_range: int = secagg.DEFAULT_QUANTIZATION_RANGE,
) -> list[np.ndarray]:
    """SecAgg+'s arithmetic on the schools' encoded vectors without the masks (they cancel
    exactly modulo the modulus): Flower's stochastic quantization of each school's vector,
    the integer sum, Flower's dequantization, the offset and the division by the vectors."""
    k = len(vectors)
    total = [
        np.sum(
            [q[i] for q in (quantize(v, clipping_range, quantization_range) for v in vectors)], 0
        )
        for i in range(len(vectors[0]))
    ]
    summed = dequantize(total, clipping_range, quantization_range)
    return [(a - (k - 1) * clipping_range) / k for a in summed]


def build_secure_analytics_server_app(
    request: dict[str, Any],
    *,
    num_schools: int,
    on_done: Callable[[SecureAnalyticsOutcome], None],
    settings: SecAggSettings | None = None,
    bound: float = secagg.DEFAULT_VALUE_BOUND,
    timeout: float = 600.0,
) -> ServerApp:
    """A ServerApp that answers `request` with one SecAgg+ round over `num_schools` schools."""
    settings = settings or SecAggSettings(max_weight=secagg.ANALYTICS_MAX_WEIGHT)
    if settings.max_weight != secagg.ANALYTICS_MAX_WEIGHT:
        raise ValueError("secure analytics needs SecAgg+ max weight 1 (each vector weighs 1)")
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        deadline = time.monotonic() + timeout
        while len(list(grid.get_node_ids())) < num_schools and time.monotonic() < deadline:
            time.sleep(0.5)
        strategy = SecureAnalyticsStrategy(
            request, num_schools=num_schools, settings=settings, bound=bound
        )
        legacy = LegacyContext(
            context, config=ServerConfig(num_rounds=1, round_timeout=timeout), strategy=strategy
        )
        workflow = DefaultWorkflow(
            fit_workflow=SecAggFit(strategy, settings, timeout=timeout),
            evaluate_workflow=lambda grid, context: None,
        )
        workflow(grid, legacy)
        on_done(strategy.outcome)

    return app
