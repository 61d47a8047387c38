"""The ServerApp of a real deployment (`[tool.flwr.app.components] serverapp`).

`schoolfed district run` submits it with `flwr run`; it reads its settings from the run config,
verifies the district policy in the district directory (the district never trains under a policy
that fails verification), runs the same federated rounds as `simulate` and writes the report
into the district directory: D/runs/<run id>/report.{json,md}, auc.png, model.npz and a copy in
D/. The district holds no family data, so the report has the federated evaluation only (no
pooled held-out AUC and no baselines). A run whose config names an `analytics-request` answers
that analytics query instead (`schoolfed analytics run --dir D`): through SecAgg+ with
distributed noise (federation/analytics_secagg.py) when the verified policy requires secure
aggregation, else with each school's local noise.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from aggregator.analytics import SchoolAnswer
from aggregator.registry import save_model
from aggregator.report import write_report
from client_node.analytics import Cost, refusal
from federation.analytics_app import build_analytics_server_app
from federation.analytics_secagg import SecureAnalyticsOutcome, build_secure_analytics_server_app
from federation.errors import DeploymentError
from federation.polling import PromptGrid, pull_modules, quick_pulls
from federation.server_app import RunOutcome, RunSettings, build_server_app, secagg_summary
from policies.trust import load_trusted_policy

log = logging.getLogger(__name__)

server_app = ServerApp()
ANSWERS = "answers.json"  # an analytics run's result, in D/runs/<query id>/


def _config(context: Context) -> dict:
    return dict(context.run_config)


def _district_of(config: dict) -> Path:
    district = Path(str(config.get("district-dir", "")))
    if not str(district) or not (district / "district.yaml").is_file():
        raise DeploymentError(
            f"run config 'district-dir' = {str(district)!r}: not a district directory "
            "(submit runs with schoolfed district run)"
        )
    return district


def settings_from_config(config: dict, *, flower_run_id: int) -> tuple[Path, RunSettings]:
    """The district directory and the run's settings, from `flwr run --run-config`."""
    district = _district_of(config)
    run_id = str(config.get("schoolfed-run-id", "") or "")
    if not run_id:
        run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    seed = int(config.get("seed", -1))
    kwargs: dict = {
        "run_id": run_id,
        "num_rounds": int(config["num-rounds"]),
        "n_features": int(config["n-features"]),
        "num_schools": int(config["num-schools"]),
        "target_epsilon": float(config.get("target-epsilon", 0.0)),
        "seed": None if seed < 0 else seed,
        "round_timeout": float(config.get("round-timeout", 600.0)),
        "evaluate_in_train": bool(config.get("evaluate-in-train", True)),
    }
    return district, RunSettings(**kwargs)


