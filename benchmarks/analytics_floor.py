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
- B, the secure mode's statistics: per type n1, s1, n0, s0 directly (each σ²): secure mode
  with t = 16 of 16 schools (each adds σ²/16, the sum carries exactly σ²), through the
  ClientApp's share code and SecAgg+'s quantization; and, for comparison, the default t = 11.
Reported: the median DP noise sd of each adjusted effect (what the intervals use), and the share of repetitions whose
top three match the noise-free ranking in order and as a set.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aggregator.analytics import load_query
from client_node.analytics import AnalyticsRequest, mechanism_for
from simulations.analytics import coverage_study
from simulations.datasets import load_dataset

QUERY = Path(__file__).parents[1] / "queries" / "involvement-effects.yaml"
DELTA, K = 2.5e-6, 10


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

    for label, t in (("B: central σ² (secure mode, t = 16 of 16)", 16), ("B: secure, t = 11", 11)):
        study = coverage_study(
            query, tables, repetitions=args.repetitions, k=K, delta=DELTA, mode="secure",
            threshold=t,
        )  # fmt: skip
        sds = ", ".join(f"{k} {100 * v:.2f}" for k, v in study.median_noise_sd.items())
        print(f"\n{label}: noise sd (pp) {sds}")
        print(f"  top three: order {study.top3_order:.3f}, set {study.top3_set:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
