"""The floor: how well could ANY ε = 1 release of the involvement query rank the top three?

    .venv/bin/python benchmarks/analytics_floor.py [--repetitions 1000]

Same data, query, Δ₂ = 4, ε 1 and δ 2.5e-6 as benchmarks/analytics_coverage.py, but every
pooled statistic carries ONE school's noise N(0, σ²) (σ = 17.4) instead of the sum of 16
schools' noise: the central-DP level, what a trusted curator holding every family would add.
No distributed scheme can do better at the same (ε, δ) and Δ₂.

Two layouts of the same release (both of L2 sensitivity √(2 + 2·types) = 4):
- A, today's statistics: per stratum n, s and per type n1, s1 (r0 = (s − s1)/(n − n1), so
  the not-involved counts carry 2σ²); simulated by giving each school σ/√16 through the
  ClientApp's statistics and the district's `combine` (a cell all 16 schools released then
  carries exactly σ²; the 36 of 244 cells fewer schools released carry less — optimistic);
- B, the secure mode's statistics: per type n1, s1, n0, s0 directly (each σ²).
Reported: the DP noise sd of each adjusted effect (A: the median the intervals use; B: the
robust sd of the simulated estimates), and the share of repetitions whose
top three match the noise-free ranking in order and as a set.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from aggregator.analytics import load_query
from client_node.analytics import AnalyticsRequest, mechanism_for
from simulations.analytics import coverage_study, exact_answers
from simulations.datasets import load_dataset

QUERY = Path(__file__).parents[1] / "queries" / "involvement-effects.yaml"
DELTA, K = 2.5e-6, 10


def _layout_b(exact, request, types, strata):
    pooled = {}
    for kind in types:
        for h in strata:
            cell = np.zeros(4)
            for values in exact.values():
                p = f"a/e/{h}"
                if f"{p}/{kind}/n1" in values:
                    n, s = values[f"{p}/n"], values[f"{p}/s"]
                    n1, s1 = values[f"{p}/{kind}/n1"], values[f"{p}/{kind}/s1"]
                    cell += [n1, s1, n - n1, s - s1]
            pooled[kind, h] = cell
    return pooled


def _adjusted(pooled, types, strata):
    out = {}
    for kind in types:
        cells = [pooled[kind, h] for h in strata]
        total = sum(c[0] + c[2] for c in cells)
        out[kind] = sum((c[0] + c[2]) / total * (c[1] / c[0] - c[3] / c[2]) for c in cells)
    return out


def _robust_sd(values: list[float]) -> float:
    """1.4826 × the median absolute deviation: the sd of the bulk (a ratio whose noisy
    denominator comes near zero has a heavy tail that `combine` would not rank)."""
    v = np.asarray(values)
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=1000)
    args = parser.parse_args()
    query = load_query(QUERY)
    tables = load_dataset("nhes-pfi-2019")
    request = AnalyticsRequest.model_validate(query.request())
    sigma = mechanism_for(request, delta=DELTA).sigma
    print(f"σ = {sigma:.2f} per pooled statistic (one school's), Δ₂ = {request.l2_sensitivity:g}")

    for label, scale in (("local (today, 16 × σ²)", 1.0), ("A: central σ²", 0.25)):
        study = coverage_study(
            query, tables, repetitions=args.repetitions, k=K, delta=DELTA, noise_scale=scale
        )
        sds = ", ".join(f"{t} {100 * v:.2f}" for t, v in study.median_noise_sd.items())
        print(f"\n{label}: noise sd (pp) {sds}")
        print(f"  top three: order {study.top3_order:.3f}, set {study.top3_set:.3f}")

    exact = exact_answers(tables, request, k=K)
    types = [t for t in request.involvement if t != "app_use"]
    strata = ["h" + "".join(map(str, s)) for s in request.strata]
    pooled = _layout_b(exact, request, types, strata)
    reference = _adjusted(pooled, types, strata)
    top = sorted(reference, key=reference.__getitem__)[:3]
    print(
        "\nnoise-free adjusted (pp): "
        + ", ".join(f"{t} {100 * v:+.2f}" for t, v in reference.items())
    )
    rng = np.random.default_rng(0)
    for label, factor in (
        ("B: central σ²", 1.0),
        ("B: secure, 16 schools, t = 11 (16/11 σ²)", math.sqrt(16 / 11)),
    ):
        order = same = 0
        draws: dict[str, list[float]] = {t: [] for t in types}
        for _ in range(args.repetitions):
            noisy = {k: v + rng.normal(0.0, sigma * factor, 4) for k, v in pooled.items()}
            est = _adjusted(noisy, types, strata)
            for t in types:
                draws[t].append(est[t])
            ranked = sorted(est, key=est.__getitem__)[:3]
            order += ranked == top
            same += set(ranked) == set(top)
        sds = ", ".join(f"{t} {100 * _robust_sd(v):.2f}" for t, v in draws.items())
        print(f"\n{label}: noise sd (pp) {sds}")
        print(
            f"  top three: order {order / args.repetitions:.3f}, set {same / args.repetitions:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
