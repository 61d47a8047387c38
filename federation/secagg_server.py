"""The district's side of SecAgg+: Flower's `SecAggPlusWorkflow` inside its legacy
`DefaultWorkflow`, with a legacy strategy that only ever holds the sum of the schools' updates.

Flower 1.42 offers SecAgg+ only through the legacy API (`LegacyContext`, `DefaultWorkflow`,
a `flwr.server.strategy.Strategy`). Per round:

1. `SchoolSecAggFedAvg.configure_fit` asks every school to train from the global model, with
   the SecAgg+ terms (`federation.secagg`: update bound and scale, array names, max weight).
2. `SecAggPlusWorkflow` runs the four stages; schools answer through `secaggplus_mod`. The
   strategy receives each school's plain status and metrics (no arrays) and the weighted
   average of the masked vectors, which it turns back into a model: global + mean delta.
3. If the protocol halts (too few schools left to reconstruct the masks) or raises, the round
   fails: the global model stays as it was, the reason is recorded, and the next round goes on.

Federated evaluation is not secret (aggregate metrics only) and uses the Message API, exactly
as the plain path does. In deployment (`evaluate-first`), every round but the last saves that
exchange: the masked-vector request carries the global model anyway, so each school evaluates
it before training and sends the figures beside its masked vector; only the last round has a
separate evaluation exchange.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from flwr.app import ConfigRecord, Context
from flwr.common import (
    FitIns,
    FitRes,
    NDArrays,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.compat.common import recorddict_compat as compat
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp import Grid

from aggregator.metrics import weighted_mean
from federation import keys, secagg
from federation.strategy import SchoolStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SecAggSettings:
    """How the district runs SecAgg+ (Flower's parameters, SchoolFed's defaults).

    Every school holds a share of every other school's keys (`num_shares` = 1.0, all of them);
    a round survives as long as `reconstruction_threshold` of them (a fraction) remain.
    """

    num_shares: float = 1.0
    reconstruction_threshold: float = 2 / 3
    update_bound: float = secagg.DEFAULT_UPDATE_BOUND
    clipping_range: float = secagg.DEFAULT_CLIPPING_RANGE
    quantization_range: int = secagg.DEFAULT_QUANTIZATION_RANGE
    modulus_range: int = secagg.DEFAULT_MODULUS_RANGE
    max_weight: float = 10_000.0  # at least the largest school's training families

    @property
    def update_scale(self) -> float:
        return self.clipping_range / self.update_bound


@dataclass
class SecAggRound:
    """What SecAgg+ did in one round (the report shows it)."""

    schools: int = 0  # masked vectors summed
    trained: int = 0  # of which schools that trained (the others sent weight 0)
    dropped: int = 0  # asked, but no masked vector arrived
    clipped_share: float = math.nan  # family-weighted share of delta coordinates clipped
    failed: str = ""  # why the round's aggregate was not used, if it was not

    def as_dict(self) -> dict[str, Any]:
        return {
            "schools": self.schools,
            "trained": self.trained,
            "dropped": self.dropped,
            "clipped_share": self.clipped_share,
            "failed": self.failed,
        }


def _status_of(metrics: dict[str, Scalar]) -> tuple[str, str, str, dict[str, float]]:
    """(school id, status, reason, numeric metrics) from a school's plain SecAgg+ reply."""
    numbers = {
        k: float(v)
        for k, v in metrics.items()
        if k in keys.TRAIN_METRICS and isinstance(v, int | float) and not isinstance(v, bool)
    }
    return (
        str(metrics.get("school-id", "")),
        str(metrics.get("status", "")),
        str(metrics.get("reason", "")),
        numbers,
    )


