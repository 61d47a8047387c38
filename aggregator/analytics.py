"""District side of federated analytics: the researcher's query file and combining the answers.

A query file (YAML) is a frozen pydantic model with extra="forbid". Each school answers with
noisy, k-suppressed sufficient statistics (client_node/analytics.py describes them); here the
district adds them up and turns them into estimates with confidence intervals that account for
both the DP noise (its variance is known: every school reports its noise standard deviation)
and sampling:

- per context stratum h and involvement type j: at-risk rates of involved (r1 = S1/N1) and
  not-involved families (r0 = (S - S1)/(N - N1)), pooled over the schools that released the
  cell;
- the **raw effect** of j: r1 - r0 over all strata pooled;
- the **adjusted effect** of j: Σ_h w_h (r1_h - r0_h), w_h the stratum's share of families —
  the effect of j in a saturated linear-probability regression on stratum × involvement,
  standardized to the district's context mix (it controls for the household context);
- variances: the delta method over the four pooled statistics (each carries noise variance
  Σ σ_school²) plus the binomial sampling variance of each rate; the adjusted effect adds the
  noise of its weights.

In **secure mode** (the policy requires secure aggregation) the district never sees a school's
answer: it gets the SecAgg+ sum over the schools (`SecureTotal`), whose every entry carries the
noise shares of all the vectors summed (variance `vectors` × σ²/t ≥ σ², t the reconstruction
threshold) plus SecAgg+'s quantization error (its variance bound is added; it is negligible),
and how many schools released each entry. The not-involved counts arrive directly (n0, s0),
so they carry one noise share each instead of two. Per-school estimates are not available by
design; each school's ε still comes from its plain status.

Effects are in at-risk rate points (0.05 = 5 percentage points); negative means families with
that involvement are *less* often at risk. Types are ranked from the most negative adjusted
effect (most protective) to the most positive.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from scipy.stats import norm

from aggregator.errors import QueryError

InvolvementType = Literal[
    "conferences",
    "meetings",
    "volunteering",
    "newsletters",
    "teacher_messages",
    "homework_help",
    "school_events",
    "app_use",
]
ContextVariable = Literal["income", "parent_education", "two_parents", "grade_level"]
GroupBy = Literal["school", "grade_band"]
Outcome = Literal["at_risk"]
STAT = "a/"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ContextSplit(_Frozen):
    variable: ContextVariable
    split_at: float = Field(default=0.5, gt=0, lt=1, description="scaled value splitting low/high")


class Effects(_Frozen):
    involvement: tuple[InvolvementType, ...] = Field(min_length=1)
    adjust_for: tuple[ContextSplit, ...] = Field(default=(), max_length=4)

    @model_validator(mode="after")
    def _distinct(self) -> Effects:
        lists: tuple[tuple[str, list[str]], ...] = (
            ("involvement", list(self.involvement)),
            ("adjust_for", [c.variable for c in self.adjust_for]),
        )
        for name, values in lists:
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise ValueError(f"{name}: {twice[0]!r} is listed twice")
        return self


class Segments(_Frozen):
    top: int = Field(default=10, ge=1, le=100, description="how many segments to list")


class Describe(_Frozen):
    variables: tuple[InvolvementType | ContextVariable | Outcome, ...] = Field(min_length=1)
    by: GroupBy = "school"
    bins: int = Field(default=4, ge=2, le=20)


class Query(_Frozen):
    """A researcher's analytics query."""

    query_id: str = Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    title: str = Field(min_length=1)
    epsilon: float = Field(
        gt=0, le=10, allow_inf_nan=False, description="ε per school, whole query"
    )
    outcome: Outcome = "at_risk"
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    effects: Effects | None = None
    segments: Segments | None = None
    describe: tuple[Describe, ...] = ()

    @model_validator(mode="after")
    def _asks_something(self) -> Query:
        if self.effects is None and not self.describe:
            raise ValueError("the query asks for nothing: give `effects` or `describe`")
        if self.segments is not None and self.effects is None:
            raise ValueError("`segments` are cut from the effects' cells: give `effects` too")
        return self

    def request(self, *, seed: int | None = None, query_id: str | None = None) -> dict[str, Any]:
        """What travels to the schools (client_node.analytics.AnalyticsRequest reads it)."""
        out: dict[str, Any] = {
            "query_id": query_id or self.query_id,
            "epsilon": self.epsilon,
            "outcome": self.outcome,
            "involvement": list(self.effects.involvement) if self.effects else [],
            "context": [c.model_dump() for c in self.effects.adjust_for] if self.effects else [],
            "describe": [d.model_dump() for d in self.describe],
        }
        if seed is not None:
            out["seed"] = seed
        return out

    @property
    def strata(self) -> list[tuple[int, ...]]:
        n = len(self.effects.adjust_for) if self.effects else 0
        return list(itertools.product((0, 1), repeat=n))


