"""Features and the disengagement label on a small hand-made store with known answers."""

from datetime import date, timedelta

import pandas as pd
import pytest

from client_node.features import (
    LabelRule,
    StoreFrames,
    family_table,
    features_at,
    weekly_engagement,
)

START = date(2026, 9, 7)  # a Monday
WEEKS = 14


def day(week: int, weekday: int = 1) -> str:
    return (START + timedelta(weeks=week, days=weekday)).isoformat()


def frames() -> StoreFrames:
    """Family A stays engaged; B drops out at week 8; C never engages."""
    families = ["A", "B", "C"]
    events = pd.DataFrame(
        [{"event_id": f"e{w}", "event_type": "pta_meeting" if w % 2 else "conference",
          "event_date": day(w), "mode": "in_person"} for w in range(WEEKS)]
    )  # fmt: skip
    attendance = [{"event_id": f"e{w}", "family_pid": "A"} for w in range(WEEKS)]
    attendance += [{"event_id": f"e{w}", "family_pid": "B"} for w in range(8)]
    comms, activity = [], []
    for w in range(WEEKS):
        for f in families:
            opened = f == "A" or (f == "B" and w < 8)
            comms.append({
                "family_pid": f, "channel": "email", "content_type": "text",
                "direction": "school_to_family", "sent_at": day(w) + "T09:00",
                "opened_at": day(w) + "T10:00" if opened else None, "replied_at": None,
            })  # fmt: skip
            minutes = 90 if opened else 0
            activity.append(
                {"family_pid": f, "date": day(w, 2), "platform": "app", "minutes": minutes}
            )
    students = pd.DataFrame(
        {"student_pid": ["sA", "sB", "sC"], "family_pid": families, "grade_level": [3, 4, 5]}
    )
    grades = pd.DataFrame(
        [{"student_pid": "sA", "term": "T1", "grade": 80}, {"student_pid": "sA", "term": "T2", "grade": 82},
         {"student_pid": "sB", "term": "T1", "grade": 85}, {"student_pid": "sB", "term": "T2", "grade": 70}]
    )  # fmt: skip
    school_days = [day(w, d) for w in range(WEEKS) for d in range(5)]
    att = [
        {"student_pid": s, "date": d, "status": "absent" if (s == "sB" and d >= day(6)) else "present"}
        for s in ("sA", "sB", "sC") for d in school_days
    ]  # fmt: skip
    return StoreFrames(
        families=pd.DataFrame({"family_pid": families}),
        students=students,
        events=events,
        event_attendance=pd.DataFrame(attendance),
        communications=pd.DataFrame(comms),
        platform_activity=pd.DataFrame(activity),
        grades=grades,
        attendance=pd.DataFrame(att),
    )


def test_weekly_engagement_is_the_mean_of_what_the_family_could_show():
    engagement = weekly_engagement(frames(), start=START, weeks=WEEKS)
    assert engagement.loc["A"].tolist() == [1.0] * WEEKS
    assert engagement.loc["B", 7] == 1.0 and engagement.loc["B", 8] == 0.0
    assert engagement.loc["C"].max() == 0.0


def test_the_label_marks_the_family_that_drops_in_the_horizon():
    rule = LabelRule(baseline_weeks=4, horizon_weeks=4)
    table = features_at(frames(), snapshot=START + timedelta(weeks=7), rule=rule).set_index(
        "family_id"
    )
    assert table.loc["B", "at_risk"] == 1.0  # engaged before week 7, gone in weeks 8-10
    assert table.loc["A", "at_risk"] == 0.0
    assert table.loc["C", "at_risk"] == 0.0  # already away: not "drifting"
    assert table.loc["A", "events_conference_rate"] == 1.0
    assert table.loc["C", "opened_channel_email"] == 0.0
    assert table.loc["A", "opened_channel_sms__missing"] == 1.0
    assert table.loc["B", "weeks_since_contact"] == pytest.approx(1 / 12)


def test_early_warning_needs_grades_slipping_and_engagement_dropping():
    table = features_at(frames(), snapshot=START + timedelta(weeks=10)).set_index("family_id")
    assert table.loc["B", "early_warning"] == 1.0  # 85 -> 70 and engagement down
    assert table.loc["A", "early_warning"] == 0.0
    later = features_at(frames(), snapshot=START + timedelta(weeks=12)).set_index("family_id")
    assert later.loc["B", "rule_no_event_4w"] == 1.0  # nothing since week 7
    assert later.loc["A", "rule_no_event_4w"] == 0.0


def test_features_are_in_range_and_the_label_waits_for_its_horizon():
    table = features_at(frames(), snapshot=START + timedelta(weeks=12))
    assert table["at_risk"].isna().all()  # weeks 12-15 are not all observed yet
    assert features_at(frames(), snapshot=START + timedelta(weeks=10))["at_risk"].notna().all()
    values = table.drop(columns=["family_id", "at_risk"]).to_numpy()
    assert values.min() >= 0 and values.max() <= 1


def test_the_training_table_uses_one_observed_snapshot():
    table = family_table(frames(), rule=LabelRule(baseline_weeks=4, horizon_weeks=4))
    assert sorted(table["family_id"]) == ["A", "B", "C"]  # one row per family
    assert set(table["at_risk"]) <= {0, 1}
    assert "early_warning" not in table.columns and "rule_no_event_4w" not in table.columns


def test_heavy_platform_use_stays_in_range():
    f = frames()
    heavy = f.platform_activity.assign(minutes=5000)
    table = features_at(
        StoreFrames(**{**f.__dict__, "platform_activity": heavy}),
        snapshot=START + timedelta(weeks=10),
    )
    assert table["app_minutes_per_week"].max() == pytest.approx(1.0)
