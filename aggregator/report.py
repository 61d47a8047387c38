"""The run report: report.json for machines, report.md for people, auc.png for the eye."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PLOT = "auc.png"


def _clean(value: Any) -> Any:
    """NaN and infinities become null: report.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def fmt(value: Any, digits: int = 3) -> str:
    """A figure for people: fixed digits, and "–" for a missing or undefined one."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def plot_auc(report: dict, path: Path) -> None:
    rounds = [r["round"] for r in report["rounds"]]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    pooled = [r.get("pooled_auc") for r in report["rounds"]]
    federated = [r.get("auc") for r in report["rounds"]]
    nan = float("nan")
    ax.plot(rounds, [p if p is not None else nan for p in pooled], "o-", color="#1f77b4",
            label="federated model, pooled held-out families")  # fmt: skip
    ax.plot(rounds, [f if f is not None else nan for f in federated], "s--", color="#1f77b4",
            alpha=0.5, label="federated evaluation (mean over schools)")  # fmt: skip
    final = report["final"]
    central = final["centralized"]["auc"]
    local = final["local_only"]["auc_mean"]
    if central is not None:
        ax.axhline(
            central,
            color="#2ca02c",
            linestyle=":",
            label=f"centralized, non-private ({central:.3f})",
        )
    if local is not None:
        ax.axhline(
            local,
            color="#d62728",
            linestyle="-.",
            label=f"each school alone, same ε (mean {local:.3f})",
        )
    ax.set_xlabel("round")
    ax.set_ylabel("AUC (at-risk)")
    ax.set_xticks(rounds)
    ax.set_ylim(0.5, 1.0)
    ax.grid(alpha=0.3)
    eps = report["policy"]["training_epsilon"]
    ax.set_title(f"{report['dataset']}: DP federated training, ε ≤ {eps:g} per school")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def markdown(report: dict) -> str:
    final = report["final"]
    lines = [
        f"# SchoolFed run {report['run_id']}",
        "",
        f"Dataset **{report['dataset']}**, {len(report['rounds'])} rounds, policy "
        f"`{report['policy']['policy_id']}` v{report['policy']['version']} "
        f"(training ε ≤ {report['policy']['training_epsilon']:g}, δ = "
        f"{report['policy']['training_delta']:g} per school for {report['policy']['period']}). "
        + _test_split_sentence(report["test_split"]),
        "",
        _secagg_sentence(report),
        "",
        "## Result",
        "",
        "| model | AUC | accuracy |",
        "|---|---|---|",
        f"| federated, DP | {fmt(final['federated']['auc'])} | {fmt(final['federated']['accuracy'])} |",
        f"| centralized, non-private | {fmt(final['centralized']['auc'])} | {fmt(final['centralized'].get('accuracy'))} |",
        f"| each school alone, same ε (mean) | {fmt(final['local_only']['auc_mean'])} | – |",
        "",
        f"![AUC per round]({PLOT})",
        "",
        "## Rounds",
        "",
        "| round | AUC (pooled) | AUC (federated eval.) | accuracy | loss |",
        "|---|---|---|---|---|",
    ]
    secagg_on = report.get("secure_aggregation", {}).get("on", False)
    if secagg_on:
        lines[-2] = lines[-2] + " SecAgg+ |"
        lines[-1] = lines[-1] + "---|"
    for r in report["rounds"]:
        row = (
            f"| {r['round']} | {fmt(r.get('pooled_auc'))} | {fmt(r['auc'])} | "
            f"{fmt(r['accuracy'])} | {fmt(r['loss'])} |"
        )
        lines.append(row + (f" {_secagg_cell(r.get('secagg'))} |" if secagg_on else ""))
    lines += [
        "",
        "## Schools and privacy spent",
        "",
        "| school | families | status | ε spent | ε budget | δ | σ | sample rate | steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in report["schools"]:
        lines.append(
            f"| {s['school_id']} | {s['n_families']} | {s['status']} | {fmt(s['epsilon_spent'])} | "
            f"{fmt(s['epsilon_budget'])} | {fmt(s['delta'], 6)} | {fmt(s['noise_multiplier'])} | "
            f"{fmt(s['sample_rate'], 4)} | {s['steps']} |"
        )
    reasons = [s for s in report["schools"] if s["reason"]]
    if reasons:
        lines += ["", "Schools that did not train:", ""]
        lines += [f"- **{s['school_id']}** ({s['status']}): {s['reason']}" for s in reasons]
    lines += [
        "",
        "ε is per family (the privacy unit), composed with Opacus' RDP accountant over everything "
        "the school's ledger has recorded in this period. The federated evaluation is the "
        "family-weighted mean of the schools' own held-out AUCs; the pooled AUC scores the same "
        "model on all held-out families at once, like the baselines.",
        "",
    ]
    return "\n".join(lines)


def _test_split_sentence(split: dict) -> str:
    """Who the held-out figures are about; the district of a deployment knows only how many
    families the schools evaluated on, not how many of them are at risk."""
    at_risk = f" ({split['at_risk']} at risk)" if split.get("at_risk") is not None else ""
    return f"Held-out test: {split['families']} families{at_risk} from {split['schools']} schools."


def _secagg_sentence(report: dict) -> str:
    secagg = report.get("secure_aggregation", {})
    if not secagg.get("on"):
        return (
            "Secure aggregation: **off** (the policy does not require it): the district saw "
            "each school's model update."
        )
    failed = secagg.get("failed_rounds", {})
    return (
        "Secure aggregation: **on** (Flower's SecAgg+): the district saw only the sum of the "
        "schools' updates, never one school's."
        + (f" Rounds whose aggregate was lost: {', '.join(failed)}." if failed else "")
    )


def _secagg_cell(secagg: dict | None) -> str:
    if not secagg:
        return "–"
    if secagg["failed"]:
        return f"failed: {secagg['failed']}"
    cell = f"{secagg['trained']} trained of {secagg['schools']} summed"
    if secagg["dropped"]:
        cell += f", {secagg['dropped']} dropped"
    if secagg["clipped_share"] not in (None, 0.0):
        cell += f", {fmt(100 * secagg['clipped_share'], 2)} % clipped"
    return cell


def write_report(report: dict, out: Path) -> None:
    """Write report.json, report.md and auc.png into `out`, each atomically."""
    out.mkdir(parents=True, exist_ok=True)
    clean = _clean(report)
    _atomic_write(out / "report.json", json.dumps(clean, indent=2, allow_nan=False).encode())
    plot_auc(clean, out / PLOT)
    _atomic_write(out / "report.md", markdown(clean).encode())
