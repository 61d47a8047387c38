"""Family features and the disengagement label, computed at the school from its local store.

One row per family per snapshot date, from records strictly before the snapshot. The family is
the privacy unit: a training table uses ONE snapshot, so each family contributes one example.

Weekly engagement E(f, w) in [0, 1] is the mean of the parts the family had a chance to show:
  - events: share of the week's school events the family attended (weeks with events),
  - messages: share of the week's school-to-family messages the family opened,
  - platform: min(1, platform + app minutes in the week / ACTIVE_MINUTES).
Engagement over a window is the mean of its weekly values.

The disengagement label (configurable, `LabelRule`): at snapshot t, with baseline B = engagement
over the `baseline_weeks` before t and next N = engagement over the `horizon_weeks` from t,
a family disengages when N < drop_ratio × B, or N < floor while B ≥ floor. Families whose
baseline is already below the floor are not labelled "disengaging" (they are already away).
The early-warning flag the schools asked for, `grades_slipping_engagement_dropping`: the last
term's mean grade fell by at least `grade_drop` points and the last 4 weeks' engagement is
below the 4 weeks before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from client_node.export_format import CHANNELS, CONTENT_TYPES, EVENT_TYPES, PLATFORMS
from client_node.table import FAMILY_ID, LABEL

ACTIVE_MINUTES = 60.0  # a week with an hour on the platform counts as fully active
LOOKBACK_WEEKS = 12  # rates use at most this much history
CONTACT_CAP_WEEKS = 12
MINUTES_CAP = 600.0  # minutes per week; more counts as this much


class LabelRule(BaseModel):
    """The written, configurable definition of "disengaging"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    baseline_weeks: int = Field(default=6, ge=1, le=52)
    horizon_weeks: int = Field(default=4, ge=1, le=52)
    drop_ratio: float = Field(default=0.5, gt=0, lt=1)
    floor: float = Field(default=0.1, ge=0, lt=1)
    grade_drop: float = Field(default=5.0, ge=0, le=100)


@dataclass(frozen=True)
class StoreFrames:
    """The store tables features are computed from (pseudonymized ids only)."""

    families: pd.DataFrame  # family_pid
    students: pd.DataFrame  # student_pid, family_pid, grade_level
    events: pd.DataFrame  # event_id, event_type, event_date, mode
    event_attendance: pd.DataFrame  # event_id, family_pid
    communications: (
        pd.DataFrame
    )  # family_pid, channel, content_type, direction, sent_at, opened_at, replied_at
    platform_activity: pd.DataFrame  # family_pid, date, platform, minutes
    grades: pd.DataFrame  # student_pid, term, grade
    attendance: pd.DataFrame  # student_pid, date, status


def _week(dates: pd.Series, start: date) -> np.ndarray:
    days = (pd.to_datetime(dates).dt.normalize() - pd.Timestamp(start)).dt.days.to_numpy()
    return np.floor_divide(days, 7)


def _start(frames: StoreFrames) -> date:
    candidates = [
        pd.to_datetime(frames.events["event_date"]).min() if len(frames.events) else None,
        pd.to_datetime(frames.communications["sent_at"]).min()
        if len(frames.communications)
        else None,
        pd.to_datetime(frames.platform_activity["date"]).min()
        if len(frames.platform_activity)
        else None,
        pd.to_datetime(frames.attendance["date"]).min() if len(frames.attendance) else None,
    ]
    present = [c for c in candidates if c is not None and not pd.isna(c)]
    if not present:
        raise ValueError("the store holds no dated records to compute features from")
    first = min(present).date()
    return first - timedelta(days=first.weekday())  # the Monday of the first week


