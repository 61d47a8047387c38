"""`schoolfed simulate`: a simulated district trains the DP disengagement model with Flower.

Each school of a real dataset becomes a node directory under OUT/nodes/ (its family tables, the
policy, its ε ledger); Flower's simulation engine runs the ServerApp and one ClientApp per
school; the run is scored on the pooled held-out families against two baselines computed in the
same run; OUT receives report.json, report.md, auc.png and model.npz (the latest run), and
OUT/runs/<run id>/ keeps each run's copy. Ledgers persist in OUT/nodes/, so running again with
the same OUT continues every school's budget.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from aggregator.registry import save_model
from aggregator.report import write_report
from client_node.features import LabelRule
from client_node.model import build_model, predict_proba, set_weights
from client_node.node import NodeConfig, install_policy, write_family_tables, write_node_config
from client_node.table import FamilyTable, validate
from client_node.training import TrainSettings, evaluate
from federation.client_app import build_client_app
from federation.server_app import (
    RunOutcome,
    RunSettings,
    SecAggSettings,
    build_server_app,
    secagg_summary,
)
from federation.simulation import run_in_simulation
from policies.loader import default_policy_path, default_trust_anchor
from policies.trust import load_trusted_policy
from privacy.budget import check_epsilon
from simulations import baselines, exports
from simulations.datasets import ADAPTERS, load_dataset
from simulations.errors import SimulationError
from simulations.split import split_families
from simulations.synth import generate_district

DEFAULT_DATASET = "nhes-pfi-2019"


@dataclass(frozen=True)
class SimulationRequest:
    """Everything `schoolfed simulate` is asked to do."""

    dataset: str = DEFAULT_DATASET
    rounds: int = 5
    epsilon: float | None = None  # ε this run may spend per school; None: what remains
    seed: int = 0
    out: Path = Path("runs/latest")
    policy: Path | None = None  # default: the shipped district policy
    trust_anchor: Path | None = None  # the officer's public key; default: the shipped one
    data_dir: Path | None = None
    schools: tuple[str, ...] | None = None
    families_per_school: int | None = None
    # --dataset synthetic: the district `schoolfed synth` writes (schools, families, weeks)
    synthetic: tuple[int, int, int] = (20, 500, 40)
    test_fraction: float = 0.2
    train: TrainSettings = field(default_factory=TrainSettings)


Progress = Callable[[str], None]
RoundProgress = Callable[[int, dict[str, float]], None]


def _check_request(request: SimulationRequest, max_rounds: int, budget: float) -> None:
    if request.rounds < 1 or request.rounds > max_rounds:
        raise SimulationError(
            f"--rounds {request.rounds} is not allowed; the policy allows 1 to {max_rounds}"
        )
    if request.epsilon is not None:
        eps = check_epsilon(request.epsilon, where="--epsilon")
        if eps > budget:
            raise SimulationError(
                f"--epsilon {eps:g} is not allowed; the policy's training budget per school is {budget:g}"
            )
    if not 0 < request.test_fraction < 1:
        raise SimulationError(f"test fraction {request.test_fraction} must be in (0, 1)")
    if request.families_per_school is not None and request.families_per_school < 2:
        raise SimulationError(
            f"--families-per-school {request.families_per_school} must be at least 2"
        )


def _school_tables(request: SimulationRequest) -> dict[str, pd.DataFrame]:
    return _select(load_dataset(request.dataset, data_dir=request.data_dir), request)


def _select(tables: dict[str, pd.DataFrame], request: SimulationRequest) -> dict[str, pd.DataFrame]:
    if request.schools:
        unknown = [s for s in request.schools if s not in tables]
        if unknown:
            raise SimulationError(
                f"school {unknown[0]!r} is not in {request.dataset}; schools: {', '.join(tables)}"
            )
        tables = {s: tables[s] for s in request.schools}
    if request.families_per_school is not None:
        rng = np.random.default_rng(request.seed)
        tables = {
            s: t.iloc[np.sort(rng.permutation(len(t))[: request.families_per_school])].reset_index(
                drop=True
            )
            for s, t in tables.items()
        }
    return tables


def _prepare_nodes(
    tables: dict[str, pd.DataFrame],
    request: SimulationRequest,
    policy_path: Path,
    trust: Path,
    *,
    from_store: bool,
) -> tuple[list[Path], dict[str, FamilyTable], dict[str, FamilyTable]]:
    """Write each school's node directory; return node dirs and the validated train/test tables."""
    nodes_root = request.out / "nodes"
    node_dirs, train, test = [], {}, {}
    for school_id, table in tables.items():
        node_dir = nodes_root / school_id
        train_frame, test_frame = split_families(
            table, test_fraction=request.test_fraction, seed=request.seed
        )
        train[school_id] = validate(train_frame, source=f"{school_id} training families")
        test[school_id] = validate(test_frame, source=f"{school_id} held-out families")
        write_node_config(node_dir, NodeConfig(school_id=school_id))
        install_policy(node_dir, policy=policy_path, trust_anchor=trust)
        write_family_tables(
            node_dir, train=train_frame, test=test_frame, pseudonymize=not from_store
        )
        node_dirs.append(node_dir)
    return node_dirs, train, test