def deployment_report(
    *,
    outcome: RunOutcome,
    settings: RunSettings,
    policy,  # noqa: ANN001 - policies.schema.Policy
    flower_run_id: int,
    wall_seconds: float,
    round_seconds: dict[int, float],
) -> dict:
    """The report, in the same form as `simulate`'s (what a district can know)."""
    nan = float("nan")
    last = outcome.federated.get(settings.num_rounds, {})
    budget = policy.training_budget
    schools = []
    for school_id, s in sorted(outcome.schools.items()):
        m = s.metrics
        schools.append(
            {
                "school_id": school_id,
                "n_families": int(m.get("num-examples", 0)),
                "n_test_families": None,
                "status": s.status,
                "reason": s.reason,
                "rounds_trained": s.rounds_trained,
                "epsilon_spent": m.get("epsilon-spent", nan),
                "epsilon_budget": m.get("epsilon-budget", nan),
                "delta": m.get("delta", nan),
                "noise_multiplier": m.get("noise-multiplier", 0.0),
                "sample_rate": m.get("sample-rate", 0.0),
                "steps": int(m.get("steps", 0)),
                "local_only_auc": None,
            }
        )
    replied = len(outcome.schools)
    return {
        "dataset": "deployment",
        "run_id": settings.run_id,
        "flower_run_id": flower_run_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "policy": {
            "policy_id": policy.policy_id,
            "version": policy.version,
            "period": policy.period,
            "epsilon": policy.budget.epsilon,
            "delta": policy.budget.delta,
            "training_epsilon": budget.epsilon,
            "training_delta": budget.delta,
            "min_school_size": policy.min_school_size,
        },
        "settings": {
            "rounds": settings.num_rounds,
            "epsilon_requested": settings.target_epsilon or None,
            "seed": settings.seed,
            "round_timeout": settings.round_timeout,
            "secure_aggregation": settings.secure_aggregation,
            "evaluate_in_train": settings.evaluate_in_train,
            **dataclasses.asdict(settings.train),
        },
        "rounds": [
            {
                "round": r,
                "auc": outcome.federated.get(r, {}).get("auc", nan),
                "accuracy": outcome.federated.get(r, {}).get("accuracy", nan),
                "loss": outcome.federated.get(r, {}).get("loss", nan),
                "pooled_auc": None,
                "pooled_accuracy": None,
                "seconds": round(round_seconds.get(r, nan), 2),
                "secagg": outcome.secagg_rounds.get(r),
            }
            for r in range(1, settings.num_rounds + 1)
        ],
        "schools": schools,
        "final": {
            "federated": {"auc": last.get("auc", nan), "accuracy": last.get("accuracy", nan)},
            "centralized": {"auc": None, "accuracy": None},
            "local_only": {"auc_mean": None, "auc_min": None, "auc_max": None},
        },
        "test_split": {
            "families": int(last.get("num-examples", 0)) or None,
            "at_risk": None,
            "schools": replied,
        },
        "schools_expected": settings.num_schools,
        "schools_replied": replied,
        "schools_missing": max(0, settings.num_schools - replied),
        "secure_aggregation": secagg_summary(settings, outcome),
        "model_saved": outcome.weights is not None,
        "stopped_early": outcome.stopped,
        "wall_seconds": round(wall_seconds, 1),
    }


