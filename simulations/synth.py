"""A synthetic school district written in the school export format v1, with its ground truth.

`generate_district` writes one export folder per school (`out/<school_id>/`) and, outside every
school folder, `out/ground_truth.json`: what the data were generated from, so that the
district's analytics and the early-warning model can be checked against the truth.

The model
---------
- **Families** have a latent engagement e_f(t) per week: a baseline (shifted by the family's and
  the school's socioeconomic index) plus an AR(1) drift that reverts to it. A share of the
  families (15-25 %, varying by school; more among families that start low) *disengage* at a
  random week: their engagement drops by 1.5-2.5 and stays down.
- **Observable behaviour responds to engagement**: event attendance (logit = base rate of the
  event type + the family's affinity for that type + loading × e_f(week) + a bonus for virtual
  events); messages opened, clicked (watched) and replied to by channel and content type,
  modulated by the family's own channel and content preference; platform/app use (active days,
  features, sessions, minutes); daily absences and tardies rise when engagement falls.
- **Grades** (one term per ~10 weeks) respond to the family's engagement and to each
  involvement type with the district-wide effects in `TRUE_EFFECTS` (recorded in the truth).
- **Schools differ**: size (lognormal around the requested mean), socioeconomic mix, grade
  span, event calendar, the channels the school uses and how much, the share of families on
  the app, the share of virtual meetings, the baseline absence rate, the roster kind.

Calibration to NHES 2019
------------------------
Over the generated school year, the share of families attending at least one event of a type
matches the NCES NHES 2019 PFI share (code 1 among codes 1-2 of the item in `CuratedData.csv`,
computed at generation time), through the mapping `NHES_MAPPING`:

    FSMTNG   general school meeting      -> open_house
    FSPTMTNG PTA / PTO meeting           -> pta_meeting
    FSATCNFN parent-teacher conference   -> conference
    FSSPORTX school or class event       -> performance or sports (either counts)
    FSVOL    volunteered at school       -> volunteering

`workshop` has no NHES item; its base rate is a documented assumption (`UNCALIBRATED_BASE`).
Each mapped group gets one shift of its base logits, found by bisection so that the *expected*
pooled share over all families of the district (given their drawn engagement trajectories,
affinities and the school calendars) equals the target; the sampled share then differs only by
sampling noise (about ±0.5 percentage points on 20 schools × 500 families).
`CALIBRATION_TOLERANCE` (3 percentage points) is the stated tolerance on such a district.

Rosters and family ids
----------------------
One school in five (school-02, -07, ...) has the simple `roster.csv` (family id `HH…`); the
others OneRoster 1.2 (`users.csv` with students, parents and guardians linked both ways by
`agentSourcedIds`, `orgs.csv`, `enrollments.csv`, `roles.csv`). A OneRoster family is named in
every other file by the smallest sourcedId among its parents/guardians, as client_node.ingest
names it. Names, e-mails (example.* domains), phones (555-01xx) and addresses are fake but look
real, so ingestion's minimization has something to drop.

ground_truth.json
-----------------
`parameters` (the call), `district` (totals), `model` (forms and parameters, the calibrated base
logits), `true_effects_on_grades` ({involvement: {coefficient, unit}}), `calibration` ({item:
{question, event_types, nhes_share, expected_share, achieved_share, base_logit_shift}},
tolerance, uncalibrated types), and `schools` → school id → the school's traits (roster kind,
size, socioeconomic index, channel mix, event calendar, app adoption, achieved shares, ...) and
`families` → raw family id → {students, guardians, socioeconomic_index, engagement {baseline,
mean, sd, min, max, first_week, last_week, weekly[], mean_before/after_disengagement},
disengages, disengage_week (0-based week from `start`, or null), disengage_drop,
channel_preference {open_probability_by_channel, open_probability_by_content,
preferred_channel, preferred_content, opens_channels, opens_content}, uses_app,
event_types_attended}. Each family's record is one line.

Determinism
-----------
Only `numpy.random.default_rng` generators seeded from `SeedSequence(seed).spawn(schools)`
(one per school, consumed in a fixed order); every file is sorted by its key; numbers are
formatted with fixed decimals; files are UTF-8 with "\\n" line endings; no clock is read.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import shutil
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from client_node import export_format as ef
from simulations.datasets import DATA_ROOT
from simulations.errors import DatasetError, SimulationError

log = logging.getLogger(__name__)

GROUND_TRUTH = "ground_truth.json"
GENERATOR = "schoolfed synth"
TRUTH_VERSION = 1
NHES_CSV = DATA_ROOT / "nhes-2019-pfi" / "CuratedData.csv"

# NHES item -> the event types that count as doing it (attending any one of them).
NHES_MAPPING: dict[str, tuple[str, ...]] = {
    "FSMTNG": ("open_house",),
    "FSPTMTNG": ("pta_meeting",),
    "FSATCNFN": ("conference",),
    "FSSPORTX": ("performance", "sports"),
    "FSVOL": ("volunteering",),
}
NHES_ITEMS = {
    "FSMTNG": "attended a general school meeting",
    "FSPTMTNG": "attended a PTA / PTO meeting",
    "FSATCNFN": "went to a parent-teacher conference",
    "FSSPORTX": "attended a school or class event",
    "FSVOL": "volunteered at school",
}
CALIBRATION_TOLERANCE = 0.03  # absolute, on the share; stated for a 20 × 500 × 40 district

RosterKind = Literal["oneroster", "simple"]
ProgressFn = Callable[[str, int, int], None]

_TYPES = ef.EVENT_TYPES
_T = {name: i for i, name in enumerate(_TYPES)}
_CH = {name: i for i, name in enumerate(ef.CHANNELS)}
_CT = {name: i for i, name in enumerate(ef.CONTENT_TYPES)}

# --- event model: per type (events per 40 weeks low-high, engagement loading, affinity sd,
#     base logit before calibration — only the ratio within a group and workshop's matter) ---
EVENT_MODEL: dict[str, tuple[int, int, float, float, float]] = {
    "conference": (1, 3, 0.8, 0.9, 0.0),
    "open_house": (1, 2, 0.8, 1.0, 0.0),
    "pta_meeting": (4, 9, 1.0, 1.8, 0.0),
    "performance": (2, 6, 0.7, 1.2, 0.0),
    "sports": (3, 12, 0.7, 1.4, -0.6),
    "workshop": (1, 5, 1.0, 1.2, -3.2),
    "volunteering": (3, 10, 1.0, 1.8, 0.0),
}
UNCALIBRATED_BASE = {"workshop": EVENT_MODEL["workshop"][4]}
VIRTUAL_TYPES = ("conference", "pta_meeting", "workshop")
VIRTUAL_BONUS = 0.3  # logit: a virtual event is easier to attend
_EVENT_TIMES = {  # minutes after midnight the school may schedule a type at
    "conference": (900, 960, 1020, 1080),
    "open_house": (1050, 1080),
    "pta_meeting": (1080, 1110, 1140),
    "performance": (1080, 1140),
    "sports": (960, 990, 1020),
    "workshop": (1050, 1080, 1110),
    "volunteering": (480, 540, 840),
}
_SATURDAY_SHARE = {"sports": 0.3, "volunteering": 0.25}

# --- engagement model ---
PHI = 0.85  # AR(1) coefficient of the weekly drift around the family's baseline
SIGMA = 0.35  # weekly innovation sd
DISENGAGE_SHARE = (0.15, 0.25)  # per-school share of families that disengage (uniform)
DISENGAGE_DROP = (1.5, 2.5)  # the persistent drop in engagement (uniform per family)

# --- communications ---
CHANNEL_OPEN_BASE = np.array([0.0, 1.2, 0.4, -0.6, -0.4, 0.3])  # by ef.CHANNELS
CONTENT_BY_CHANNEL = np.array(  # rows ef.CHANNELS, columns ef.CONTENT_TYPES
    [
        [0.60, 0.25, 0.15],  # email
        [0.85, 0.00, 0.15],  # sms
        [0.70, 0.10, 0.20],  # app_push
        [0.00, 1.00, 0.00],  # newsletter
        [0.00, 0.00, 1.00],  # video
        [1.00, 0.00, 0.00],  # phone_call
    ]
)
CHANNEL_USE = {"sms": 0.75, "app_push": 0.85, "newsletter": 0.8, "video": 0.5, "phone_call": 0.6}
_OPEN_DELAY_MIN = np.array([240.0, 20.0, 45.0, 720.0, 360.0, 0.0])  # median minutes, by channel
_CLICK_BASE = np.array([-1.5, -1.0, 0.2])  # by content type: clicked a link / watched a video
_REPLY_CHANNELS = ("email", "sms", "app_push")
_TWO_WAY = ("email", "sms", "app_push", "phone_call")
OPEN_LOADING = 0.9

# --- platform ---
FEATURES = ("assignments", "attendance", "calendar", "gradebook", "messages", "payments")
_FEATURE_P = np.array([0.45, 0.15, 0.2, 0.6, 0.35, 0.05])
_FEATURE_MIN = np.array([1.3, -0.3, -0.5, 0.0, 0.2, 0.3])  # log-minutes offset per feature

# --- grades: district-wide true effects (grade points on 0-100) ---
SUBJECTS = ("english_language_arts", "math", "science", "social_studies")
TRUE_EFFECTS: dict[str, float] = {
    "conference": 2.0,
    "open_house": 0.5,
    "pta_meeting": 1.0,
    "performance": 0.5,
    "sports": 0.3,
    "workshop": 1.5,
    "volunteering": 1.2,
    "messages_opened_share": 2.5,
    "platform_hours_per_week": 1.5,
    "engagement": 2.0,
}
EFFECT_UNITS = {
    **{t: f"grade points if the family attended at least one {t} event in the term" for t in _TYPES},
    "messages_opened_share": "grade points per 1.0 of the share of school messages the family opened in the term",
    "platform_hours_per_week": "grade points per hour a week of platform/app use in the term (capped at 5 h)",
    "engagement": "grade points per unit of the family's mean latent engagement in the term",
}  # fmt: skip
PLATFORM_HOURS_CAP = 5.0
ABSENCE_LOADING = 0.45  # logit of a daily absence per unit of engagement lost
GRADE_NOISE_SD = 3.5
WEEKS_PER_TERM = 10

# --- fake identities (fictional: example.* domains, 555-01xx phone numbers) ---
_GIVEN = (
    "Aaliyah", "Aiden", "Amara", "Andrés", "Ava", "Benjamin", "Camila", "Carlos", "Chloé", "Daniel",
    "Deshawn", "Elena", "Elijah", "Emma", "Fatima", "Gabriel", "Grace", "Hannah", "Hiroshi", "Isabella",
    "Jamal", "Jasmine", "José", "Kai", "Laila", "Liam", "Lucía", "Malik", "Maria", "Mateo", "Mei",
    "Mohammed", "Nadia", "Noah", "Olivia", "Omar", "Priya", "Rafael", "Rosa", "Samuel", "Sofia",
    "Tariq", "Thanh", "Valentina", "William", "Xavier", "Yusuf", "Zoe", "Ana", "Ethan", "Leah",
    "Marcus", "Nia", "Ryan", "Sara", "Tomás", "Uma", "Victor", "Wen", "Zara",
)  # fmt: skip
_FAMILY = (
    "Adams", "Ahmed", "Alvarez", "Anderson", "Baker", "Brown", "Chen", "Clark", "Cruz", "Davis",
    "Diaz", "Evans", "Fernández", "Garcia", "Green", "Hall", "Harris", "Hernández", "Hill", "Ibrahim",
    "Jackson", "Johnson", "Kim", "King", "Lee", "Lewis", "López", "Martin", "Martínez", "Miller",
    "Moore", "Nguyen", "O'Brien", "Okafor", "Patel", "Pérez", "Phillips", "Ramírez", "Reyes", "Robinson",
    "Rodríguez", "Sánchez", "Scott", "Singh", "Smith", "Taylor", "Thomas", "Tran", "Walker", "White",
    "Williams", "Wilson", "Wright", "Young", "Zhang", "Castillo", "Kowalski", "Haddad", "Mensah", "Park",
)  # fmt: skip
_STREETS = ("Oak", "Maple", "Cedar", "Pine", "Elm", "Willow", "Lake", "Hill", "Park", "River", "Sunset", "Mill")  # fmt: skip
_STREET_KINDS = ("St", "Ave", "Rd", "Ln", "Dr", "Ct", "Way")
_SCHOOL_NAMES = (
    "Lincoln", "Washington", "Roosevelt", "Jefferson", "Maple Ridge", "Riverside", "Cedar Park",
    "Hillcrest", "Lakeview", "Oakwood", "Pine Grove", "Sunnyvale", "Westfield", "Eastview",
    "Northgate", "Southside", "Willow Creek", "Brookside", "Fairview", "Highland",
)  # fmt: skip
_LANGUAGES = ("en", "es", "zh", "vi", "ar", "so", "ht", "pt", "ru", "ko")
_LEVELS: dict[str, tuple[int, ...]] = {
    "elementary": (-1, 0, 1, 2, 3, 4, 5),
    "middle": (6, 7, 8),
    "high": (9, 10, 11, 12),
}
_LEVEL_NAMES = {"elementary": "Elementary School", "middle": "Middle School", "high": "High School"}

# OneRoster 1.2 bulk CSV files the project format names but does not define column by column.
ONEROSTER_EXTRA_USER_COLUMNS = ("status", "dateLastModified", "enabledUser", "orgSourcedIds")
ORGS_COLUMNS = ("sourcedId", "status", "dateLastModified", "name", "type", "identifier", "parentSourcedId")  # fmt: skip
ENROLLMENTS_COLUMNS = (
    "sourcedId", "status", "dateLastModified", "classSourcedId", "schoolSourcedId",
    "userSourcedId", "role", "primary", "beginDate", "endDate",
)  # fmt: skip
ROLES_COLUMNS = (
    "sourcedId", "status", "dateLastModified", "userSourcedId", "roleType", "role",
    "beginDate", "endDate", "orgSourcedId", "userProfileSourcedId",
)  # fmt: skip


def _sigmoid(x: Any) -> Any:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=float)))


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


# ----------------------------------------------------------------------------------------------
# the latent district
# ----------------------------------------------------------------------------------------------


@dataclass
class _School:
    index: int
    school_id: str
    rng: np.random.Generator
    roster_kind: RosterKind
    level: str
    name: str
    ses: float
    disengage_share: float
    app_adoption: float
    channel_mix: np.ndarray  # (channels,)
    message_rate: float
    platform_base: float
    virtual_share: float
    absence_base: float
    languages: np.ndarray  # probability over _LANGUAGES
    # events, sorted by (day, minute, type)
    ev_type: np.ndarray
    ev_day: np.ndarray  # day offset from the start date (week = day // 7)
    ev_minute: np.ndarray
    ev_virtual: np.ndarray
    # families (index order == sorted family id order)
    family_ids: list[str]
    guardian_ids: list[list[str]]  # OneRoster: sorted, the first is the family id
    fam_ses: np.ndarray
    baseline: np.ndarray
    engagement: np.ndarray  # (families, weeks)
    disengages: np.ndarray
    disengage_week: np.ndarray  # -1 when the family does not disengage
    drop: np.ndarray
    affinity: np.ndarray  # (families, event types)
    pref_channel: np.ndarray  # (families, channels), logit offsets
    pref_content: np.ndarray  # (families, content types)
    app_user: np.ndarray
    platform_r: np.ndarray
    reply_r: np.ndarray
    n_guardians: np.ndarray
    # students (index order == sorted student id order; grouped by family)
    stu_family: np.ndarray
    stu_ids: list[str]
    stu_grade: np.ndarray
    ability: np.ndarray
    absence_r: np.ndarray
    subject_offset: np.ndarray  # (subjects,)

    @property
    def n(self) -> int:
        return len(self.family_ids)


def _uuids(rng: np.random.Generator, n: int) -> list[str]:
    raw = rng.bytes(16 * n)
    return [
        str(uuid.UUID(int=int.from_bytes(raw[16 * i : 16 * i + 16], "big"), version=4))
        for i in range(n)
    ]


def _increasing_ids(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    """n distinct increasing integers with small random gaps, starting in [low, high)."""
    return int(rng.integers(low, high)) + np.cumsum(rng.integers(1, 4, size=n))


def _build_school(
    *, index: int, school_id: str, rng: np.random.Generator, families: int, weeks: int,
    start_weekday: int,
) -> _School:  # fmt: skip
    # school-level traits (non-IID)
    n = max(1, round(families * math.exp(rng.normal(0.0, 0.35) - 0.35**2 / 2)))
    ses = float(rng.normal(0.0, 0.7))
    level = str(rng.choice(list(_LEVELS), p=[0.5, 0.25, 0.25]))
    name = f"{_SCHOOL_NAMES[index % len(_SCHOOL_NAMES)]} {_LEVEL_NAMES[level]}"
    if index >= len(_SCHOOL_NAMES):
        name += f" {index // len(_SCHOOL_NAMES) + 1}"
    roster_kind: RosterKind = "simple" if index % 5 == 1 else "oneroster"
    disengage_share = float(rng.uniform(*DISENGAGE_SHARE))
    app_adoption = float(rng.uniform(0.15, 0.85))
    used = np.array([True] + [rng.random() < CHANNEL_USE[c] for c in ef.CHANNELS[1:]], dtype=bool)
    if app_adoption < 0.3:
        used[_CH["app_push"]] = False
    weights = rng.dirichlet(np.full(len(ef.CHANNELS), 1.5)) * used
    weights[_CH["email"]] += 0.15
    channel_mix = weights / weights.sum()
    message_rate = float(rng.uniform(1.0, 3.0))
    platform_base = float(rng.normal(-1.7, 0.35))
    virtual_share = float(rng.uniform(0.0, 0.4))
    absence_base = _logit(0.035) - 0.25 * ses + float(rng.normal(0.0, 0.15))
    languages = rng.dirichlet(np.array([30.0, 6.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5]))

    # the event calendar
    ev_type, ev_day, ev_minute, ev_virtual = [], [], [], []
    for t, (low, high, *_rest) in EVENT_MODEL.items():
        scale = weeks / 40.0
        count = max(1, round(int(rng.integers(low, high + 1)) * scale))
        if t == "open_house":
            event_weeks = rng.integers(0, min(3, weeks), size=count)
        elif t == "conference":
            centers = (np.arange(count) + 0.5) * weeks / count
            event_weeks = np.clip(np.round(centers + rng.integers(-1, 2, size=count)), 0, weeks - 1)
        else:
            event_weeks = rng.integers(0, weeks, size=count)
        saturday = rng.random(count) < _SATURDAY_SHARE.get(t, 0.0)
        weekday = np.where(saturday, 5, rng.integers(0, 5, size=count))
        minutes = rng.choice(_EVENT_TIMES[t], size=count)
        minutes = np.where(saturday, 600, minutes)
        virtual = (rng.random(count) < virtual_share) & (t in VIRTUAL_TYPES)
        ev_type.append(np.full(count, _T[t]))
        ev_day.append(event_weeks.astype(int) * 7 + (weekday - start_weekday) % 7)
        ev_minute.append(minutes)
        ev_virtual.append(virtual)
    types, days = np.concatenate(ev_type), np.concatenate(ev_day)
    mins, virt = np.concatenate(ev_minute), np.concatenate(ev_virtual)
    by_time = np.lexsort((types, mins, days))

    # families
    fam_ses = ses + rng.normal(0.0, 0.8, size=n)
    baseline = 0.45 * fam_ses + rng.normal(0.0, 0.6, size=n)
    sd0 = SIGMA / math.sqrt(1 - PHI**2)
    drift = np.empty((n, weeks))
    drift[:, 0] = rng.normal(0.0, sd0, size=n)
    shocks = rng.normal(0.0, SIGMA, size=(n, weeks))
    for w in range(1, weeks):
        drift[:, w] = PHI * drift[:, w - 1] + shocks[:, w]
    z = (baseline - baseline.mean()) / (baseline.std() + 1e-9)
    p_dis = _sigmoid(_logit(disengage_share) - 0.5 * z)
    disengages = (rng.random(n) < p_dis) & (weeks >= 2)
    lo = max(1, weeks // 5)
    hi = max(lo + 1, weeks - weeks // 5)
    disengage_week = np.where(disengages, rng.integers(lo, hi, size=n), -1)
    drop = np.where(disengages, rng.uniform(*DISENGAGE_DROP, size=n), 0.0)
    after = (np.arange(weeks)[None, :] >= disengage_week[:, None]) & disengages[:, None]
    engagement = baseline[:, None] + drift - drop[:, None] * after

    affinity = rng.normal(0.0, 1.0, size=(n, len(_TYPES))) * np.array(
        [EVENT_MODEL[t][3] for t in _TYPES]
    )
    favorite = rng.choice(len(ef.CHANNELS), size=n, p=[0.3, 0.25, 0.15, 0.1, 0.1, 0.1])
    pref_channel = rng.normal(0.0, 0.9, size=(n, len(ef.CHANNELS)))
    pref_channel[np.arange(n), favorite] += 1.2
    pref_content = rng.normal(0.0, 1.2, size=(n, len(ef.CONTENT_TYPES)))
    app_user = rng.random(n) < np.clip(app_adoption + 0.1 * (fam_ses - ses), 0.02, 0.98)
    platform_r = rng.normal(0.0, 0.8, size=n)
    reply_r = rng.normal(0.0, 0.7, size=n)
    n_guardians = np.where(rng.random(n) < 0.6, 2, 1)

    # students
    per_family = 1 + np.minimum(rng.poisson(0.55, size=n), 3)
    stu_family = np.repeat(np.arange(n), per_family)
    grades = np.array(_LEVELS[level])
    grade_p = np.where(grades == -1, 0.3, 1.0)
    stu_grade = rng.choice(grades, size=len(stu_family), p=grade_p / grade_p.sum())
    ability = rng.normal(0.0, 7.0, size=len(stu_family))
    absence_r = rng.normal(0.0, 0.6, size=len(stu_family))
    subject_offset = rng.normal(0.0, 2.0, size=len(SUBJECTS))

    if roster_kind == "oneroster":
        # a family is named by the smallest sourcedId of its guardians (as ingestion does)
        groups = [sorted(_uuids(rng, int(k))) for k in n_guardians]
        by_id = sorted(range(n), key=lambda f: groups[f][0])  # index order == id order
        guardian_ids = [groups[f] for f in by_id]
        n_guardians = n_guardians[by_id]
        family_ids = [ids[0] for ids in guardian_ids]
        stu_ids = sorted(_uuids(rng, len(stu_family)))
    else:
        family_ids = [f"HH{v:06d}" for v in _increasing_ids(rng, n, 10_000, 400_000)]
        guardian_ids = [[fid] for fid in family_ids]
        stu_ids = [f"{v:07d}" for v in _increasing_ids(rng, len(stu_family), 1_000_000, 8_000_000)]  # fmt: skip

    return _School(
        index=index, school_id=school_id, rng=rng, roster_kind=roster_kind, level=level,
        name=name, ses=ses, disengage_share=disengage_share, app_adoption=app_adoption,
        channel_mix=channel_mix, message_rate=message_rate, platform_base=platform_base,
        virtual_share=virtual_share, absence_base=absence_base, languages=languages,
        ev_type=types[by_time], ev_day=days[by_time], ev_minute=mins[by_time], ev_virtual=virt[by_time],
        family_ids=family_ids, guardian_ids=guardian_ids, fam_ses=fam_ses, baseline=baseline, engagement=engagement,
        disengages=disengages, disengage_week=disengage_week, drop=drop, affinity=affinity,
        pref_channel=pref_channel, pref_content=pref_content, app_user=app_user,
        platform_r=platform_r, reply_r=reply_r, n_guardians=n_guardians, stu_family=stu_family,
        stu_ids=stu_ids, stu_grade=stu_grade, ability=ability, absence_r=absence_r,
        subject_offset=subject_offset,
    )  # fmt: skip


def _event_logits(school: _School, base: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Attendance logits (families × events), for the events in `mask` (default: all)."""
    types = school.ev_type if mask is None else school.ev_type[mask]
    weeks = (school.ev_day if mask is None else school.ev_day[mask]) // 7
    virtual = school.ev_virtual if mask is None else school.ev_virtual[mask]
    loading = np.array([EVENT_MODEL[t][2] for t in _TYPES])[types]
    return (
        base[types][None, :]
        + school.affinity[:, types]
        + loading[None, :] * school.engagement[:, weeks]
        + VIRTUAL_BONUS * virtual[None, :]
    )