def _scores(weights: dict[str, np.ndarray], test: FamilyTable) -> dict[str, float]:
    model = build_model(len(test.feature_names))
    set_weights(model, weights)
    result = evaluate(model, test)
    return {"auc": result.auc, "accuracy": result.accuracy, "loss": result.loss}


def simulate(
    request: SimulationRequest,
    *,
    progress: Progress | None = None,
    on_round: RoundProgress | None = None,
    client_mods: Sequence = (),
    verbose: bool = False,
) -> dict:
    """Run the simulation and write the report; return the report as a dict."""
    say = progress or (lambda _msg: None)
    started = time.monotonic()
    policy_path = Path(request.policy) if request.policy is not None else default_policy_path()
    trust = Path(request.trust_anchor) if request.trust_anchor else default_trust_anchor()
    policy = load_trusted_policy(policy_path, pubkey=trust)  # every node will check it too
    _check_request(request, policy.training.max_rounds_per_run, policy.training_budget.epsilon)

    out = Path(request.out)
    if out.exists() and not out.is_dir():
        raise SimulationError(f"--out {out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".schoolfed-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SimulationError(f"--out {out}: cannot write there ({exc.strerror})") from None
    say(f"loading {request.dataset}")
    district: exports.District | None = None
    if request.dataset in ADAPTERS:
        tables = _school_tables(request)
    else:
        root = _exports_root(request, out, say)
        district = exports.ingest_district(
            exports.school_exports(root),
            nodes_root=out / "nodes",
            policy=policy_path,
            trust_anchor=trust,
            # a synthetic year is labelled mid-way, where its families drift away; a real
            # school's exports at their latest labelled week
            snapshot_week=request.synthetic[2] // 2
            if request.dataset == exports.SYNTHETIC
            else None,
            progress=say,
        )
        tables = _select(district.tables, request)
    node_dirs, train, test = _prepare_nodes(
        tables, request, policy_path, trust, from_store=district is not None
    )
    eligible = [s for s in train if len(train[s]) + len(test[s]) >= policy.min_school_size]
    if not eligible:
        raise SimulationError(
            f"no school has the policy's minimum of {policy.min_school_size} families"
        )
    pooled_test = baselines.pool([test[s] for s in eligible])
    n_features = len(pooled_test.feature_names)

    settings = RunSettings(
        run_id=f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}",
        num_rounds=request.rounds,
        n_features=n_features,
        num_schools=len(node_dirs),
        target_epsilon=request.epsilon or 0.0,
        train=request.train,
        seed=request.seed,
        secure_aggregation=policy.secure_aggregation_required,
        # SecAgg+ caps each school's weight at max_weight: at least the largest school
        secagg=SecAggSettings(max_weight=float(max((len(t) for t in train.values()), default=1))),
    )
    outcomes: list[RunOutcome] = []
    server_app = build_server_app(
        settings,
        on_done=outcomes.append,
        central_evaluation=lambda _r, weights: _scores(weights, pooled_test),
        on_round=on_round,
    )
    dirs = [str(d.resolve()) for d in node_dirs]
    client_app = build_client_app(
        node_dir_of=lambda context: Path(dirs[int(context.node_config["partition-id"])]),
        extra_mods=client_mods,
    )
    say(f"federated training: {len(node_dirs)} schools, {request.rounds} rounds")
    run_in_simulation(
        server_app=server_app, client_app=client_app, num_nodes=len(node_dirs), verbose=verbose
    )
    if not outcomes:
        raise SimulationError("the federated run ended without a result (see the log above)")
    outcome = outcomes[0]

    say("baselines: centralized and local-only")
    central = baselines.centralized(baselines.pool([train[s] for s in eligible]), pooled_test)
    budget = policy.training_budget
    local_epsilon = min(request.epsilon or budget.epsilon, budget.epsilon)
    trained = [s for s in eligible if s in outcome.schools and outcome.schools[s].rounds_trained]
    local = {
        s: baselines.local_only(
            train[s],
            pooled_test,
            school_id=s,
            epsilon=local_epsilon,
            delta=budget.delta,
            max_grad_norm=policy.training.max_grad_norm,
            rounds=request.rounds,
            settings=request.train,
            seed=request.seed,
        )
        for s in trained  # a school that could not train has no "alone, same ε" to compare
    }
    local_aucs = [a for a in local.values() if a is not None and math.isfinite(a)]

    nan = float("nan")
    final = (
        _scores(outcome.weights, pooled_test)
        if outcome.weights is not None
        else {"auc": nan, "accuracy": nan, "loss": nan}
    )
    report = {
        "dataset": request.dataset,
        "run_id": settings.run_id,
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
            "rounds": request.rounds,
            "epsilon_requested": request.epsilon,
            "seed": request.seed,
            "test_fraction": request.test_fraction,
            **asdict(request.train),
        },
        "rounds": [
            {
                "round": r,
                "auc": outcome.federated.get(r, {}).get("auc", float("nan")),
                "accuracy": outcome.federated.get(r, {}).get("accuracy", float("nan")),
                "loss": outcome.federated.get(r, {}).get("loss", float("nan")),
                "pooled_auc": outcome.central.get(r, {}).get("auc", float("nan")),
                "pooled_accuracy": outcome.central.get(r, {}).get("accuracy", float("nan")),
                "secagg": outcome.secagg_rounds.get(r),
            }
            for r in range(1, request.rounds + 1)
        ],
        "schools": [_school_row(s, train[s], test[s], outcome, local.get(s)) for s in train],
        "final": {
            "federated": {"auc": final["auc"], "accuracy": final["accuracy"]},
            "centralized": central,
            "local_only": {
                "auc_mean": float(np.mean(local_aucs)) if local_aucs else float("nan"),
                "auc_min": min(local_aucs, default=float("nan")),
                "auc_max": max(local_aucs, default=float("nan")),
            },
        },
        "test_split": {
            "families": len(pooled_test),
            "at_risk": int(pooled_test.labels.sum()),
            "schools": len(eligible),
        },
        "secure_aggregation": secagg_summary(settings, outcome),
        "model_saved": outcome.weights is not None,
        "stopped_early": outcome.stopped,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    if district is not None and outcome.weights is not None:
        report["disengagement"] = _disengagement_report(
            district, request, out, {s: test[s] for s in eligible}, outcome.weights
        )
    run_dir = out / "runs" / settings.run_id
    if outcome.weights is not None:
        for folder in (run_dir, out):  # the latest model in OUT, every run's in OUT/runs/
            save_model(
                folder / "model.npz",
                outcome.weights,
                feature_names=list(pooled_test.feature_names),
                metadata={
                    "run_id": settings.run_id,
                    "dataset": request.dataset,
                    "rounds": request.rounds,
                },
            )
    else:
        say("no school trained: the previous model (if any) is kept")
    write_report(report, run_dir)
    write_report(report, out)
    return report