def load_query(path: Path) -> Query:
    """Read and validate a query file; QueryError names the file, field, value and rule."""
    path = Path(path)
    if not path.is_file():
        raise QueryError(f"query file {path}: not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise QueryError(
            f"query file {path}: not readable YAML ({str(exc).splitlines()[0]})"
        ) from None
    if not isinstance(data, dict):
        raise QueryError(
            f"query file {path}: expected a mapping of fields, got {type(data).__name__}"
        )
    try:
        return Query.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # a misspelled key explains the "missing" one next to it: name it first
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        raise QueryError(f"query file {path}: {where}{shown}: {err['msg']}") from None


# --- combining -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchoolAnswer:
    """One school's reply as the district reads it."""

    school_id: str
    status: str  # answered | refused | excluded | failed
    reason: str
    values: dict[str, float]
    noise_std: float = 0.0
    epsilon_query: float = 0.0
    epsilon_spent: float = 0.0
    epsilon_budget: float = 0.0
    delta: float = 0.0
    suppressed: int = 0
    threshold: int = 0  # secure mode: the t the school added its noise share for


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    noise_sd: float
    sampling_sd: float

    def as_dict(self) -> dict[str, float]:
        return {
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "noise_sd": self.noise_sd,
            "sampling_sd": self.sampling_sd,
        }


@dataclass(frozen=True)
class SecureTotal:
    """The SecAgg+ sum of the schools' analytics vectors, as the district decodes it."""

    values: dict[str, float]  # pooled noisy statistic, for entries at least one school released
    contributors: dict[str, int]  # how many schools' families are in each of those entries
    vectors: int  # vectors in the sum, each with a noise share of variance σ²/t
    threshold: int  # t: SecAgg+'s reconstruction threshold (fewest vectors in any sum)
    sigma: float  # the query's calibrated σ (one school's full noise)
    quantization_max: float  # largest quantization error of one summed entry (counts)
    quantization_var: float  # its variance bound (added to the noise variance)
    suppressed: int  # cells withheld at the schools, all together
    clipped: int  # entries clipped to the value bound (0 unless the bound was too small)
    value_bound: float

    @property
    def noise_var(self) -> float:
        """The noise variance of every summed entry: vectors × σ²/t, plus quantization."""
        return self.vectors * self.sigma**2 / self.threshold + self.quantization_var

    def as_dict(self) -> dict[str, Any]:
        return {
            "vectors": self.vectors,
            "threshold": self.threshold,
            "sigma": self.sigma,
            "noise_sd_per_entry": math.sqrt(self.noise_var),
            "quantization_max_error": self.quantization_max,
            "quantization_sd": math.sqrt(self.quantization_var),
            "value_bound": self.value_bound,
            "suppressed_cells": self.suppressed,
            "clipped_entries": self.clipped,
            "entries_released": len(self.values),
            "released": {
                name: {"sum": value, "schools": self.contributors[name]}
                for name, value in self.values.items()
            },
        }


