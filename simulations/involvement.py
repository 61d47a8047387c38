"""A synthetic district whose generator knows the true involvement effects on the at-risk rate.

`simulations/synth.py` writes full school exports whose grades respond to per-term involvement
*and* to a latent engagement that also drives involvement; its family table (one snapshot of
features and a disengagement label) carries neither the per-term involvement nor a grade
outcome the analytics could estimate those effects from. This generator is made for checking
the analytics estimator instead: family tables with the same columns as NHES 2019 PFI (so the
schools' column mapping is the one used on real data), where

- each family has a household context: income (TTLHHINC, 12 categories) and parents' education
  (PARGRADEX, 5 levels), drawn around the school's socioeconomic level, plus a grade level;
- each involvement type j is taken up with a probability that rises with income and education
  (context confounds involvement and risk), independently across types given the context;
- at_risk ~ Bernoulli(base(income high?, education high?) + Σ_j TRUE_EFFECTS[j] · involved_j).

So within a context stratum (income low/high × education low/high split at 0.5) the at-risk rate
of involved minus not-involved families is exactly TRUE_EFFECTS[j]: the adjusted estimate's
target. The raw (unadjusted) difference is biased by the confounding, on purpose.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# at-risk rate points: negative = involvement goes with fewer families at risk
TRUE_EFFECTS: dict[str, float] = {
    "conferences": -0.03,
    "meetings": -0.02,
    "volunteering": -0.05,
    "newsletters": -0.01,
    "teacher_messages": 0.02,
    "homework_help": -0.015,
    "school_events": -0.04,
    "app_use": -0.025,
}
# the column each type is written to (client_node.analytics.INVOLVEMENT reads them)
COLUMNS = {
    "conferences": "FSATCNFN",
    "meetings": "FSMTNG",
    "volunteering": "FSVOL",
    "newsletters": "FSMEMO",
    "teacher_messages": "FSNOTESX",
    "homework_help": "FHHELP",
    "school_events": "FSSPORTX",
    "app_use": "app_minutes_per_week",
}
UPTAKE = {  # probability of involvement in the lowest context; rises with income and education
    "conferences": 0.55,
    "meetings": 0.45,
    "volunteering": 0.25,
    "newsletters": 0.7,
    "teacher_messages": 0.5,
    "homework_help": 0.3,
    "school_events": 0.55,
    "app_use": 0.35,
}
BASE_RISK = {(0, 0): 0.40, (0, 1): 0.34, (1, 0): 0.33, (1, 1): 0.27}


def involvement_district(
    *, schools: int = 8, families: int = 600, seed: int = 0
) -> dict[str, pd.DataFrame]:
    """Family tables of `schools` schools (about `families` each), keyed by school id."""
    root = np.random.SeedSequence(seed)
    tables: dict[str, pd.DataFrame] = {}
    for i, child in enumerate(root.spawn(schools)):
        rng = np.random.default_rng(child)
        n = max(60, int(rng.normal(families, families * 0.2)))
        ses = rng.normal(0, 0.6)
        income = np.clip(np.round(rng.normal(6.5 + 2.5 * ses, 3.0, n)), 1, 12)
        education = np.clip(np.round(rng.normal(3.0 + 0.8 * ses, 1.1, n)), 1, 5)
        inc, edu = (income - 1) / 11, (education - 1) / 4
        high_inc, high_edu = (inc >= 0.5).astype(int), (edu >= 0.5).astype(int)
        frame: dict[str, np.ndarray] = {
            "family_id": np.array([f"f{i:02d}-{j:05d}" for j in range(n)]),
            "TTLHHINC": inc,
            "PARGRADEX": edu,
            "ALLGRADEX": rng.integers(2, 16, n).astype(float),
        }
        frame["ALLGRADEX"] = (frame["ALLGRADEX"] - 2) / 13
        risk = np.array([BASE_RISK[(a, b)] for a, b in zip(high_inc, high_edu, strict=True)])
        for kind, effect in TRUE_EFFECTS.items():
            p = UPTAKE[kind] + 0.15 * high_inc + 0.1 * high_edu
            involved = (rng.random(n) < p).astype(float)
            value = involved * (0.75 if kind == "homework_help" else 1.0)
            frame[COLUMNS[kind]] = value
            risk = risk + effect * involved
        frame["at_risk"] = (rng.random(n) < risk).astype(int)
        order = ["family_id", "at_risk", *[c for c in frame if c not in ("family_id", "at_risk")]]
        tables[f"school-{i + 1:02d}"] = pd.DataFrame(frame)[order]
    return tables