# ----------------------------------------------------------------------------------------------
# calibration
# ----------------------------------------------------------------------------------------------


def nhes_targets(csv_path: Path = NHES_CSV) -> dict[str, float]:
    """The NHES 2019 share of families answering yes (code 1 among codes 1-2) per mapped item."""
    try:
        raw = pd.read_csv(csv_path, usecols=list(NHES_MAPPING))
    except FileNotFoundError:
        raise DatasetError(f"NHES data file {csv_path} not found") from None
    except ValueError as exc:
        raise DatasetError(f"NHES data file {csv_path}: {exc}") from None
    targets = {}
    for item in NHES_MAPPING:
        codes = raw[item]
        valid = int(codes.isin([1, 2]).sum())
        targets[item] = int((codes == 1).sum()) / valid
    return targets


def _expected_share(schools: Sequence[_School], base: np.ndarray, types: tuple[str, ...]) -> float:
    """Expected pooled share of families attending at least one event of `types`."""
    idx = [_T[t] for t in types]
    total, families = 0.0, 0
    for school in schools:
        mask = np.isin(school.ev_type, idx)
        families += school.n
        if mask.any():
            # P(none) = prod(1 - p) = exp(-sum softplus(logit))
            none = np.exp(-np.logaddexp(0.0, _event_logits(school, base, mask)).sum(axis=1))
            total += float((1.0 - none).sum())
    return total / families