@dataclass
class AnalyticsResult:
    query: Query
    effects: list[dict[str, Any]] = field(default_factory=list)
    per_school: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    segments: list[dict[str, Any]] = field(default_factory=list)
    describe: list[dict[str, Any]] = field(default_factory=list)
    schools: dict[str, dict[str, Any]] = field(default_factory=dict)
    mode: Literal["local", "secure"] = "local"
    secure: dict[str, Any] | None = None  # SecureTotal.as_dict() in secure mode

    def ranking(self) -> list[str]:
        return [e["type"] for e in self.effects if e["adjusted"] is not None]

    def unavailable(self) -> set[str]:
        """Involvement types no answering school has a column for (not estimated, as opposed
        to suppressed: too few families, or too noisy to use)."""
        answered = [s for s in self.schools.values() if s["status"] == "answered"]
        if not answered:
            return set()
        named = [set(_listed_after(s["reason"], UNAVAILABLE)) for s in answered]
        return set.intersection(*named)

    def as_dict(self) -> dict[str, Any]:
        return {
            "query": self.query.model_dump(mode="json"),
            "effects": self.effects,
            "ranking": self.ranking(),
            "unavailable": sorted(self.unavailable()),
            "per_school": self.per_school,
            "segments": self.segments,
            "describe": self.describe,
            "schools": self.schools,
            "mode": self.mode,
            "secure_aggregation": self.secure,
        }


UNAVAILABLE = "no column for: "  # how a school says which types its table lacks


def _listed_after(reason: str, prefix: str) -> list[str]:
    return [t.strip() for t in reason.split(prefix, 1)[1].split(",")] if prefix in reason else []


def _z(confidence: float) -> float:
    return float(norm.ppf(0.5 + confidence / 2))


@dataclass(frozen=True)
class _Cell:
    """Pooled statistics of one (stratum, type): N, S of the stratum, N1, S1 of the involved,
    and the noise variance each released statistic carries. `direct`: the not-involved N0, S0
    were released themselves (secure mode), so N = N1 + N0 and S = S1 + S0; otherwise N and S
    were released and N0 = N − N1, S0 = S − S1 carry two noise terms each."""

    n: float
    s: float
    n1: float
    s1: float
    var: float
    direct: bool = False

    def __add__(self, other: _Cell) -> _Cell:
        return _Cell(
            self.n + other.n,
            self.s + other.s,
            self.n1 + other.n1,
            self.s1 + other.s1,
            self.var + other.var,
            self.direct and other.direct,
        )

    @property
    def n_var(self) -> float:
        """Noise variance of N (the weights')."""
        return 2 * self.var if self.direct else self.var

    @property
    def usable(self) -> bool:
        """Both groups clearly above their noise: a ratio whose denominator the noise could
        bring near zero has no useful first-order variance (3 noise sd, as in the reference
        computed without noise, which keeps every released cell)."""
        floor = max(1.0, 3 * math.sqrt(self.var))
        return self.n1 > floor and self.n - self.n1 > floor

    def rates(self) -> tuple[float, float]:
        return _rate(self.s1, self.n1), _rate(self.s - self.s1, self.n - self.n1)

    def difference(self) -> tuple[float, float, float]:
        """(r1 - r0, its noise variance by the delta method, its sampling variance)."""
        a, b, c, d = self.n1, self.s1, self.n, self.s
        n0, s0 = c - a, d - b
        r1, r0 = _rate(b, a), _rate(s0, n0)
        if self.direct:  # over (N1, S1, N0, S0)
            grads: tuple[float, ...] = (-b / a**2, 1 / a, s0 / n0**2, -1 / n0)
        else:  # over (N1, S1, N, S)
            grads = (-b / a**2 - s0 / n0**2, 1 / a + 1 / n0, s0 / n0**2, -1 / n0)
        noise = self.var * sum(g * g for g in grads)
        sampling = r1 * (1 - r1) / a + r0 * (1 - r0) / n0
        return r1 - r0, noise, sampling


def _rate(s: float, n: float) -> float:
    return min(1.0, max(0.0, s / n))


def _estimate(value: float, noise_var: float, sampling_var: float, z: float) -> Estimate:
    sd = math.sqrt(max(noise_var, 0.0) + max(sampling_var, 0.0))
    return Estimate(
        value, value - z * sd, value + z * sd, math.sqrt(noise_var), math.sqrt(sampling_var)
    )