def _exports_root(request: SimulationRequest, out: Path, say: Progress) -> Path:
    if request.dataset == exports.SYNTHETIC:
        schools, families, weeks = request.synthetic
        rule = LabelRule()
        needed = 2 * max(rule.baseline_weeks, rule.horizon_weeks)
        if weeks < needed:
            raise SimulationError(
                f"--synthetic weeks {weeks} is too short: the label needs {rule.baseline_weeks} "
                f"weeks before the mid-year snapshot and {rule.horizon_weeks} after; use at least {needed}"
            )
        root = out / "exports"
        say(
            f"writing a synthetic district: {schools} schools × {families} families × {weeks} weeks"
        )
        generate_district(
            schools=schools, families=families, weeks=weeks, seed=request.seed, out=root
        )
        return root
    root = Path(request.dataset)
    if not root.is_dir():
        raise SimulationError(
            f"--dataset {request.dataset!r} is neither a known dataset "
            f"({', '.join(sorted(ADAPTERS))}, {exports.SYNTHETIC}) nor a folder of school exports"
        )
    return root


def _disengagement_report(
    district: exports.District,
    request: SimulationRequest,
    out: Path,
    test: dict[str, FamilyTable],
    weights: dict[str, np.ndarray],
) -> dict:
    """The model against the schools' rule of thumb, on the observed label and (synthetic
    districts) on the generator's own record of who disengages."""
    model = build_model(len(next(iter(test.values())).feature_names))
    set_weights(model, weights)
    observed, scores, rule = [], [], []
    for school, table in test.items():
        observed += table.labels.astype(int).tolist()
        scores += predict_proba(model, table.features).tolist()
        flags = district.rule_of_thumb[school]
        rule += [float(flags.get(pid, 0.0)) for pid in table.family_ids]
    result: dict = {
        "label": LabelRule().model_dump(),
        "families": len(observed),
        "disengaging": int(sum(observed)),
        "model_auc": exports.auc(observed, scores),
        "rule_of_thumb_auc": exports.auc(observed, rule),
        "rule_of_thumb": "no school event attended in the last 4 weeks",
    }
    truth_file = out / "exports" / exports.GROUND_TRUTH
    if request.dataset == exports.SYNTHETIC and truth_file.is_file():
        truth = exports.truly_disengaging(
            truth_file, out / "nodes", district, horizon_weeks=LabelRule().horizon_weeks
        )
        labels = [truth[s].get(pid, 0) for s, t in test.items() for pid in t.family_ids]
        result["ground_truth"] = {
            "disengaging": int(sum(labels)),
            "model_auc": exports.auc(labels, scores),
            "rule_of_thumb_auc": exports.auc(labels, rule),
        }
    return result


def _school_row(
    school_id: str,
    train: FamilyTable,
    test: FamilyTable,
    outcome: RunOutcome,
    local_auc: float | None,
) -> dict:
    status = outcome.schools.get(school_id)
    metrics = status.metrics if status is not None else {}
    return {
        "school_id": school_id,
        "n_families": len(train),
        "n_test_families": len(test),
        "status": status.status if status is not None else "no reply",
        "reason": status.reason if status is not None else "",
        "rounds_trained": status.rounds_trained if status is not None else 0,
        "epsilon_spent": metrics.get("epsilon-spent", float("nan")),
        "epsilon_budget": metrics.get("epsilon-budget", float("nan")),
        "delta": metrics.get("delta", float("nan")),
        "noise_multiplier": metrics.get("noise-multiplier", 0.0),
        "sample_rate": metrics.get("sample-rate", 0.0),
        "steps": int(metrics.get("steps", 0)),
        "local_only_auc": local_auc,
    }