def answer_query(grid: Grid, context: Context, district: Path, config: dict) -> None:
    """An analytics run: the pre-flight (what the query costs each school, from its own
    ledger), the query itself only if every school that answered can pay, and the result —
    costs, answers, refusal — in D/runs/<query id>/answers.json."""
    flower_run_id = int(context.run_id)
    runs = district / "runs"
    policy = load_trusted_policy(
        district / "policy" / "district.yaml", pubkey=district / "policy" / "officer.pub"
    )
    # The verified policy decides the mode: under SecAgg+ the pre-flight is plain (it carries
    # no statistic) and the answers come as one SecAgg+ round (federation/analytics_secagg.py).
    secure = policy.secure_aggregation_required
    request = json.loads(Path(str(config["analytics-request"])).read_text())
    progress = runs / f"flwr-{flower_run_id}.progress"
    result: dict = {
        "query_id": request["query_id"],
        "flower_run_id": flower_run_id,
        "mode": "secure" if secure else "local",
    }

    def say(line: str) -> None:
        with open(progress, "a") as fh:
            fh.write(line + "\n")

    def on_costs(found: list[Cost], silent: int) -> bool:
        result["costs"] = [dataclasses.asdict(c) for c in found]
        result["refused"] = refusal(found) or ""
        say(f"pre-flight: {len(found)} schools said what the query costs them, {silent} did not")
        return not result["refused"] and not secure  # secure: SecAgg+ carries the answers

    def on_done(answers: list[SchoolAnswer], missing: int) -> None:
        result["answers"] = [dataclasses.asdict(a) for a in answers]
        result["missing"] = missing
        say(f"{len(answers)} answers, {missing} missing")

    say(f"query {request['query_id']}: waiting for {int(config['num-schools'])} schools")
    grid = PromptGrid(grid, poll=0.1)
    timeout = float(config.get("round-timeout", 600.0))
    app = build_analytics_server_app(
        request,
        num_schools=int(config["num-schools"]),
        on_done=on_done,
        on_costs=on_costs,
        timeout=timeout,
    )
    app(grid, context)
    if secure and "costs" in result and not result["refused"]:
        outcomes: list[SecureAnalyticsOutcome] = []
        build_secure_analytics_server_app(
            request, num_schools=int(config["num-schools"]), on_done=outcomes.append,
            timeout=timeout,
        )(grid, context)  # fmt: skip
        outcome = outcomes[0]
        result["answers"] = [dataclasses.asdict(a) for a in outcome.answers]
        result["missing"] = outcome.missing
        result["secure"] = dataclasses.asdict(outcome.total) if outcome.total else None
        result["failed"] = outcome.failed
        say(
            f"secure sum of {outcome.total.vectors} schools" if outcome.total
            else f"secure aggregation failed: {outcome.failed}"
        )  # fmt: skip
    run_dir = runs / str(request["query_id"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ANSWERS).write_text(json.dumps(result, indent=1))
    (runs / f"flwr-{flower_run_id}.json").write_text(
        json.dumps({"run_id": request["query_id"], "run_dir": str(run_dir), "result": ANSWERS})
    )


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    started = time.monotonic()
    quick_pulls(pull_modules()["serverapp"], "serverapp")
    flower_run_id = int(context.run_id)
    config = _config(context)
    if str(config.get("analytics-request", "")):
        district = _district_of(config)
        answer_query(grid, context, district, config)
        return
    district, settings = settings_from_config(config, flower_run_id=flower_run_id)
    runs = district / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    progress = runs / f"flwr-{flower_run_id}.progress"
    policy = load_trusted_policy(
        district / "policy" / "district.yaml", pubkey=district / "policy" / "officer.pub"
    )
    if settings.num_rounds > policy.training.max_rounds_per_run:
        raise DeploymentError(
            f"num-rounds {settings.num_rounds} is not allowed; the policy allows at most "
            f"{policy.training.max_rounds_per_run}"
        )
    # The verified policy decides: a school under a SecAgg+ policy refuses plain updates.
    settings = dataclasses.replace(settings, secure_aggregation=policy.secure_aggregation_required)
    marks: dict[int, float] = {0: time.monotonic()}
    round_seconds: dict[int, float] = {}

    def say(line: str) -> None:
        with open(progress, "a") as fh:
            fh.write(line + "\n")

    ended: set[int] = set()  # rounds whose last exchange is over (SecAgg+ path)

    def on_round_end(server_round: int) -> None:
        """A round's time: from the end of the previous round's last exchange to the end of
        its own (with its evaluation fused into the next round's training, that is its four
        SecAgg+ exchanges, and the last round's separate evaluation counts in the last round)."""
        now = time.monotonic()
        round_seconds[server_round] = now - marks.get(server_round - 1, marks[0])
        marks[server_round] = now
        ended.add(server_round)
        say(f"round {server_round}: done ({round_seconds[server_round]:.1f} s)")

    def on_round(server_round: int, metrics: dict[str, float]) -> None:
        if server_round not in ended:  # plain path: the evaluation ends the round
            now = time.monotonic()
            round_seconds[server_round] = now - marks.get(server_round - 1, marks[0])
            marks[server_round] = now
        say(
            f"round {server_round}: federated AUC {metrics.get('auc', float('nan')):.3f} "
            f"({round_seconds.get(server_round, float('nan')):.1f} s)"
        )

    outcomes: list[RunOutcome] = []
    say(f"run {settings.run_id}: waiting for {settings.num_schools} schools")
    inner = build_server_app(
        settings, on_done=outcomes.append, on_round=on_round, on_round_end=on_round_end
    )
    prompt = PromptGrid(grid, poll=0.1)
    inner(prompt, context)
    outcome = outcomes[0]
    report = deployment_report(
        outcome=outcome,
        settings=settings,
        policy=policy,
        flower_run_id=flower_run_id,
        wall_seconds=time.monotonic() - started,
        round_seconds=round_seconds,
    )
    report["exchanges"] = [
        {
            "at": round(e["began"] - started, 2),
            "push": round(e["push"], 2),
            "replies": round(e["replies"], 2),
            "sent": int(e["sent"]),
            "received": int(e["received"]),
        }
        for e in prompt.exchanges
        if e["sent"]
    ]
    run_dir = runs / settings.run_id
    if outcome.weights is not None:
        for folder in (run_dir, district):
            save_model(
                folder / "model.npz",
                outcome.weights,
                feature_names=[f"x{i}" for i in range(settings.n_features)],
                metadata={
                    "run_id": settings.run_id,
                    "dataset": "deployment",
                    "rounds": settings.num_rounds,
                },
            )
    write_report(report, run_dir)
    write_report(report, district)
    (runs / f"flwr-{flower_run_id}.json").write_text(
        json.dumps({"run_id": settings.run_id, "run_dir": str(run_dir)})
    )
