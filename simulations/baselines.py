"""The two baselines a federated run is judged against, on the same held-out families.

- centralized: a non-private logistic regression on everyone's training families pooled (what
  a district could reach if privacy did not matter);
- local only: each school training alone, under the same DP budget and schedule.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score

from client_node.model import build_model, get_weights, set_weights
from client_node.node import noise_generator
from client_node.table import FamilyTable
from client_node.training import PrivateTrainer, TrainSettings, evaluate, poisson_schedule
from privacy.accountant import calibrate_noise_multiplier
from privacy.errors import BudgetExceeded


def pool(tables: list[FamilyTable]) -> FamilyTable:
    return FamilyTable(
        np.concatenate([t.family_ids for t in tables]),
        np.concatenate([t.features for t in tables]),
        np.concatenate([t.labels for t in tables]),
        tables[0].feature_names,
    )


def centralized(train: FamilyTable, test: FamilyTable) -> dict[str, float]:
    model = LogisticRegression(C=0.1, max_iter=5000).fit(train.features, train.labels)
    scores = model.predict_proba(test.features)[:, 1]
    return {
        "auc": float(roc_auc_score(test.labels, scores)),
        "accuracy": float(accuracy_score(test.labels, scores >= 0.5)),
    }


def local_only(
    train: FamilyTable,
    test: FamilyTable,
    *,
    school_id: str,
    epsilon: float,
    delta: float,
    max_grad_norm: float,
    rounds: int,
    settings: TrainSettings,
    seed: int,
) -> float | None:
    """AUC on `test` of a model the school trains alone at ε; None if ε cannot buy a round."""
    sample_rate, steps = poisson_schedule(len(train), settings)
    try:
        sigma = calibrate_noise_multiplier(
            history=[], target_epsilon=epsilon, delta=delta, sample_rate=sample_rate,
            steps=steps * rounds,
        )  # fmt: skip
    except BudgetExceeded:
        return None
    weights = get_weights(build_model(len(train.feature_names)))
    for r in range(1, rounds + 1):
        model = build_model(len(train.feature_names))  # Opacus hooks a model once: a fresh one
        set_weights(model, weights)
        PrivateTrainer(
            model,
            train,
            noise_multiplier=sigma,
            sample_rate=sample_rate,
            max_grad_norm=max_grad_norm,
            settings=settings,
            generator=noise_generator(seed, f"local-only/{school_id}", r),
        ).run()
        weights = get_weights(model)
    return evaluate(model, test).auc
