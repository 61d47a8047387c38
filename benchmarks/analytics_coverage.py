"""Coverage and ranking of the DP involvement effects (issue 6 acceptance), 100 repetitions.

    .venv/bin/python benchmarks/analytics_coverage.py [--repetitions 100]

NHES 2019 PFI, 16 schools, the shipped query (queries/involvement-effects.yaml), ε 1 per school
for the whole query at the policy's analytics δ (2.5e-6), k = 10. Each repetition computes
every school's answer with the ClientApp handler's code (exact k-suppressed statistics, the
calibrated Gaussian mechanism, seeded noise) and combines them; it reports how often each
type's 95 % interval covers the same estimate computed without noise on the pooled data, and
how often the top three types match the noise-free ranking. For scale, the same ranking
question without any DP: how often the top three of a bootstrap resample of the families
(no noise) match. Then the synthetic involvement district: how often the interval covers the
generator's true effect.

Secure mode (the shipped policy's: the answers travel through SecAgg+, federation/
analytics_secagg.py) on the same data: each repetition computes every school's noise share
N(0, σ²/t) with the ClientApp's code (`secure_values`, `secure_share`, `encode_analytics`),
sums them with SecAgg+'s own quantization (Flower's `quantize`/`dequantize`, without the masks,
which cancel exactly) and decodes the sum as the district does; t = 11 of 16 (SecAgg+'s
reconstruction threshold 2/3, the default) and, for the floor, t = 16 (the central-DP level).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from aggregator.analytics import load_query
from client_node.analytics import AnalyticsRequest
from simulations.analytics import coverage_study, exact_answers, exact_result
from simulations.datasets import load_dataset
from simulations.involvement import TRUE_EFFECTS, involvement_district

QUERY = Path(__file__).parents[1] / "queries" / "involvement-effects.yaml"
DELTA, K = 2.5e-6, 10


def _print(study, what: str) -> None:
    print(f"\n{what}: {study.repetitions} repetitions")
    print("  type               adjusted  raw    median DP noise sd (adjusted, pp)")
    for kind, shares in study.coverage.items():
        print(
            f"  {kind:18s} {shares['adjusted']:.2f}      {shares['raw']:.2f}"
            f"   {100 * study.median_noise_sd[kind]:.1f}"
        )
    print(f"  every adjusted interval covers at once: {study.all_adjusted_covered:.2f}")
    print(f"  top three match (order): {study.top3_order:.2f}; (as a set): {study.top3_set:.2f}")
    print(f"  reference ranking: {', '.join(study.reference_ranking)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=100)
    args = parser.parse_args()
    query = load_query(QUERY)
    tables = load_dataset("nhes-pfi-2019")
    start = time.perf_counter()
    nhes = coverage_study(query, tables, repetitions=args.repetitions, k=K, delta=DELTA)
    _print(nhes, "NHES 2019, 16 schools, ε 1 per school, LOCAL mode, vs the noise-free estimate")
    secure = {}
    for t in (11, 16):
        secure[t] = coverage_study(
            query, tables, repetitions=args.repetitions, k=K, delta=DELTA, mode="secure",
            threshold=t,
        )  # fmt: skip
        _print(secure[t], f"NHES 2019, 16 schools, ε 1 per school, SECURE mode, t = {t}")

    request = AnalyticsRequest.model_validate(query.request())
    reference = exact_result(query, exact_answers(tables, request, k=K))
    top = reference.ranking()[:3]
    print("\n  noise-free estimates (adjusted / raw, pp) and sampling sd:")
    for e in reference.effects:
        if e["adjusted"] is not None:
            print(
                f"    {e['type']:18s} {100 * e['adjusted']['value']:+.2f} / "
                f"{100 * e['raw']['value']:+.2f}  (sd {100 * e['adjusted']['sampling_sd']:.2f})"
            )
    rng = np.random.default_rng(0)
    order = same = 0
    for _ in range(args.repetitions):
        resampled = {
            s: t.iloc[rng.integers(0, len(t), len(t))].reset_index(drop=True)
            for s, t in tables.items()
        }
        ranking = exact_result(query, exact_answers(resampled, request, k=K)).ranking()[:3]
        order += ranking == top
        same += set(ranking) == set(top)
    print(
        f"  without DP, bootstrap resamples of the families: top three match (order)"
        f" {order / args.repetitions:.2f}; (as a set) {same / args.repetitions:.2f}"
    )

    print("\n  the same question at other ε per school (what ranking the top three would take):")
    for eps in (2.0, 4.0, 8.0):
        other = coverage_study(
            query.model_copy(update={"epsilon": eps}), tables, repetitions=args.repetitions,
            k=K, delta=DELTA,
        )  # fmt: skip
        worst = min(min(c.values()) for c in other.coverage.values())
        print(
            f"    ε {eps:g}: top three (order) {other.top3_order:.2f}, (set) {other.top3_set:.2f};"
            f" lowest coverage {worst:.2f}"
        )

    synthetic_query = query.model_copy(
        update={"effects": query.effects.model_copy(update={"involvement": tuple(TRUE_EFFECTS)})}
    )
    synthetic = coverage_study(
        synthetic_query, involvement_district(seed=0), repetitions=args.repetitions, k=K,
        delta=DELTA, truth=TRUE_EFFECTS,
    )  # fmt: skip
    _print(synthetic, "synthetic involvement district (8 schools), vs the generator's truth")
    shares = [c["adjusted"] for c in synthetic.coverage.values()]
    print(f"  mean share of types whose interval covers the truth: {np.mean(shares):.3f}")
    synthetic_secure = coverage_study(
        synthetic_query, involvement_district(seed=0), repetitions=args.repetitions, k=K,
        delta=DELTA, truth=TRUE_EFFECTS, mode="secure",
    )  # fmt: skip
    _print(synthetic_secure, "synthetic involvement district, SECURE mode (t = 5 of 8)")
    secure_shares = [c["adjusted"] for c in synthetic_secure.coverage.values()]
    print(f"  mean share of types whose interval covers the truth: {np.mean(secure_shares):.3f}")
    shares = [min(a, b) for a, b in zip(shares, secure_shares, strict=True)]
    print(f"\n{time.perf_counter() - start:.1f} s")
    lowest = min(min(c.values()) for st in (nhes, *secure.values()) for c in st.coverage.values())
    print(f"lowest coverage, local and secure: {lowest:.2f}")
    met = lowest >= 0.9 and np.mean(shares) >= 0.9
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