def weekly_engagement(frames: StoreFrames, *, start: date, weeks: int) -> pd.DataFrame:
    """E(f, w): families × weeks, NaN where the family had no chance to show anything."""
    families = pd.Index(sorted(frames.families["family_pid"]), name=FAMILY_ID)
    parts: list[np.ndarray] = []

    def grid() -> np.ndarray:
        return np.full((len(families), weeks), np.nan)

    events = frames.events.assign(week=_week(frames.events["event_date"], start))
    per_week = events.groupby("week").size().reindex(range(weeks), fill_value=0).to_numpy()
    attended = frames.event_attendance.merge(events[["event_id", "week"]], on="event_id")
    counts = pd.crosstab(attended["family_pid"], attended["week"]).reindex(
        index=families, columns=range(weeks), fill_value=0
    )
    ev = grid()
    has = per_week > 0
    ev[:, has] = counts.to_numpy()[:, has] / per_week[has]
    parts.append(ev)

    out = frames.communications[frames.communications["direction"] == "school_to_family"]
    out = out.assign(week=_week(out["sent_at"], start), opened=out["opened_at"].notna())
    sent = pd.crosstab(out["family_pid"], out["week"]).reindex(
        index=families, columns=range(weeks), fill_value=0
    )
    opened = (
        out[out["opened"]].pipe(lambda d: pd.crosstab(d["family_pid"], d["week"]))
        .reindex(index=families, columns=range(weeks), fill_value=0)
    )  # fmt: skip
    msg = grid()
    mask = sent.to_numpy() > 0
    msg[mask] = opened.to_numpy()[mask] / sent.to_numpy()[mask]
    parts.append(msg)

    act = frames.platform_activity.assign(week=_week(frames.platform_activity["date"], start))
    minutes = (
        act.groupby(["family_pid", "week"])["minutes"].sum().unstack(fill_value=0)
        .reindex(index=families, columns=range(weeks), fill_value=0)
    )  # fmt: skip
    parts.append(np.minimum(1.0, minutes.to_numpy(dtype=float) / ACTIVE_MINUTES))

    stacked = np.stack(parts)
    with np.errstate(invalid="ignore"):
        value = np.nanmean(stacked, axis=0) if stacked.size else grid()
    return pd.DataFrame(value, index=families, columns=range(weeks))


def _window(engagement: pd.DataFrame, first: int, last: int) -> pd.Series:
    cols = [w for w in range(first, last) if w in engagement.columns]
    if not cols:
        return pd.Series(np.nan, index=engagement.index)
    return engagement[cols].mean(axis=1, skipna=True)


