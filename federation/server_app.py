"""The Flower ServerApp: FedAvg over schools, federated evaluation each round.

The ServerApp only ever sees model arrays, aggregate metrics and each school's status. With
`RunSettings.secure_aggregation` (set from the policy's `secure_aggregation_required`) training
rounds run Flower's SecAgg+ (`federation.secagg_server`) and the district only ever holds the
sum of the schools' updates; without it, plain FedAvg (`SchoolFedAvg`) on the Message API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, ConfigRecordValues, Context, MetricRecord
from flwr.server import ServerConfig
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow import DefaultWorkflow
from flwr.serverapp import Grid, ServerApp

from client_node.model import build_model, get_weights
from client_node.training import TrainSettings
from federation import keys
from federation.client_app import arrays_to_weights, weights_to_arrays
from federation.secagg_server import (
    SchoolSecAggFedAvg,
    SecAggFit,
    SecAggSettings,
    current_round,
    current_weights,
    train_config_dict,
)
from federation.strategy import FusedSchoolFedAvg, SchoolFedAvg, SchoolStatus


@dataclass(frozen=True)
class RunSettings:
    """What the district asks of a federated run."""

    run_id: str
    num_rounds: int
    n_features: int
    num_schools: int
    target_epsilon: float = 0.0  # 0: each school may spend what remains of its budget
    train: TrainSettings = field(default_factory=TrainSettings)
    seed: int | None = None
    round_timeout: float = 600.0
    secure_aggregation: bool = False  # the policy's `secure_aggregation_required`
    secagg: SecAggSettings = field(default_factory=SecAggSettings)
    # deployment, plain rounds: evaluation rides on the next round's training request
    evaluate_in_train: bool = False


@dataclass
class RunOutcome:
    """What a run produced, for the report."""

    weights: dict[str, np.ndarray] | None  # None: no school trained in any round
    federated: dict[int, dict[str, float]]  # round -> aggregated federated evaluation
    central: dict[int, dict[str, float]]  # round -> centralized evaluation (simulations)
    schools: dict[str, SchoolStatus]
    stopped: str = ""  # why rounds were skipped, if they were
    secure_aggregation: bool = False
    secagg_rounds: dict[int, dict] = field(default_factory=dict)  # round -> SecAggRound.as_dict


CentralEvaluation = Callable[[int, dict[str, np.ndarray]], dict[str, float]]
RoundCallback = Callable[[int, dict[str, float]], None]
RoundEndCallback = Callable[[int], None]


def train_config(settings: RunSettings) -> ConfigRecord:
    config: dict[str, ConfigRecordValues] = {
        keys.RUN_ID: settings.run_id,
        keys.PLANNED_ROUNDS: settings.num_rounds,
        keys.TARGET_EPSILON: settings.target_epsilon,
        keys.LOCAL_EPOCHS: settings.train.local_epochs,
        keys.BATCH_SIZE: settings.train.batch_size,
        keys.LEARNING_RATE: settings.train.learning_rate,
        keys.MOMENTUM: settings.train.momentum,
    }
    if settings.seed is not None:
        config[keys.SEED] = settings.seed
    if settings.evaluate_in_train:
        config[keys.EVALUATE_FIRST] = True
    return ConfigRecord(config)


def build_server_app(
    settings: RunSettings,
    *,
    on_done: Callable[[RunOutcome], None],
    central_evaluation: CentralEvaluation | None = None,
    on_round: RoundCallback | None = None,
    on_round_end: RoundEndCallback | None = None,
) -> ServerApp:
    """A ServerApp for one run; `on_done` receives the outcome when the last round ends.
    `settings.secure_aggregation` chooses SecAgg+ for training rounds. `on_round` receives a
    round's evaluation when it is in; with SecAgg+, `on_round_end` is told when a round's last
    exchange is over (with `evaluate_in_train` the evaluation of round r arrives in round r+1,
    so round times are taken from `on_round_end`)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if settings.secure_aggregation:
            outcome = _run_secagg(
                grid, context, settings, central_evaluation, on_round, on_round_end
            )
        else:
            outcome = _run_plain(grid, context, settings, central_evaluation, on_round)
        on_done(outcome)

    return app


def _evaluator(
    settings: RunSettings, record: Callable[[int, dict[str, float]], None]
) -> SchoolFedAvg:
    return SchoolFedAvg(
        on_evaluate=record,
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=settings.num_schools,
        min_evaluate_nodes=settings.num_schools,
        min_available_nodes=settings.num_schools,
    )