def _calibrate(
    schools: Sequence[_School], targets: dict[str, float]
) -> tuple[np.ndarray, dict[str, float], dict[str, float]]:
    """Base logits per event type so each mapped group's expected share meets its target."""
    base = np.array([EVENT_MODEL[t][4] for t in _TYPES], dtype=float)
    shifts, expected = {}, {}
    for item, types in NHES_MAPPING.items():
        idx = [_T[t] for t in types]
        initial = base[idx].copy()
        lo, hi = -15.0, 15.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            base[idx] = initial + mid
            if _expected_share(schools, base, types) < targets[item]:
                lo = mid
            else:
                hi = mid
        base[idx] = initial + 0.5 * (lo + hi)
        shifts[item] = 0.5 * (lo + hi)
        expected[item] = _expected_share(schools, base, types)
    return base, shifts, expected


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------


def _write_rows(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A small file through the csv module (quotes names and addresses with commas)."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_columns(path: Path, header: Sequence[str], columns: Sequence[np.ndarray]) -> None:
    """A big file from object arrays of strings that never need quoting (ids, codes, numbers)."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(",".join(header) + "\n")
        if len(columns[0]):
            line = columns[0].astype(object)
            for column in columns[1:]:
                line = line + "," + column.astype(object)
            handle.write("".join((line + "\n").tolist()))


def _header(source: ef.SourceFile, values: dict[str, Any]) -> list[str]:
    """The source's columns, in its order, that `values` provides (all required ones must be)."""
    names = [c.name for c in source.columns]
    unknown = set(values) - set(names)
    missing = [c.name for c in source.columns if c.required and c.name not in values]
    assert not unknown and not missing, (source.name, unknown, missing)
    return [n for n in names if n in values]


def _emit(path: Path, source: ef.SourceFile, values: dict[str, np.ndarray]) -> None:
    header = _header(source, values)
    _write_columns(path / source.name, header, [values[h] for h in header])


def _fmt1(x: np.ndarray) -> np.ndarray:
    """Fixed one-decimal strings (deterministic, no locale)."""
    tenths = np.round(np.asarray(x, dtype=float) * 10.0).astype(np.int64)
    return np.array([f"{v // 10}.{v % 10}" for v in tenths.tolist()], dtype=object)


@dataclass(frozen=True)
class _Calendar:
    start: date
    weeks: int
    day_str: np.ndarray  # ISO date per day offset (with slack after the last week)
    hm: np.ndarray  # "HH:MM" per minute of the day
    ss: np.ndarray  # ":SS" per second of the minute
    weekend: np.ndarray  # per day offset: Saturday or Sunday

    @classmethod
    def make(cls, start: date, weeks: int) -> _Calendar:
        days = [(start + timedelta(days=d)).isoformat() for d in range(weeks * 7 + 40)]
        hm = [f"{m // 60:02d}:{m % 60:02d}" for m in range(1440)]
        weekend = [(start + timedelta(days=d)).weekday() >= 5 for d in range(len(days))]
        return cls(
            start, weeks, np.array(days, dtype=object), np.array(hm, dtype=object),
            np.array([f":{s:02d}" for s in range(60)], dtype=object), np.array(weekend),
        )  # fmt: skip

    def datetimes(self, seconds: np.ndarray) -> np.ndarray:
        seconds = np.asarray(seconds, dtype=np.int64)
        day, tod = seconds // 86400, seconds % 86400
        return self.day_str[day] + "T" + self.hm[tod // 60] + self.ss[tod % 60]

    def week_start_offset(self, weekday: int) -> int:
        """Days from a week's first day to its `weekday` (0 Monday)."""
        return (weekday - self.start.weekday()) % 7


def _ascii(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in plain.lower() if ch.isalnum())


_GRADE_CODES = {-1: "PK", 0: "KG", **{g: f"{g:02d}" for g in range(1, 13)}}


@dataclass
class _People:
    """Fake identities: one family name per family, given names per person."""

    family_name: list[str]
    guardian_given: list[list[str]]
    guardian_family: list[list[str]]
    guardian_email: list[list[str]]
    guardian_phone: list[list[str]]
    student_given: list[str]
    student_middle: list[str]
    address: list[str]
    language: list[str]


def _people(school: _School) -> _People:
    rng = school.rng
    n, s = school.n, len(school.stu_ids)
    fam = rng.integers(0, len(_FAMILY), size=n)
    other = rng.integers(0, len(_FAMILY), size=n)
    keeps = rng.random(n) < 0.7
    given = rng.integers(0, len(_GIVEN), size=(n, 2))
    areas = rng.integers(201, 990, size=(n, 2))
    lines = rng.integers(0, 100, size=(n, 2))
    nums = rng.integers(1, 100, size=(n, 2))
    domains = rng.choice(["example.com", "example.net", "example.org"], size=(n, 2))
    house = rng.integers(10, 9999, size=n)
    street = rng.integers(0, len(_STREETS), size=n)
    kind = rng.integers(0, len(_STREET_KINDS), size=n)
    apt = np.where(rng.random(n) < 0.2, rng.integers(1, 40, size=n), 0)
    lang = rng.choice(len(_LANGUAGES), size=n, p=school.languages)
    stu_given = rng.integers(0, len(_GIVEN), size=s)
    middle = np.where(rng.random(s) < 0.5, rng.integers(0, len(_GIVEN), size=s), -1)
    people = _People([], [], [], [], [], [], [], [], [])
    for f in range(n):
        family_name = _FAMILY[fam[f]]
        people.family_name.append(family_name)
        givens, families, emails, phones = [], [], [], []
        for g in range(int(school.n_guardians[f])):
            last = family_name if g == 0 or keeps[f] else _FAMILY[other[f]]
            first = _GIVEN[given[f, g]]
            givens.append(first)
            families.append(last)
            emails.append(f"{_ascii(first)}.{_ascii(last)}{nums[f, g]}@{domains[f, g]}")
            phones.append(f"+1-{areas[f, g]}-555-01{lines[f, g]:02d}")
        people.guardian_given.append(givens)
        people.guardian_family.append(families)
        people.guardian_email.append(emails)
        people.guardian_phone.append(phones)
        address = f"{house[f]} {_STREETS[street[f]]} {_STREET_KINDS[kind[f]]}"
        people.address.append(address + (f", Apt {apt[f]}" if apt[f] else ""))
        people.language.append(_LANGUAGES[lang[f]])
    people.student_given = [_GIVEN[i] for i in stu_given]
    people.student_middle = [_GIVEN[i] if i >= 0 else "" for i in middle]
    return people


def _local_phone(phone: str) -> str:
    """+1-317-555-0109 -> (317) 555-0109: the simple roster uses the local style."""
    _country, area, rest = phone.split("-", 2)
    return f"({area}) {rest}"


def _write_simple_roster(school: _School, folder: Path, people: _People) -> None:
    rows = []
    for i, sid in enumerate(school.stu_ids):
        f = int(school.stu_family[i])
        values = {
            "student_id": sid,
            "family_id": school.family_ids[f],
            "grade_level": str(int(school.stu_grade[i])),
            "student_name": f"{people.student_given[i]} {people.family_name[f]}",
            "guardian_name": f"{people.guardian_given[f][0]} {people.guardian_family[f][0]}",
            "guardian_email": people.guardian_email[f][0],
            "guardian_phone": _local_phone(people.guardian_phone[f][0]),
            "address": people.address[f],
            "preferred_language": people.language[f],
        }
        header = _header(ef.ROSTER, values)
        rows.append([values[h] for h in header])
    _write_rows(folder / ef.ROSTER.name, [c.name for c in ef.ROSTER.columns], rows)


def _write_oneroster(
    school: _School, folder: Path, people: _People, *, district_org: str, district_name: str,
    begin: str, end: str,
) -> None:  # fmt: skip
    rng = school.rng
    school_org = _uuids(rng, 1)[0]
    guardian_ids = school.guardian_ids
    students_of: list[list[str]] = [[] for _ in range(school.n)]
    for i, sid in enumerate(school.stu_ids):
        students_of[int(school.stu_family[i])].append(sid)
    roles_kind = np.where(rng.random((school.n, 2)) < 0.9, "parent", "guardian")
    state_ids = rng.integers(100_000_000, 999_999_999, size=len(school.stu_ids))
    homerooms = {g: hr for g, hr in zip(_LEVELS[school.level], _uuids(rng, len(_LEVELS[school.level])), strict=True)}  # fmt: skip

    users: list[dict[str, str]] = []
    for i, sid in enumerate(school.stu_ids):
        f = int(school.stu_family[i])
        given = people.student_given[i]
        users.append({
            "sourcedId": sid, "role": "student", "agentSourcedIds": ",".join(guardian_ids[f]),
            "grades": _GRADE_CODES[int(school.stu_grade[i])], "givenName": given,
            "familyName": people.family_name[f], "middleName": people.student_middle[i],
            "email": f"{_ascii(given)}.{_ascii(people.family_name[f])}{state_ids[i] % 1000:03d}@students.{district_name}.example.org",
            "sms": "", "phone": "",
            "username": f"{_ascii(given)[:1]}{_ascii(people.family_name[f])}{state_ids[i] % 1000:03d}",
            "identifier": f"ST{state_ids[i]}",
        })  # fmt: skip
    for f in range(school.n):
        for g, gid in enumerate(guardian_ids[f]):
            email = people.guardian_email[f][g]
            users.append({
                "sourcedId": gid, "role": str(roles_kind[f, g]),
                "agentSourcedIds": ",".join(students_of[f]), "grades": "",
                "givenName": people.guardian_given[f][g], "familyName": people.guardian_family[f][g],
                "middleName": "", "email": email, "sms": people.guardian_phone[f][g],
                "phone": people.guardian_phone[f][g], "username": email, "identifier": "",
            })  # fmt: skip
    users.sort(key=lambda u: u["sourcedId"])
    extra = {
        "status": "",
        "dateLastModified": "",
        "enabledUser": "true",
        "orgSourcedIds": school_org,
    }
    header = [c.name for c in ef.ONEROSTER_USERS.columns] + list(ONEROSTER_EXTRA_USER_COLUMNS)
    _header(ef.ONEROSTER_USERS, users[0])  # every format column is provided
    _write_rows(
        folder / ef.ONEROSTER_USERS.name,
        header,
        [[{**u, **extra}[h] for h in header] for u in users],
    )

    orgs = [
        [district_org, "", "", f"{district_name.title()} Unified School District", "district", "", ""],
        [school_org, "", "", school.name, "school", f"{3600000 + 1000 * school.index + 17:012d}", district_org],
    ]  # fmt: skip
    orgs.sort()
    _write_rows(folder / "orgs.csv", ORGS_COLUMNS, orgs)

    enrollment_ids = _uuids(rng, len(school.stu_ids))
    enrollments = [
        [eid, "", "", homerooms[int(school.stu_grade[i])], school_org, sid, "student", "true", begin, end]
        for i, (sid, eid) in enumerate(zip(school.stu_ids, enrollment_ids, strict=True))
    ]  # fmt: skip
    enrollments.sort()
    _write_rows(folder / "enrollments.csv", ENROLLMENTS_COLUMNS, enrollments)

    role_ids = _uuids(rng, len(users))
    roles = [
        [rid, "", "", u["sourcedId"], "primary", u["role"], begin, end, school_org, ""]
        for u, rid in zip(users, role_ids, strict=True)
    ]
    roles.sort()
    _write_rows(folder / "roles.csv", ROLES_COLUMNS, roles)


def _write_school(
    school: _School, folder: Path, cal: _Calendar, base: np.ndarray, *, district_org: str,
    district_name: str,
) -> dict[str, Any]:  # fmt: skip
    """Sample the school's observable behaviour, write its export, return its truth."""
    folder.mkdir(parents=True, exist_ok=True)
    people = _people(school)
    if school.roster_kind == "simple":
        _write_simple_roster(school, folder, people)
    else:
        _write_oneroster(
            school, folder, people, district_org=district_org, district_name=district_name,
            begin=cal.day_str[0], end=cal.day_str[cal.weeks * 7 - 1],
        )  # fmt: skip
    attended = _write_events(school, folder, cal, base)
    messages = _write_communications(school, folder, cal)
    platform = _write_platform(school, folder, cal)
    _write_grades(school, folder, cal, attended=attended, messages=messages, platform=platform)
    status = _write_attendance(school, folder, cal)
    return _school_truth(school, attended=attended, messages=messages, status=status)


def _write_events(school: _School, folder: Path, cal: _Calendar, base: np.ndarray) -> np.ndarray:
    """events.csv and event_attendance.csv; returns who came (families × events)."""
    fam_ids = np.array(school.family_ids, dtype=object)
    event_ids = np.array(
        [f"EV{school.index + 1:03d}-{k + 1:04d}" for k in range(len(school.ev_type))], dtype=object
    )
    p_attend = _sigmoid(_event_logits(school, base))
    attended = school.rng.random(p_attend.shape) < p_attend
    _emit(
        folder,
        ef.EVENTS,
        {
            "event_id": event_ids,
            "event_type": np.array([_TYPES[t] for t in school.ev_type], dtype=object),
            "event_date": cal.day_str[school.ev_day],
            "event_time": cal.hm[school.ev_minute],
            "mode": np.where(school.ev_virtual, "virtual", "in_person").astype(object),
        },
    )
    e_idx, f_idx = np.nonzero(attended.T)  # sorted by event, then family
    _emit(folder, ef.EVENT_ATTENDANCE, {"event_id": event_ids[e_idx], "family_id": fam_ids[f_idx]})
    return attended


@dataclass(frozen=True)
class _Messages:
    """The school-to-family messages: family, week, channel and whether it was opened."""

    family: np.ndarray
    week: np.ndarray
    channel: np.ndarray
    opened: np.ndarray


def _write_communications(school: _School, folder: Path, cal: _Calendar) -> _Messages:
    rng, n, weeks, eng = school.rng, school.n, cal.weeks, school.engagement
    # school to family: a Poisson number a week, channel by the school's mix
    counts = rng.poisson(school.message_rate, size=(n, weeks)).ravel()
    fam = np.repeat(np.repeat(np.arange(n), weeks), counts)
    week = np.repeat(np.tile(np.arange(weeks), n), counts)
    k = len(fam)
    ch = rng.choice(len(ef.CHANNELS), size=k, p=school.channel_mix)
    cum = CONTENT_BY_CHANNEL.cumsum(axis=1)[ch]
    ct = np.minimum((rng.random(k)[:, None] > cum).sum(axis=1), len(ef.CONTENT_TYPES) - 1)
    weekday_offset = np.array([cal.week_start_offset(d) for d in range(5)])
    day = week * 7 + weekday_offset[rng.integers(0, 5, size=k)]
    sent = day * 86400 + rng.integers(7 * 3600, 18 * 3600, size=k)
    e = eng[fam, week]
    p_open = _sigmoid(
        CHANNEL_OPEN_BASE[ch]
        + school.pref_channel[fam, ch]
        + school.pref_content[fam, ct]
        + OPEN_LOADING * e
    )
    opened = rng.random(k) < p_open
    delay_min = np.exp(np.log(np.maximum(_OPEN_DELAY_MIN[ch], 1.0)) + rng.normal(0.0, 1.0, k))
    delay_min = np.where(_OPEN_DELAY_MIN[ch] == 0, 0.0, np.minimum(delay_min, 14 * 1440.0))
    open_at = sent + np.round(delay_min * 60).astype(np.int64)
    p_click = _sigmoid(_CLICK_BASE[ct] + 0.6 * school.pref_content[fam, ct] + 0.5 * e)
    clicked = opened & (ch != _CH["phone_call"]) & (rng.random(k) < p_click)
    click_at = open_at + np.round(np.exp(rng.normal(np.log(120.0), 0.8, k))).astype(np.int64)
    can_reply = np.isin(ch, [_CH[c] for c in _REPLY_CHANNELS]) & (ct == _CT["text"])
    p_reply = _sigmoid(-1.8 + 0.8 * e + school.reply_r[fam])
    replied = opened & can_reply & (rng.random(k) < p_reply)
    reply_at = open_at + np.round(np.exp(rng.normal(np.log(3600.0), 1.0, k))).astype(np.int64)

    # family to school: more when engaged, through the family's favourite two-way channel
    two_way = [_CH[c] for c in _TWO_WAY if school.channel_mix[_CH[c]] > 0]
    own = np.array(two_way)[np.argmax(school.pref_channel[:, two_way], axis=1)]
    inbound = rng.poisson(0.06 * np.exp(0.8 * eng)).ravel()
    i_fam = np.repeat(np.repeat(np.arange(n), weeks), inbound)
    i_week = np.repeat(np.tile(np.arange(weeks), n), inbound)
    i_sent = i_week * 7 * 86400 + rng.integers(6 * 3600, 22 * 3600, size=len(i_fam))
    i_sent += 86400 * rng.integers(0, 7, size=len(i_fam))
    n_in = len(i_fam)

    all_fam = np.concatenate([fam, i_fam])
    all_sent = np.concatenate([sent, i_sent])
    direction = np.concatenate([np.zeros(k, dtype=int), np.ones(n_in, dtype=int)])
    order = np.lexsort((direction, all_fam, all_sent))  # message ids follow time
    total = k + n_in

    def stamps(mask: np.ndarray, at: np.ndarray) -> np.ndarray:
        out = np.full(total, "", dtype=object)
        out[:k][mask] = cal.datetimes(at[mask])
        return out[order]

    _emit(
        folder,
        ef.COMMUNICATIONS,
        {
            "message_id": np.array(
                [f"MSG{school.index + 1:03d}-{j + 1:07d}" for j in range(total)], dtype=object
            ),
            "family_id": np.array(school.family_ids, dtype=object)[all_fam[order]],
            "channel": np.array(ef.CHANNELS, dtype=object)[np.concatenate([ch, own[i_fam]])[order]],
            "content_type": np.array(ef.CONTENT_TYPES, dtype=object)[
                np.concatenate([ct, np.full(n_in, _CT["text"])])[order]
            ],
            "direction": np.array(ef.DIRECTIONS, dtype=object)[direction[order]],
            "sent_at": cal.datetimes(all_sent[order]),
            "opened_at": stamps(opened, open_at),
            "clicked_at": stamps(clicked, click_at),
            "replied_at": stamps(replied, reply_at),
        },
    )
    return _Messages(family=fam, week=week, channel=ch, opened=opened)


@dataclass(frozen=True)
class _Platform:
    family: np.ndarray
    day: np.ndarray
    minutes: np.ndarray


def _write_platform(school: _School, folder: Path, cal: _Calendar) -> _Platform:
    """Active days, the features used that day (one platform a day), sessions and minutes."""
    rng, n, eng = school.rng, school.n, school.engagement
    n_days = cal.weeks * 7
    logit = (
        school.platform_base
        + school.platform_r[:, None]
        + 0.9 * eng[:, np.arange(n_days) // 7]
        - 0.8 * cal.weekend[None, :n_days]
    )
    active = rng.random((n, n_days)) < _sigmoid(logit)
    a_fam, a_day = np.nonzero(active)
    used = rng.random((len(a_fam), len(FEATURES))) < _FEATURE_P
    used[~used.any(axis=1), FEATURES.index("gradebook")] = True
    on_app = school.app_user[a_fam] & (rng.random(len(a_fam)) < 0.85)
    r_idx, r_feat = np.nonzero(used)  # sorted by (family, day), then feature name
    r_fam, r_day = a_fam[r_idx], a_day[r_idx]
    e = eng[r_fam, r_day // 7]
    sessions = 1 + rng.poisson(0.3 + 0.2 * np.maximum(e, 0.0))
    log_minutes = np.log(3.5) + _FEATURE_MIN[r_feat] + 0.3 * e + rng.normal(0.0, 0.7, len(r_idx))
    minutes = np.clip(np.round(sessions * np.exp(log_minutes), 1), 0.1, 1440.0)
    _emit(
        folder,
        ef.PLATFORM_ACTIVITY,
        {
            "family_id": np.array(school.family_ids, dtype=object)[r_fam],
            "date": cal.day_str[r_day],
            "platform": np.where(on_app[r_idx], "app", "web").astype(object),
            "feature": np.array(FEATURES, dtype=object)[r_feat],
            "sessions": sessions.astype(str).astype(object),
            "minutes": _fmt1(minutes),
        },
    )
    return _Platform(family=r_fam, day=r_day, minutes=minutes)


def _write_grades(
    school: _School, folder: Path, cal: _Calendar, *, attended: np.ndarray,
    messages: _Messages, platform: _Platform,
) -> None:  # fmt: skip
    """One grade per student, term (about 10 weeks) and subject, with the true effects."""
    n, weeks, eng = school.n, cal.weeks, school.engagement
    n_terms = max(1, round(weeks / WEEKS_PER_TERM))
    edges = np.round(np.linspace(0, weeks, n_terms + 1)).astype(int)
    term_of_week = np.searchsorted(edges, np.arange(weeks), side="right") - 1
    ev_term = term_of_week[school.ev_day // 7]
    involvement = np.zeros((n, n_terms, len(_TYPES)))
    for t in range(n_terms):
        for ty in range(len(_TYPES)):
            cols = (ev_term == t) & (school.ev_type == ty)
            if cols.any():
                involvement[:, t, ty] = attended[:, cols].any(axis=1)
    sent = np.zeros((n, n_terms))
    np.add.at(sent, (messages.family, term_of_week[messages.week]), 1.0)
    opened = np.zeros((n, n_terms))
    np.add.at(opened, (messages.family, term_of_week[messages.week]), messages.opened)
    open_share = np.divide(opened, sent, out=np.zeros_like(sent), where=sent > 0)
    minutes = np.zeros((n, n_terms))
    np.add.at(minutes, (platform.family, term_of_week[platform.day // 7]), platform.minutes)
    hours = np.minimum(minutes / 60.0 / np.diff(edges)[None, :], PLATFORM_HOURS_CAP)
    eng_term = np.stack([eng[:, edges[t] : edges[t + 1]].mean(axis=1) for t in range(n_terms)], 1)
    family_effect = (  # families × terms
        involvement @ np.array([TRUE_EFFECTS[t] for t in _TYPES])
        + TRUE_EFFECTS["messages_opened_share"] * open_share
        + TRUE_EFFECTS["platform_hours_per_week"] * hours
        + TRUE_EFFECTS["engagement"] * eng_term
    )
    s_n = len(school.stu_ids)
    grade = (
        75.0
        + 3.0 * school.fam_ses[school.stu_family][:, None, None]
        + school.ability[:, None, None]
        + school.subject_offset[None, None, :]
        + family_effect[school.stu_family][:, :, None]
        + school.rng.normal(0.0, GRADE_NOISE_SD, size=(s_n, n_terms, len(SUBJECTS)))
    )
    grid = np.indices((s_n, n_terms, len(SUBJECTS))).reshape(3, -1)
    terms = np.array([f"{cal.start.year}-T{t + 1:02d}" for t in range(n_terms)], dtype=object)
    _emit(
        folder,
        ef.GRADES,
        {
            "student_id": np.array(school.stu_ids, dtype=object)[grid[0]],
            "term": terms[grid[1]],
            "subject": np.array(SUBJECTS, dtype=object)[grid[2]],
            "grade": _fmt1(np.clip(grade, 0.0, 100.0).reshape(-1)),
        },
    )


_EXCUSED = ("", "yes", "no")


def _write_attendance(school: _School, folder: Path, cal: _Calendar) -> np.ndarray:
    """Daily attendance on weekdays; absences and tardies rise when engagement falls.
    Returns the status codes (students × school days; indexes of ef.ATTENDANCE_STATUS)."""
    rng = school.rng
    days = np.flatnonzero(~cal.weekend[: cal.weeks * 7])
    e = school.engagement[school.stu_family][:, days // 7]  # students × school days
    r = school.absence_r[:, None]
    p_abs = _sigmoid(school.absence_base + r - ABSENCE_LOADING * e)
    p_tardy = _sigmoid(_logit(0.03) + 0.5 * r - 0.3 * e)
    u = rng.random(p_abs.shape)
    status = np.where(u < p_abs, 1, np.where(u < p_abs + p_tardy, 2, 0))
    p_excused = np.where(status == 1, _sigmoid(0.8 + 0.4 * e), _sigmoid(-0.5 + 0.4 * e))
    excused = np.where(status == 0, 0, np.where(rng.random(p_abs.shape) < p_excused, 1, 2))
    # the big file: one "date,period,status,excused" string per combination, after the id
    header = ["student_id", "date", "period", "status", "excused"]
    assert header == _header(ef.ATTENDANCE, dict.fromkeys(header)), "attendance columns changed"
    tail = np.array(
        [
            [[f"{cal.day_str[d]},,{st},{ex}" for ex in _EXCUSED] for st in ef.ATTENDANCE_STATUS]
            for d in days
        ],
        dtype=object,
    )
    lines = tail[np.arange(len(days))[None, :], status, excused].ravel()
    ids = np.repeat(np.array(school.stu_ids, dtype=object), len(days))
    _write_columns(folder / ef.ATTENDANCE.name, [header[0], ",".join(header[1:])], [ids, lines])
    return status


def _r(x: float, digits: int = 4) -> float:
    return round(float(x), digits)


def _school_truth(
    school: _School, *, attended: np.ndarray, messages: _Messages, status: np.ndarray
) -> dict[str, Any]:
    n, eng = school.n, school.engagement
    base_open = CHANNEL_OPEN_BASE[None, :] + OPEN_LOADING * school.baseline[:, None]
    channel_p = _sigmoid(base_open + school.pref_channel)
    content_p = _sigmoid(school.pref_content + OPEN_LOADING * school.baseline[:, None])
    students_of: list[list[str]] = [[] for _ in range(n)]
    for i, sid in enumerate(school.stu_ids):
        students_of[int(school.stu_family[i])].append(sid)
    by_type: dict[str, np.ndarray] = {
        t: np.asarray(attended[:, school.ev_type == _T[t]].any(axis=1)) for t in _TYPES
    }
    families: dict[str, Any] = {}
    for f, fid in enumerate(school.family_ids):
        traj = eng[f]
        d = int(school.disengage_week[f])
        summary: dict[str, Any] = {
            "baseline": _r(school.baseline[f]),
            "mean": _r(traj.mean()),
            "sd": _r(traj.std()),
            "min": _r(traj.min()),
            "max": _r(traj.max()),
            "first_week": _r(traj[0]),
            "last_week": _r(traj[-1]),
            "weekly": [round(float(v), 2) for v in traj],
        }
        if d >= 0:
            summary["mean_before_disengagement"] = _r(traj[:d].mean())
            summary["mean_after_disengagement"] = _r(traj[d:].mean())
        families[fid] = {
            "students": students_of[f],
            "guardians": int(school.n_guardians[f]),
            "socioeconomic_index": _r(school.fam_ses[f]),
            "engagement": summary,
            "disengages": bool(school.disengages[f]),
            "disengage_week": d if d >= 0 else None,
            "disengage_drop": _r(school.drop[f]) if d >= 0 else None,
            "channel_preference": {
                "open_probability_by_channel": dict(
                    zip(ef.CHANNELS, (_r(p, 3) for p in channel_p[f]), strict=True)
                ),
                "open_probability_by_content": dict(
                    zip(ef.CONTENT_TYPES, (_r(p, 3) for p in content_p[f]), strict=True)
                ),
                "preferred_channel": ef.CHANNELS[int(np.argmax(channel_p[f]))],
                "preferred_content": ef.CONTENT_TYPES[int(np.argmax(content_p[f]))],
                "opens_channels": [
                    c for c, p in zip(ef.CHANNELS, channel_p[f], strict=True) if p >= 0.5
                ],  # fmt: skip
                "opens_content": [
                    c for c, p in zip(ef.CONTENT_TYPES, content_p[f], strict=True) if p >= 0.5
                ],  # fmt: skip
            },
            "uses_app": bool(school.app_user[f]),
            "event_types_attended": [t for t in _TYPES if by_type[t][f]],
        }
    sent_by_channel = np.bincount(messages.channel, minlength=len(ef.CHANNELS))
    return {
        "school": {
            "name": school.name,
            "roster": "oneroster-1.2" if school.roster_kind == "oneroster" else "simple",
            "family_id_is": (
                "the smallest sourcedId among the family's parents/guardians in users.csv"
                if school.roster_kind == "oneroster"
                else "roster.csv family_id"
            ),
            "level": school.level,
            "grade_levels": sorted({int(g) for g in school.stu_grade}),
            "n_families": n,
            "n_students": len(school.stu_ids),
            "socioeconomic_index": _r(school.ses),
            "disengagement_share_parameter": _r(school.disengage_share),
            "disengaged_families": int(school.disengages.sum()),
            "app_adoption_parameter": _r(school.app_adoption),
            "app_users": int(school.app_user.sum()),
            "channel_mix": dict(zip(ef.CHANNELS, map(_r, school.channel_mix), strict=True)),
            "messages_sent_by_channel": dict(
                zip(ef.CHANNELS, map(int, sent_by_channel), strict=True)
            ),  # fmt: skip
            "messages_per_family_week": _r(school.message_rate),
            "opened_share": _r(messages.opened.mean()) if len(messages.opened) else None,
            "virtual_share_of_meetings": _r(school.virtual_share),
            "event_calendar": {t: int((school.ev_type == _T[t]).sum()) for t in _TYPES},
            "share_attending_by_type": {t: _r(by_type[t].mean()) for t in _TYPES},
            "absence_rate": _r((status == 1).mean()) if status.size else None,
        },
        "families": families,
        "_attended_by_type": by_type,
    }


# ----------------------------------------------------------------------------------------------
# the entry point
# ----------------------------------------------------------------------------------------------


def _write_truth(path: Path, doc: dict[str, Any]) -> None:
    """Indented JSON, sorted keys, with each family's record on one line (10,000 families stay
    a few megabytes and a diff shows which families changed)."""
    families = {sid: school.pop("families") for sid, school in doc["schools"].items()}
    for sid in families:
        doc["schools"][sid]["families"] = f"@@families:{sid}@@"
    text = json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False)
    for sid, records in families.items():
        marker = json.dumps(f"@@families:{sid}@@")
        indent = " " * 4
        body = ",\n".join(
            f"{indent}{json.dumps(fid)}: "
            + json.dumps(rec, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))
            for fid, rec in sorted(records.items())
        )
        text = text.replace(marker, "{\n" + body + "\n   }" if records else "{}", 1)
        doc["schools"][sid]["families"] = records
    path.write_text(text + "\n", encoding="utf-8")


def _check(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SimulationError(
            f"{name} {value!r} is not allowed; it must be a whole number of at least {minimum}"
        )
    return value


def _prepare_out(out: Path) -> None:
    """`out` must be a new or empty folder, or a district this generator wrote before (whose
    school folders and ground truth are replaced; nothing else in it is touched)."""
    if out.exists() and not out.is_dir():
        raise SimulationError(
            f"--out {out} is a file; the district is written into a folder (new, empty, or an "
            "earlier synth district)"
        )
    if not out.exists() or not any(out.iterdir()):
        return
    previous = out / GROUND_TRUTH
    try:
        truth = json.loads(previous.read_text(encoding="utf-8"))
        old_schools = list(truth["schools"]) if truth.get("generator") == GENERATOR else None
    except (OSError, ValueError, KeyError, TypeError):
        old_schools = None
    if old_schools is None:
        raise SimulationError(
            f"--out {out} is a folder that is not empty and holds no earlier synth district "
            f"({GROUND_TRUTH}); choose a new or empty folder"
        )
    for school_id in old_schools:
        folder = out / str(school_id)
        if re.fullmatch(r"school-\d+", str(school_id)) and folder.is_dir():
            shutil.rmtree(folder)
    previous.unlink()


def generate_district(
    *,
    schools: int,
    families: int,
    weeks: int,
    seed: int,
    out: Path,
    start: date = date(2026, 9, 7),
    progress: ProgressFn | None = None,
) -> Path:
    """Write a synthetic district into `out`: one export-format-v1 folder per school and
    `out/ground_truth.json`. `families` is the mean number of families per school (sizes vary).
    `progress(description, done, total)` is called as the work advances. Returns `out`."""
    _check("--schools", schools, 1)
    _check("--families", families, 1)
    _check("--weeks", weeks, 1)
    _check("--seed", seed, 0)
    out = Path(out)
    _prepare_out(out)
    targets = nhes_targets()
    total_steps = 2 * schools + 1
    report = progress or (lambda _d, _i, _n: None)

    width = max(2, len(str(schools)))
    school_ids = [f"school-{i + 1:0{width}d}" for i in range(schools)]
    children = np.random.SeedSequence(seed).spawn(schools + 1)
    district_rng = np.random.default_rng(children[-1])
    district_org = _uuids(district_rng, 1)[0]
    district_name = str(district_rng.choice(["riverside", "lakeshore", "pinecrest", "fairmont", "oakdale"]))  # fmt: skip
    built: list[_School] = []
    for i, school_id in enumerate(school_ids):
        report(f"modelling {school_id}", i, total_steps)
        built.append(
            _build_school(
                index=i,
                school_id=school_id,
                rng=np.random.default_rng(children[i]),
                families=families,
                weeks=weeks,
                start_weekday=start.weekday(),
            )
        )
    report("calibrating to NHES 2019", schools, total_steps)
    base, shifts, expected = _calibrate(built, targets)

    cal = _Calendar.make(start, weeks)
    out.mkdir(parents=True, exist_ok=True)
    truths: dict[str, Any] = {}
    attended_pooled = dict.fromkeys((*_TYPES, *NHES_MAPPING), 0)
    for i, school in enumerate(built):
        report(f"writing {school.school_id}", schools + 1 + i, total_steps)
        truth = _write_school(
            school, out / school.school_id, cal, base, district_org=district_org,
            district_name=district_name,
        )  # fmt: skip
        by_type = truth.pop("_attended_by_type")
        unions = {
            item: np.any([by_type[t] for t in types], axis=0)
            for item, types in NHES_MAPPING.items()
        }
        for t in _TYPES:
            attended_pooled[t] += int(by_type[t].sum())
        for item in NHES_MAPPING:
            attended_pooled[item] += int(unions[item].sum())
        truths[school.school_id] = {
            **truth["school"],
            "share_attending_by_nhes_item": {item: _r(u.mean()) for item, u in unions.items()},
            "families": truth["families"],
        }
    n_total = sum(s.n for s in built)

    calibration = {
        "source": "NCES NHES 2019 PFI, simulations/datasets/data/nhes-2019-pfi/CuratedData.csv: "
        "share of code 1 (yes) among codes 1-2 (yes/no); -1 valid skip and -9 missing left out",
        "measure": "share of all families of the district attending at least one event of the "
        "mapped types over the generated school year",
        "tolerance": CALIBRATION_TOLERANCE,
        "tolerance_note": "absolute, on the share, for a district of 20 schools × 500 families "
        "× 40 weeks; smaller districts add sampling noise of about 0.5/sqrt(families)",
        "items": {
            item: {
                "question": NHES_ITEMS[item],
                "event_types": list(NHES_MAPPING[item]),
                "nhes_share": _r(targets[item]),
                "expected_share": _r(expected[item]),
                "achieved_share": _r(attended_pooled[item] / n_total),
                "base_logit_shift": _r(shifts[item]),
            }
            for item in NHES_MAPPING
        },
        "uncalibrated": {
            t: {
                "base_logit": _r(UNCALIBRATED_BASE[t]),
                "achieved_share": _r(attended_pooled[t] / n_total),
            }  # fmt: skip
            for t in UNCALIBRATED_BASE
        },
    }
    doc = {
        "generator": GENERATOR,
        "truth_version": TRUTH_VERSION,
        "export_format_version": ef.FORMAT_VERSION,
        "parameters": {
            "schools": schools,
            "families": families,  # the mean per school; sizes vary
            "weeks": weeks,
            "seed": seed,
            "start": start.isoformat(),
        },
        "district": {
            "name": district_name,
            "families": n_total,
            "students": sum(len(s.stu_ids) for s in built),
        },
        "model": {
            "engagement": {
                "form": "e_f(t) = baseline_f + x_f(t) - drop_f * [t >= disengage_week_f]; "
                "x_f(t) = phi * x_f(t-1) + N(0, sigma^2); baseline_f = 0.45 * ses_f + N(0, 0.6^2)",
                "phi": PHI,
                "sigma": SIGMA,
                "disengage_share_range": list(DISENGAGE_SHARE),
                "disengage_drop_range": list(DISENGAGE_DROP),
            },
            "event_attendance": {
                "form": "logit p = base_logit[type] + affinity_f[type] + loading[type] * e_f(week) "
                "+ virtual_bonus * virtual",
                "base_logit": {t: _r(base[_T[t]]) for t in _TYPES},
                "loading": {t: EVENT_MODEL[t][2] for t in _TYPES},
                "affinity_sd": {t: EVENT_MODEL[t][3] for t in _TYPES},
                "virtual_bonus": VIRTUAL_BONUS,
            },
            "messages": {
                "form": "logit p_open = channel_base[channel] + family_channel_pref + "
                "family_content_pref + loading * e_f(week)",
                "channel_base": {c: float(CHANNEL_OPEN_BASE[j]) for j, c in enumerate(ef.CHANNELS)},
                "loading": OPEN_LOADING,
                "family_preference_reported_as": "open_probability_by_channel: at the family's "
                "baseline engagement with a neutral content preference; "
                "open_probability_by_content: at the baseline with a neutral channel (base 0); "
                "opens_*: those with probability >= 0.5",
            },
            "absences": {
                "form": "logit p_absent(day) = school_base + student_r - loading * e_f(week)",
                "loading": ABSENCE_LOADING,
            },
        },
        "true_effects_on_grades": {
            t: {"coefficient": TRUE_EFFECTS[t], "unit": EFFECT_UNITS[t]} for t in TRUE_EFFECTS
        },
        "calibration": calibration,
        "schools": truths,
    }
    _write_truth(out / GROUND_TRUTH, doc)
    report("done", total_steps, total_steps)
    log.info("wrote a synthetic district of %d schools into %s", schools, out)
    return out