def _rate(numerator: pd.DataFrame, denominator: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rate with 0 where undefined, missing indicator)."""
    missing = (denominator <= 0).astype(float)
    rate = (numerator / denominator.where(denominator > 0)).fillna(0.0).clip(0, 1)
    return rate, missing


def features_at(
    frames: StoreFrames, *, snapshot: date, rule: LabelRule | None = None, start: date | None = None
) -> pd.DataFrame:
    """One row per family: `family_id`, `at_risk` (the disengagement label, NaN when the
    horizon is not yet observed), features in [0, 1], and the flags in NOT_FEATURES."""
    rule = rule or LabelRule()
    start = start or _start(frames)
    snap_week = (snapshot - start).days // 7
    horizon_end = snap_week + rule.horizon_weeks
    total_weeks = max(horizon_end, snap_week) + 1
    engagement = weekly_engagement(frames, start=start, weeks=total_weeks)
    families = engagement.index
    cut = pd.Timestamp(snapshot)
    lookback = cut - pd.Timedelta(weeks=LOOKBACK_WEEKS)
    out: dict[str, pd.Series] = {}

    # events: attendance rate per type over the lookback
    ev = frames.events.assign(when=pd.to_datetime(frames.events["event_date"]))
    ev = ev[(ev["when"] < cut) & (ev["when"] >= lookback)]
    offered = ev.groupby("event_type").size().reindex(EVENT_TYPES, fill_value=0)
    came = frames.event_attendance.merge(ev[["event_id", "event_type"]], on="event_id")
    came_counts = pd.crosstab(came["family_pid"], came["event_type"]).reindex(
        index=families, columns=EVENT_TYPES, fill_value=0
    )
    for kind in EVENT_TYPES:
        if offered[kind] > 0:
            out[f"events_{kind}_rate"] = (came_counts[kind] / offered[kind]).clip(0, 1)
        else:
            out[f"events_{kind}_rate"] = pd.Series(0.0, index=families)
        out[f"events_{kind}_none_offered"] = pd.Series(float(offered[kind] == 0), index=families)

    # communications: open and reply rates per channel and content type
    cm = frames.communications.assign(when=pd.to_datetime(frames.communications["sent_at"]))
    cm = cm[(cm["when"] < cut) & (cm["when"] >= lookback) & (cm["direction"] == "school_to_family")]
    opened_in_time = cm["opened_at"].notna() & (pd.to_datetime(cm["opened_at"]) < cut)
    replied_in_time = cm["replied_at"].notna() & (pd.to_datetime(cm["replied_at"]) < cut)
    cm = cm.assign(opened=opened_in_time.astype(float), replied=replied_in_time.astype(float))
    for column, values in (("channel", CHANNELS), ("content_type", CONTENT_TYPES)):
        sent = pd.crosstab(cm["family_pid"], cm[column]).reindex(
            index=families, columns=values, fill_value=0
        )
        opened = cm.pivot_table(index="family_pid", columns=column, values="opened", aggfunc="sum")
        opened = opened.reindex(index=families, columns=values, fill_value=0).fillna(0)
        rate, missing = _rate(opened, sent)
        for v in values:
            out[f"opened_{column}_{v}"] = rate[v]
            out[f"opened_{column}_{v}__missing"] = missing[v]
        if column == "channel":
            replied = cm.pivot_table(
                index="family_pid", columns=column, values="replied", aggfunc="sum"
            )
            replied = replied.reindex(index=families, columns=values, fill_value=0).fillna(0)
            rate, _ = _rate(replied, sent)
            for v in values:
                out[f"replied_{column}_{v}"] = rate[v]

    # platform and app minutes: last 4 weeks and the trend against the 4 before
    pa = frames.platform_activity.assign(when=pd.to_datetime(frames.platform_activity["date"]))
    for platform in PLATFORMS:
        mine = pa[pa["platform"] == platform]
        recent = mine[(mine["when"] < cut) & (mine["when"] >= cut - pd.Timedelta(weeks=4))]
        before = mine[
            (mine["when"] < cut - pd.Timedelta(weeks=4))
            & (mine["when"] >= cut - pd.Timedelta(weeks=8))
        ]
        r = recent.groupby("family_pid")["minutes"].sum().reindex(families, fill_value=0) / 4
        b = before.groupby("family_pid")["minutes"].sum().reindex(families, fill_value=0) / 4
        r, b = r.clip(upper=MINUTES_CAP), b.clip(upper=MINUTES_CAP)
        out[f"{platform}_minutes_per_week"] = np.log1p(r) / np.log1p(MINUTES_CAP)
        out[f"{platform}_minutes_trend"] = (
            (np.log1p(r) - np.log1p(b)) / np.log1p(MINUTES_CAP) + 1
        ) / 2

    # grades: last term's mean and its change from the term before (per family)
    gr = frames.grades.merge(frames.students[["student_pid", "family_pid"]], on="student_pid")
    terms = sorted(gr["term"].unique())
    last_change = pd.Series(0.0, index=families)
    if terms:
        by_term = gr.groupby(["family_pid", "term"])["grade"].mean().unstack()
        by_term = by_term.reindex(index=families)
        latest = by_term[terms[-1]]
        out["grade_mean"] = (
            latest.fillna(latest.mean() if latest.notna().any() else 50) / 100
        ).clip(0, 1)
        out["grade_mean__missing"] = latest.isna().astype(float)
        if len(terms) > 1:
            last_change = (by_term[terms[-1]] - by_term[terms[-2]]).fillna(0.0)
        out["grade_trend"] = ((last_change / 100) + 1).clip(0, 2) / 2
    else:
        out["grade_mean"] = pd.Series(0.5, index=families)
        out["grade_mean__missing"] = pd.Series(1.0, index=families)
        out["grade_trend"] = pd.Series(0.5, index=families)

    # absences: rate over the last 4 weeks and the 4 before
    at = frames.attendance.merge(frames.students[["student_pid", "family_pid"]], on="student_pid")
    at = at.assign(when=pd.to_datetime(at["date"]), absent=(at["status"] == "absent").astype(float))
    for name, lo, hi in (("absence_rate", 4, 0), ("absence_rate_before", 8, 4)):
        window = at[
            (at["when"] < cut - pd.Timedelta(weeks=hi))
            & (at["when"] >= cut - pd.Timedelta(weeks=lo))
        ]
        out[name] = window.groupby("family_pid")["absent"].mean().reindex(families).fillna(0.0)

    # weeks since the family last showed up (attended, opened, replied or used the platform)
    contact_weeks = engagement.loc[:, [w for w in engagement.columns if w < snap_week]]
    active = contact_weeks.fillna(0) > 0
    last_active = active.apply(lambda row: row[row].index.max() if row.any() else -1, axis=1)
    since = np.where(last_active >= 0, snap_week - last_active, CONTACT_CAP_WEEKS)
    out["weeks_since_contact"] = pd.Series(
        np.minimum(since, CONTACT_CAP_WEEKS) / CONTACT_CAP_WEEKS, index=families
    )

    baseline = _window(engagement, snap_week - rule.baseline_weeks, snap_week)
    recent4 = _window(engagement, snap_week - 4, snap_week)
    before4 = _window(engagement, snap_week - 8, snap_week - 4)
    out["engagement_baseline"] = baseline.fillna(0.0).clip(0, 1)
    out["engagement_trend"] = ((recent4.fillna(0) - before4.fillna(0)) + 1).clip(0, 2) / 2

    table = pd.DataFrame(out, index=families).astype(float)
    table.insert(0, FAMILY_ID, families.to_numpy())
    next_window = _window(engagement, snap_week, horizon_end)
    observed = horizon_end <= (engagement.columns.max() + 1) and _observed(
        frames, start, horizon_end
    )
    label = (next_window < rule.drop_ratio * baseline) | (
        (next_window < rule.floor) & (baseline >= rule.floor)
    )
    label = label & (baseline >= rule.floor)
    label_values = label.astype(float).to_numpy() if observed else np.full(len(label), np.nan)
    table.insert(1, LABEL, label_values)
    warning = (last_change <= -rule.grade_drop) & (recent4.fillna(0) < before4.fillna(0))
    table["early_warning"] = warning.astype(float).to_numpy()
    # the schools' rule of thumb, kept to compare the model against: no event in 4 weeks
    recent_events = ev[ev["when"] >= cut - pd.Timedelta(weeks=4)]
    went = frames.event_attendance[
        frames.event_attendance["event_id"].isin(recent_events["event_id"])
    ]
    table["rule_no_event_4w"] = (~families.isin(went["family_pid"])).astype(float)
    return table.reset_index(drop=True)


# Columns of `features_at` that are flags for people, not inputs of the model.
NOT_FEATURES = ("early_warning", "rule_no_event_4w")


def family_table(frames: StoreFrames, *, rule: LabelRule | None = None) -> pd.DataFrame:
    """The training table: the latest fully observed snapshot, labelled families only."""
    snapshot = training_snapshot(frames, rule=rule)
    table = features_at(frames, snapshot=snapshot, rule=rule)
    labelled = table[table[LABEL].notna()].reset_index(drop=True)
    return labelled.assign(**{LABEL: labelled[LABEL].astype(int)}).drop(columns=list(NOT_FEATURES))


def _observed(frames: StoreFrames, start: date, week: int) -> bool:
    """Does the store hold records in the last week before `week` (so the window is seen)?"""
    last = [
        pd.to_datetime(frames.platform_activity["date"]).max()
        if len(frames.platform_activity)
        else None,
        pd.to_datetime(frames.communications["sent_at"]).max()
        if len(frames.communications)
        else None,
        pd.to_datetime(frames.events["event_date"]).max() if len(frames.events) else None,
    ]
    present = [d for d in last if d is not None and not pd.isna(d)]
    return bool(present) and max(present).date() >= start + timedelta(weeks=week - 1)


def training_snapshot(
    frames: StoreFrames, *, rule: LabelRule | None = None, week: int | None = None
) -> date:
    """The Monday of the training snapshot: the latest whose label horizon the store has fully
    observed, or week `week` of the records (clamped to what the store can label)."""
    rule = rule or LabelRule()
    start = _start(frames)
    latest = max(
        pd.to_datetime(frames.platform_activity["date"]).max(),
        pd.to_datetime(frames.communications["sent_at"]).max(),
    ).date()
    weeks_seen = (latest - start).days // 7 + 1
    last = max(rule.baseline_weeks, weeks_seen - rule.horizon_weeks)
    chosen = last if week is None else min(max(week, rule.baseline_weeks), last)
    return start + timedelta(weeks=chosen)