def _run_plain(
    grid: Grid,
    context: Context,
    settings: RunSettings,
    central_evaluation: CentralEvaluation | None,
    on_round: RoundCallback | None,
) -> RunOutcome:
    federated: dict[int, dict[str, float]] = {}

    def record(server_round: int, metrics: dict[str, float]) -> None:
        federated[server_round] = metrics
        if on_round is not None and central_evaluation is None:
            on_round(server_round, metrics)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if central_evaluation is None or (server_round > 0 and server_round not in federated):
            return None  # nothing was trained or evaluated this round
        metrics = central_evaluation(server_round, arrays_to_weights(arrays))
        if on_round is not None and server_round > 0:
            on_round(server_round, {**federated.get(server_round, {}), **metrics})
        return MetricRecord(dict(metrics))

    fused = {"num_rounds": settings.num_rounds} if settings.evaluate_in_train else {}
    strategy = (FusedSchoolFedAvg if settings.evaluate_in_train else SchoolFedAvg)(
        **fused,
        on_evaluate=record,
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=settings.num_schools,
        min_evaluate_nodes=settings.num_schools,
        min_available_nodes=settings.num_schools,
    )
    initial = get_weights(build_model(settings.n_features))
    result = strategy.start(
        grid=grid,
        initial_arrays=weights_to_arrays(initial),
        num_rounds=settings.num_rounds,
        timeout=settings.round_timeout,
        train_config=train_config(settings),
        evaluate_fn=evaluate_fn if central_evaluation is not None else None,
    )
    central = {
        r: {k: float(v) for k, v in m.items()}  # type: ignore[arg-type]
        for r, m in result.evaluate_metrics_serverapp.items()
    }
    trained = result.arrays is not None and len(result.arrays) > 0
    weights = arrays_to_weights(result.arrays) if trained else None
    return RunOutcome(weights, federated, central, strategy.schools, strategy.stopped)


def _run_secagg(
    grid: Grid,
    context: Context,
    settings: RunSettings,
    central_evaluation: CentralEvaluation | None,
    on_round: RoundCallback | None,
    on_round_end: RoundEndCallback | None = None,
) -> RunOutcome:
    """Flower's legacy DefaultWorkflow: SecAgg+ training rounds, then centralized and
    federated evaluation (Message API, as in the plain path) of the new global model. With
    `evaluate_in_train` (deployment), rounds before the last have no evaluation exchange: the
    next round's masked-vector request carries the model and the schools evaluate it first."""
    federated: dict[int, dict[str, float]] = {}
    central: dict[int, dict[str, float]] = {}

    def record(server_round: int, metrics: dict[str, float]) -> None:
        federated[server_round] = metrics
        if on_round is not None and central_evaluation is None:
            on_round(server_round, metrics)

    initial = get_weights(build_model(settings.n_features))
    names = list(initial)
    fused = settings.evaluate_in_train
    strategy = SchoolSecAggFedAvg(
        names=names,
        initial=[initial[n] for n in names],
        train_config=train_config_dict(train_config(settings)),
        num_schools=settings.num_schools,
        settings=settings.secagg,
        on_fused_evaluate=record if fused else None,
    )
    evaluator = _evaluator(settings, record)

    def evaluate_round(grid: Grid, legacy: Context) -> None:
        server_round = current_round(legacy)
        try:
            evaluate(grid, legacy, server_round)
        finally:
            if on_round_end is not None:
                on_round_end(server_round)

    def evaluate(grid: Grid, legacy: Context, server_round: int) -> None:
        if strategy.stopped:
            return
        if fused and server_round < settings.num_rounds:
            return  # the next round's masked-vector replies carry this model's evaluation
        weights = current_weights(legacy, names)
        messages = evaluator.configure_evaluate(
            server_round, weights_to_arrays(weights), ConfigRecord(), grid
        )
        replies = list(grid.send_and_receive(messages, timeout=settings.round_timeout))
        for reply in replies:
            status = None if reply.has_error() else reply.content.get(keys.STATUS)
            if isinstance(status, ConfigRecord) and status.get("school-id"):
                strategy.node_school[reply.metadata.src_node_id] = str(status["school-id"])
        evaluator.aggregate_evaluate(server_round, replies)
        if central_evaluation is not None and server_round in federated:
            metrics = central_evaluation(server_round, weights)
            central[server_round] = dict(metrics)
            if on_round is not None:
                on_round(server_round, {**federated[server_round], **metrics})

    legacy = LegacyContext(
        context,
        config=ServerConfig(num_rounds=settings.num_rounds, round_timeout=settings.round_timeout),
        strategy=strategy,
    )
    workflow = DefaultWorkflow(
        fit_workflow=SecAggFit(strategy, settings.secagg, timeout=settings.round_timeout),
        evaluate_workflow=evaluate_round,
    )
    workflow(grid, legacy)
    return RunOutcome(
        current_weights(legacy, names) if strategy.trained_any else None,
        federated,
        central,
        strategy.schools,
        strategy.stopped,
        secure_aggregation=True,
        secagg_rounds={r: rec.as_dict() for r, rec in sorted(strategy.rounds.items())},
    )


def secagg_summary(settings: RunSettings, outcome: RunOutcome) -> dict:
    """Whether training rounds used SecAgg+, with its parameters and the rounds it failed."""
    if not outcome.secure_aggregation:
        return {"on": False}
    s = settings.secagg
    return {
        "on": True,
        "protocol": "SecAgg+ (Flower SecAggPlusWorkflow + secaggplus_mod)",
        "reconstruction_threshold": s.reconstruction_threshold,
        "num_shares": s.num_shares,
        "update_bound": s.update_bound,
        "clipping_range": s.clipping_range,
        "quantization_range": s.quantization_range,
        "max_weight": s.max_weight,
        "failed_rounds": {
            str(r): rec["failed"] for r, rec in outcome.secagg_rounds.items() if rec["failed"]
        },
    }