def _cells(
    answers: Sequence[SchoolAnswer], stratum: str, kind: str
) -> tuple[_Cell | None, dict[str, _Cell]]:
    pooled: _Cell | None = None
    by_school: dict[str, _Cell] = {}
    h = f"{STAT}e/{stratum}"
    for ans in answers:
        v = ans.values
        direct = (f"{h}/{kind}/n1", f"{h}/{kind}/s1", f"{h}/{kind}/n0", f"{h}/{kind}/s0")
        keys = (f"{h}/n", f"{h}/s", f"{h}/{kind}/n1", f"{h}/{kind}/s1")
        if all(k in v for k in direct):  # secure mode: the same schools in all four
            n1, s1, n0, s0 = (v[k] for k in direct)
            cell = _Cell(n1 + n0, s1 + s0, n1, s1, ans.noise_std**2, direct=True)
        elif all(k in v for k in keys):
            cell = _Cell(v[keys[0]], v[keys[1]], v[keys[2]], v[keys[3]], ans.noise_std**2)
        else:
            continue
        by_school[ans.school_id] = cell
        pooled = cell if pooled is None else pooled + cell
    return pooled, by_school


def _stratum_name(query: Query, stratum: tuple[int, ...]) -> str:
    if query.effects is None or not stratum:
        return "all families"
    return ", ".join(
        f"{c.variable} {'high' if bit else 'low'}"
        for c, bit in zip(query.effects.adjust_for, stratum, strict=True)
    )


SECURE_SUM = "secure-sum"  # the one answer combine sees in secure mode: the SecAgg+ sum


def combine(
    query: Query, answers: Sequence[SchoolAnswer], *, secure: SecureTotal | None = None
) -> AnalyticsResult:
    """Pool the schools' answers into estimates with confidence intervals.

    Local mode: `answers` carry each school's noisy statistics. Secure mode: `secure` is the
    SecAgg+ sum and `answers` the schools' plain statuses (no statistics)."""
    z = _z(query.confidence)
    answered = [a for a in answers if a.status == "answered"]
    result = AnalyticsResult(query)
    if secure is not None:
        if any(a.values for a in answers):
            raise ValueError("secure mode: a school's own statistics reached the district")
        result.mode, result.secure = "secure", secure.as_dict()
        answered = [
            SchoolAnswer(
                SECURE_SUM,
                "answered",
                "",
                dict(secure.values),
                noise_std=math.sqrt(secure.noise_var),
            )
        ]
    result.schools = {
        a.school_id: {
            "status": a.status,
            "reason": a.reason,
            "epsilon_query": a.epsilon_query,
            "epsilon_spent": a.epsilon_spent,
            "epsilon_budget": a.epsilon_budget,
            "delta": a.delta,
            "noise_std": a.noise_std,
            "suppressed": None if secure is not None else a.suppressed,
        }
        for a in sorted(answers, key=lambda a: a.school_id)
    }
    if query.effects is not None:
        _effects(query, answered, result, z)
    for i, d in enumerate(query.describe):
        result.describe.append(_describe(i, d, answered, z))
    return result


