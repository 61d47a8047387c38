"""The analytics report: analytics.json, analytics.md, analytics.html and PNG charts.

Charts: effects.png (involvement types ranked by adjusted effect, with the raw difference,
both with their confidence intervals), per_school.png (each school's own raw difference where
its cells were released), epsilon.png (ε each school spent on the query and in total against
its analytics budget).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from aggregator.analytics import AnalyticsResult  # noqa: E402
from aggregator.report import _atomic_write, _clean, fmt  # noqa: E402

JSON, MARKDOWN, HTML = "analytics.json", "analytics.md", "analytics.html"
EFFECTS_PNG, SCHOOLS_PNG, EPSILON_PNG = "effects.png", "per_school.png", "epsilon.png"


def _pp(value: Any) -> str:
    """A rate difference in percentage points."""
    return "–" if value is None else f"{100 * float(value):+.1f}"


def _interval(est: dict[str, float] | None) -> str:
    if est is None:
        return "suppressed"
    return f"{_pp(est['value'])} [{_pp(est['low'])}, {_pp(est['high'])}]"


def markdown(result: AnalyticsResult) -> str:
    q = result.query
    level = f"{100 * q.confidence:g}%"
    lines = [
        f"# {q.title}",
        "",
        f"Query `{q.query_id}`; ε {q.epsilon:g} per school for the whole query; outcome: "
        f"`{q.outcome}` (the share of families the schools' tables mark at risk: in the NHES"
        " survey, a child with mostly C's or lower; in school exports, the disengagement label"
        " of client_node/features.py).",
        "",
    ]
    if result.mode == "secure" and result.secure is not None:
        s = result.secure
        lines += [
            f"Mode: **secure aggregation (SecAgg+)** — the district saw only the sum of"
            f" {s['vectors']} schools' answers (SecAgg+ reveals no sum of fewer than"
            f" t = {s['threshold']}); each school added noise of variance σ²/t (σ ="
            f" {s['sigma']:.2f}), so every pooled statistic carries noise sd"
            f" {s['noise_sd_per_entry']:.2f} (≥ σ). SecAgg+'s quantization moves a summed"
            f" count by at most {s['quantization_max_error']:.3f} (sd"
            f" {s['quantization_sd']:.4f}, included in the intervals). Cells withheld at the"
            f" schools (fewer than k families): {s['suppressed_cells']} in all.",
            "",
            "Trust: this holds against the district as long as SecAgg+ does (the district runs"
            " it as specified and controls fewer than t of the parties); a district colluding"
            " with schools that reveal their own noise weakens it to σ²/t per honest school.",
            "",
        ]
    else:
        lines += [
            "Mode: **local noise** — each school added its own full noise (σ² per statistic)"
            " and the district saw every school's noisy answer.",
            "",
        ]
    if result.effects:
        lines += [
            "## Involvement effects",
            "",
            f"At-risk rate of involved minus not-involved families, in percentage points, with"
            f" {level} intervals that include the DP noise and sampling. Negative: fewer at risk."
            + (
                " Adjusted: within household-context strata, standardized to the district's mix."
                if q.effects is not None and q.effects.adjust_for
                else " The query asks for no household context (`adjust_for`), so adjusted"
                " equals raw."
            )
            + " Not available: no school's table has that kind of involvement; suppressed:"
            " too few families or too noisy to estimate.",
            "",
            "| rank | involvement | adjusted | raw | at risk (involved / not) | DP noise sd (adj.) |",
            "|---|---|---|---|---|---|",
        ]
        missing = result.unavailable()
        for i, e in enumerate(result.effects, 1):
            rates = (
                f"{100 * e['rate_involved']:.1f}% / {100 * e['rate_not_involved']:.1f}%"
                if "rate_involved" in e
                else "–"
            )
            noise = _pp(e["adjusted"]["noise_sd"]).lstrip("+") if e["adjusted"] else "–"
            if e["type"] in missing:
                lines.append(f"| – | {e['type']} | not available | not available | – | – |")
                continue
            lines.append(
                f"| {i if e['adjusted'] else '–'} | {e['type']} | {_interval(e['adjusted'])} |"
                f" {_interval(e['raw'])} | {rates} | {noise} |"
            )
        lines += ["", f"![effects]({EFFECTS_PNG})", ""]
    if result.mode == "secure":
        lines += [
            "## Per school",
            "",
            "Per-school spread is not available in secure mode, by design: the district only"
            " holds the sum over schools. Each school's ε is below.",
            "",
        ]
    elif result.per_school:
        lines += [
            "## Per school (raw difference, where the school's cells were released)",
            "",
            f"![per school]({SCHOOLS_PNG})",
            "",
        ]
    if result.segments:
        lines += [
            "## Segments with the highest at-risk rates",
            "",
            "Ranked by the lower end of each interval, so a small, noisy cell does not top the"
            " list by luck.",
            "",
            "| context | involvement | at risk | families |",
            "|---|---|---|---|",
        ]
        for s in result.segments:
            r = s["at_risk_rate"]
            lines.append(
                f"| {s['context']} | {'' if s['involved'] else 'no '}{s['involvement']} |"
                f" {100 * r['value']:.1f}% [{100 * r['low']:.1f}, {100 * r['high']:.1f}] |"
                f" {s['families']:.0f} |"
            )
        lines.append("")
    for d in result.describe:
        lines += [f"## Description by {d['by']}", "", "| group | families | variable | mean |"]
        lines.append("|---|---|---|---|")
        for g in d["groups"]:
            for var, v in g["variables"].items():
                m = v["mean"]
                lines.append(
                    f"| {g['group']} | {g['families']:.0f} | {var} | {fmt(m['value'])}"
                    f" [{fmt(m['low'])}, {fmt(m['high'])}] |"
                )
        lines.append("")
    lines += [
        "## Privacy spent",
        "",
        "| school | status | ε this query | analytics ε spent | budget | suppressed cells |",
        "|---|---|---|---|---|---|",
    ]
    for sid, s in result.schools.items():
        lines.append(
            f"| {sid} | {s['status']} | {fmt(s['epsilon_query'])} | {fmt(s['epsilon_spent'])} |"
            f" {fmt(s['epsilon_budget'])} |"
            f" {'pooled' if s['suppressed'] is None else s['suppressed']} |"
        )
    lines += ["", f"![epsilon]({EPSILON_PNG})", ""]
    return "\n".join(lines)


def to_html(text: str, title: str) -> str:
    """A plain HTML page from the report's Markdown (tables, headings, images, paragraphs)."""
    body: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if rows:
            head, *rest = rows
            body.append(
                "<table><tr>"
                + "".join(f"<th>{html.escape(c)}</th>" for c in head)
                + "</tr>"
                + "".join(
                    "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                    for r in rest
                )
                + "</table>"
            )
            rows.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                rows.append(cells)
            continue
        flush()
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("!["):
            src = line[line.index("(") + 1 : -1]
            body.append(f'<img src="{html.escape(src)}" alt="{html.escape(src)}">')
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    flush()
    style = (
        "body{font-family:sans-serif;max-width:60em}td,th{border:1px solid #ccc;padding:2px 6px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def _plot_effects(result: AnalyticsResult, path: Path) -> None:
    effects = [e for e in result.effects if e["adjusted"] is not None]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(effects) + 1.5), dpi=120)
    for i, e in enumerate(effects):
        for est, dy, color, label in (
            (e["adjusted"], 0.12, "#1f77b4", "adjusted for context"),
            (e["raw"], -0.12, "#ff7f0e", "raw (involved − not)"),
        ):
            if est is None:
                continue
            v, lo, hi = (100 * est[k] for k in ("value", "low", "high"))
            ax.errorbar(v, i + dy, xerr=[[v - lo], [hi - v]], fmt="o", color=color, capsize=3,
                        label=label if i == 0 else None)  # fmt: skip
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_yticks(range(len(effects)), [e["type"] for e in effects])
    ax.invert_yaxis()
    ax.set_xlabel(f"at-risk rate difference, percentage points ({result.query.confidence:.0%} CI)")
    ax.set_title("Involvement types ranked by adjusted effect (top: fewest at risk)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_schools(result: AnalyticsResult, path: Path) -> None:
    kinds = [e["type"] for e in result.effects if e["type"] in result.per_school]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(kinds) + 1.5), dpi=120)
    for i, kind in enumerate(kinds):
        schools = result.per_school[kind]
        offsets = [0.0] if len(schools) == 1 else list(
            (j / (len(schools) - 1) - 0.5) * 0.6 for j in range(len(schools))
        )  # fmt: skip
        for dy, est in zip(offsets, schools.values(), strict=True):
            v, lo, hi = (100 * est[k] for k in ("value", "low", "high"))
            ax.errorbar(v, i + dy, xerr=[[v - lo], [hi - v]], fmt=".", color="#1f77b4",
                        alpha=0.6, elinewidth=0.7)  # fmt: skip
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_yticks(range(len(kinds)), kinds)
    ax.invert_yaxis()
    ax.set_xlabel("raw at-risk rate difference per school, percentage points")
    ax.set_title("Per-school spread (one point per school whose cells were released)")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_epsilon(result: AnalyticsResult, path: Path) -> None:
    schools = list(result.schools)
    query = [result.schools[s]["epsilon_query"] for s in schools]
    spent = [result.schools[s]["epsilon_spent"] for s in schools]
    budget = max([result.schools[s]["epsilon_budget"] for s in schools] or [1.0])
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(schools) + 1.5), dpi=120)
    ax.barh(schools, spent, color="#c7c7c7", label="analytics ε spent in the period")
    ax.barh(schools, query, color="#1f77b4", height=0.5, label="ε of this query")
    ax.axvline(budget, color="#d62728", linestyle="--", label=f"analytics budget ({budget:g})")
    ax.invert_yaxis()
    ax.set_xlabel("ε")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_analytics_report(result: AnalyticsResult, out: Path) -> dict[str, Path]:
    """Write the JSON, Markdown, HTML report and charts into `out`; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in (JSON, MARKDOWN, HTML)}
    _atomic_write(paths[JSON], json.dumps(_clean(result.as_dict()), indent=2).encode())
    text = markdown(result)
    _atomic_write(paths[MARKDOWN], text.encode())
    _atomic_write(paths[HTML], to_html(text, result.query.title).encode())
    if result.effects:
        _plot_effects(result, paths.setdefault(EFFECTS_PNG, out / EFFECTS_PNG))
    if result.per_school:
        _plot_schools(result, paths.setdefault(SCHOOLS_PNG, out / SCHOOLS_PNG))
    _plot_epsilon(result, paths.setdefault(EPSILON_PNG, out / EPSILON_PNG))
    return paths