class SchoolSecAggFedAvg(LegacyFedAvg):
    """FedAvg of the schools' deltas as SecAgg+ sums them; a record of every school's status."""

    def __init__(
        self,
        *,
        names: list[str],
        initial: NDArrays,
        train_config: dict[str, Scalar],
        num_schools: int,
        settings: SecAggSettings,
        on_fused_evaluate: Callable[[int, dict[str, float]], None] | None = None,
    ) -> None:
        super().__init__(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=num_schools,
            min_evaluate_clients=num_schools,
            min_available_clients=num_schools,
            initial_parameters=ndarrays_to_parameters(initial),
            accept_failures=True,
        )
        self.names = names
        self.num_schools = num_schools
        self.settings = settings
        self.train_config: dict[str, Scalar] = {
            **train_config,
            secagg.UPDATE_BOUND: settings.update_bound,
            secagg.UPDATE_SCALE: settings.update_scale,
            secagg.ARRAY_NAMES: ",".join(names),
            secagg.MAX_WEIGHT: settings.max_weight,
        }
        self.schools: dict[str, SchoolStatus] = {}
        self.rounds: dict[int, SecAggRound] = {}
        self.node_school: dict[int, str] = {}  # learnt from the schools' plain statuses
        self.stopped = ""
        self.trained_any = False
        self.aggregated: set[int] = set()  # rounds SecAgg+ completed (whatever the schools said)
        self._global: NDArrays = initial
        self.sampled: set[int] = set()
        # with `evaluate-first` in the training config, each school evaluates the model it is
        # sent (last round's aggregate) and the figures come beside its masked vector
        self.on_fused_evaluate = on_fused_evaluate

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        if self.stopped:
            return []
        self._global = parameters_to_ndarrays(parameters)
        clients = client_manager.sample(
            num_clients=self.num_schools, min_num_clients=self.num_schools
        )
        self.sampled = {c.node_id for c in clients}
        self.rounds[server_round] = SecAggRound()
        fit_ins = FitIns(parameters, {**self.train_config, "server-round": server_round})
        return [(client, fit_ins) for client in clients]

    def _note(self, node_id: int, res: FitRes) -> SchoolStatus | None:
        sid, status, reason, numbers = _status_of(res.metrics)
        if not sid:
            return None
        self.node_school[node_id] = sid
        school = self.schools.setdefault(sid, SchoolStatus(sid, "", ""))
        school.status, school.reason, school.metrics = status, reason, numbers
        if status != "trained":
            log.info("school %s %s: %s", sid, status, reason)
        return school

    def _note_dropped(self, server_round: int, answered: set[int], stage: str) -> int:
        dropped = self.sampled - answered
        for node_id in dropped:
            sid = self.node_school.get(node_id)
            if sid is not None:
                school = self.schools.setdefault(sid, SchoolStatus(sid, "", ""))
                school.status = "dropped"
                school.reason = (
                    f"dropped out of round {server_round} during secure aggregation ({stage})"
                )
        return len(dropped)

    def _fused_evaluation(self, server_round: int, results: list[FitRes]) -> None:
        """Last round's federated evaluation, from the figures beside the masked vectors."""
        if self.on_fused_evaluate is None or server_round < 2:
            return
        n = len(keys.EVAL_PREFIX)
        evaluations = []
        for res in results:
            found = {
                k[n:]: float(v)
                for k, v in res.metrics.items()
                if k in keys.TRAIN_EVALUATION_METRICS
                and isinstance(v, int | float)
                and not isinstance(v, bool)
            }
            if keys.NUM_EXAMPLES in found:  # a school that declined this round evaluated too
                evaluations.append(found)
        if evaluations:
            mean = weighted_mean(evaluations, weight_key=keys.NUM_EXAMPLES)
            self.on_fused_evaluate(server_round - 1, {k: float(v) for k, v in mean.items()})

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        record = self.rounds.setdefault(server_round, SecAggRound())
        self._fused_evaluation(server_round, [res for _, res in results])
        self.aggregated.add(server_round)
        noted = [(proxy, self._note(proxy.node_id, res), res) for proxy, res in results]
        trained = [(s, res) for _, s, res in noted if s is not None and s.status == "trained"]
        record.schools = len(results)
        record.trained = len(trained)
        record.dropped = self._note_dropped(
            server_round, {p.node_id for p, _ in results}, "before its masked vector was summed"
        )
        if not trained:
            declined = [
                s for _, s, _ in noted if s is not None and s.status in ("refused", "excluded")
            ]
            if results and len(declined) == len(results):
                # Refusals hold for the rest of the run (the budget only shrinks): stop asking.
                self.stopped = f"no school can train from round {server_round} on"
                log.warning("%s; the remaining rounds are skipped", self.stopped)
            return None, {}
        aggregate = parameters_to_ndarrays(results[0][1].parameters)  # the same for every school
        delta, record.clipped_share = secagg.decode_aggregate(
            aggregate, names=self.names, scale=self.settings.update_scale
        )
        if not all(np.isfinite(d).all() for d in delta.values()):
            record.failed = "the securely aggregated update is not finite"
            log.error("round %d: %s", server_round, record.failed)
            return None, {}
        for school, _ in trained:
            school.rounds_trained += 1
        self.trained_any = True
        new = [
            (g.astype(np.float64) + delta[name]).astype(g.dtype)
            for name, g in zip(self.names, self._global, strict=True)
        ]
        metrics = weighted_mean([s.metrics for s, _ in trained], weight_key=keys.NUM_EXAMPLES)
        return ndarrays_to_parameters(new), dict(metrics)

    def round_failed(
        self, server_round: int, reason: str, replies: list[tuple[ClientProxy, FitRes]]
    ) -> None:
        """SecAgg+ halted or raised: the round's update is lost, the model stays."""
        record = self.rounds.setdefault(server_round, SecAggRound())
        for proxy, res in replies:
            self._note(proxy.node_id, res)
        self._fused_evaluation(server_round, [res for _, res in replies])
        record.schools = 0
        record.failed = reason
        log.warning("round %d failed: %s; the model is unchanged", server_round, reason)

    def configure_evaluate(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
        return []  # federated evaluation runs on the Message API (see build_server_app)

    def evaluate(self, server_round: int, parameters: Parameters) -> None:
        return None  # centralized evaluation runs after federated evaluation, as in the plain path


class _WatchedSecAggPlus(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow, remembering where and why it halted, with one fix.

    The fix: Flower 1.42 counts a school that never answered the setup or share-keys stage
    among the "dead" schools whose masks the others must help remove in the unmask stage, but
    nobody holds key shares of such a school (and nobody masked with it: a school masks only
    with those whose shares it received), so every survivor fails with a KeyError and the
    round is lost. It happens whenever a SuperNode is down when a round starts, e.g. a school
    restarting between rounds. After each of those two stages the sampled schools are the ones
    still answering; a school dropping out later is still dead and unmasked as before.
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.halted = ""
        self.halted_replies: list[tuple[ClientProxy, FitRes]] = []

    def _watch(
        self,
        stage: str,
        step: Callable[[Grid, LegacyContext, WorkflowState], bool],
        grid: Grid,
        context: LegacyContext,
        state: WorkflowState,
    ) -> bool:
        ok = step(grid, context, state)
        if not ok and state.sampled_node_ids:
            self.halted = (
                f"secure aggregation halted at the {stage} stage: "
                f"{len(state.active_node_ids)} of {len(state.sampled_node_ids)} schools still "
                f"answering, and each school's masks need {state.threshold} to be removed"
            )
            self.halted_replies = list(state.legacy_results)
        return ok

    def setup_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        ok = self._watch("setup", super().setup_stage, grid, context, state)
        state.sampled_node_ids = set(state.active_node_ids)
        return ok

    def share_keys_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        ok = self._watch("share-keys", super().share_keys_stage, grid, context, state)
        state.sampled_node_ids = set(state.active_node_ids)
        return ok

    def collect_masked_vectors_stage(
        self, grid: Grid, context: LegacyContext, state: WorkflowState
    ) -> bool:
        return self._watch(
            "masked-vectors", super().collect_masked_vectors_stage, grid, context, state
        )

    def unmask_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        return self._watch("unmask", super().unmask_stage, grid, context, state)


class SecAggStrategy(Protocol):
    """What `SecAggFit` needs of its legacy strategy (training's and secure analytics')."""

    stopped: str
    aggregated: set[int]
    sampled: set[int]

    def round_failed(
        self, server_round: int, reason: str, replies: list[tuple[ClientProxy, FitRes]]
    ) -> None: ...


@dataclass
class SecAggFit:
    """The fit workflow for `DefaultWorkflow`: one SecAgg+ round that may fail on its own."""

    strategy: SecAggStrategy
    settings: SecAggSettings
    timeout: float | None = None
    workflow: _WatchedSecAggPlus = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.workflow = _WatchedSecAggPlus(
            num_shares=s.num_shares,
            reconstruction_threshold=s.reconstruction_threshold,
            max_weight=s.max_weight,
            clipping_range=s.clipping_range,
            quantization_range=s.quantization_range,
            modulus_range=s.modulus_range,
            timeout=self.timeout,
        )

    def __call__(self, grid: Grid, context: Context) -> None:
        assert isinstance(context, LegacyContext)
        server_round = current_round(context)
        if self.strategy.stopped:
            return
        self.workflow.halted, self.workflow.halted_replies = "", []
        try:
            # A round where every school declined sums weight 0: SecAgg+ divides by it, and
            # the strategy ignores the result. Nothing else here may divide by zero.
            with np.errstate(divide="ignore", invalid="ignore"):
                self.workflow(grid, context)
        except Exception as exc:  # a failed round must not end the run
            log.exception("round %d: secure aggregation raised", server_round)
            self.strategy.round_failed(
                server_round, f"secure aggregation failed: {type(exc).__name__}: {exc}", []
            )
            return
        if self.workflow.halted:
            self.strategy.round_failed(
                server_round, self.workflow.halted, self.workflow.halted_replies
            )
        elif server_round not in self.strategy.aggregated:
            self.strategy.round_failed(
                server_round,
                f"secure aggregation needs at least 2 schools in a round; "
                f"{len(self.strategy.sampled)} took part",
                [],
            )


def current_round(context: Context) -> int:
    return int(context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND])  # type: ignore[arg-type]


def current_weights(context: Context, names: list[str]) -> dict[str, np.ndarray]:
    """The global model the legacy workflow holds, by name."""
    parameters = compat.arrayrecord_to_parameters(
        context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
    )
    return dict(zip(names, parameters_to_ndarrays(parameters), strict=True))


def train_config_dict(record: ConfigRecord) -> dict[str, Scalar]:
    return {k: v for k, v in record.items()}  # type: ignore[misc]