def _effects(
    query: Query, answers: Sequence[SchoolAnswer], result: AnalyticsResult, z: float
) -> None:
    assert query.effects is not None
    keys = [("".join(map(str, s)), s) for s in query.strata]
    segments: list[dict[str, Any]] = []
    for kind in query.effects.involvement:
        per_stratum: list[tuple[_Cell, str, tuple[int, ...]]] = []
        school_cells: dict[str, _Cell] = {}
        for key, stratum in keys:
            pooled, by_school = _cells(answers, "h" + key, kind)
            if pooled is not None and pooled.usable:
                per_stratum.append((pooled, key, stratum))
            for sid, cell in by_school.items():
                school_cells[sid] = school_cells[sid] + cell if sid in school_cells else cell
        entry: dict[str, Any] = {"type": kind, "raw": None, "adjusted": None, "strata": []}
        if per_stratum:
            total = per_stratum[0][0]
            for cell, _, _ in per_stratum[1:]:
                total = total + cell
            if total.usable:
                diff, nv, sv = total.difference()
                r1, r0 = total.rates()
                entry["raw"] = _estimate(diff, nv, sv, z).as_dict()
                entry["rate_involved"], entry["rate_not_involved"] = r1, r0
                entry["families_involved"] = total.n1
                entry["families_not_involved"] = total.n - total.n1
            n_all = sum(c.n for c, _, _ in per_stratum)
            adj, nvar, svar, weight_var = 0.0, 0.0, 0.0, 0.0
            diffs = []
            for cell, _key, stratum in per_stratum:
                w = cell.n / n_all
                d, nv, sv = cell.difference()
                diffs.append((d, cell))
                adj += w * d
                nvar += w * w * nv
                svar += w * w * sv
                r1, r0 = cell.rates()
                entry["strata"].append(
                    {"stratum": _stratum_name(query, stratum), "weight": w, "difference": d}
                )
                for involved, rate, n in ((True, r1, cell.n1), (False, r0, cell.n - cell.n1)):
                    twice = 1 if involved or cell.direct else 2  # N0 = N − N1, S0 = S − S1
                    sd_noise = math.sqrt(cell.var * (1 + rate * rate) * twice) / n
                    sd_samp = math.sqrt(rate * (1 - rate) / n)
                    segments.append(
                        {
                            "context": _stratum_name(query, stratum),
                            "involvement": kind,
                            "involved": involved,
                            "families": n,
                            "at_risk_rate": _estimate(rate, sd_noise**2, sd_samp**2, z).as_dict(),
                        }
                    )
            # the weights are noisy counts too: first-order effect of their noise
            for d, cell in diffs:
                weight_var += (d - adj) ** 2 * cell.n_var / n_all**2
            entry["adjusted"] = _estimate(adj, nvar + weight_var, svar, z).as_dict()
        result.effects.append(entry)
        for sid, cell in sorted(school_cells.items()):
            if cell.usable and sid != SECURE_SUM:
                d, nv, sv = cell.difference()
                result.per_school.setdefault(kind, {})[sid] = _estimate(d, nv, sv, z).as_dict()
    result.effects.sort(
        key=lambda e: (e["adjusted"] is None, e["adjusted"]["value"] if e["adjusted"] else 0.0)
    )
    if query.segments is not None:
        # ranked by the interval's lower end: a small, noisy cell does not top the list by luck
        segments.sort(key=lambda s: -s["at_risk_rate"]["low"])
        result.segments = segments[: query.segments.top]


def _describe(i: int, d: Describe, answers: Sequence[SchoolAnswer], z: float) -> dict[str, Any]:
    cells: dict[str, dict[str, Any]] = {}
    prefix = f"{STAT}d{i}/"
    for ans in answers:
        for key, value in ans.values.items():
            if not key.startswith(prefix):
                continue
            group, _, rest = key[len(prefix) :].partition("/")
            cell = cells.setdefault(group, {"n": 0.0, "n_var": 0.0, "vars": {}})
            if rest == "n":
                cell["n"] += value
                cell["n_var"] += ans.noise_std**2
                continue
            var, _, stat = rest.partition("/")
            slot = cell["vars"].setdefault(var, {"sum": 0.0, "sum_var": 0.0, "bins": {}})
            if stat == "sum":
                slot["sum"] += value
                slot["sum_var"] += ans.noise_std**2
            else:
                slot["bins"][stat] = slot["bins"].get(stat, 0.0) + value
    groups = []
    for group, cell in sorted(cells.items()):
        n = cell["n"]
        row: dict[str, Any] = {"group": group, "families": n, "variables": {}}
        for var, slot in cell["vars"].items():
            mean = slot["sum"] / n if n > 0 else float("nan")
            noise_var = (slot["sum_var"] + mean * mean * cell["n_var"]) / n**2 if n > 0 else 0.0
            samp_var = max(mean * (1 - mean), 0.0) / n if n > 0 else 0.0
            est = _estimate(mean, noise_var, samp_var, z).as_dict()
            row["variables"][var] = {
                "mean": est,
                "histogram": {f"bin{b}": slot["bins"].get(f"bin{b}") for b in range(d.bins)},
            }
        groups.append(row)
    return {"by": d.by, "variables": list(d.variables), "bins": d.bins, "groups": groups}
