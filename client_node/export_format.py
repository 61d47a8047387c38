"""The school export format, version 1: what a node ingests. One source of truth.

An export is one folder with one CSV file per source. Every file is optional except the roster.
CSV: UTF-8 (a byte-order mark is accepted), LF or CRLF line endings, a header row; column order
is free; extra columns are reported and ignored; empty cells mean "no value".

The roster comes either as the project's simple `roster.csv` or as 1EdTech OneRoster 1.1/1.2
CSV (`users.csv` with roles student/parent/guardian linked by `agentSourcedIds`, `orgs.csv`,
`enrollments.csv`, and `roles.csv` for 1.2).

`python -m client_node.export_format` prints the JSON Schema (docs/export-format.schema.json);
docs/export-format.md is the human page; docs/example-export/ is a small valid export.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

FORMAT_VERSION = 1

ColumnType = Literal["id", "text", "enum", "date", "time", "datetime", "int", "number", "bool"]


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    required: bool = True
    values: tuple[str, ...] = ()  # for enums
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""
    identifying: bool = False  # a direct identifier: validated, then never stored


@dataclass(frozen=True)
class SourceFile:
    name: str
    category: str | None  # the policy category that must allow it; None: the roster
    key: tuple[str, ...]  # columns that identify a row (duplicates are reported)
    columns: tuple[Column, ...]
    description: str = ""
    links: dict[str, str] = field(default_factory=dict)  # column -> what it must exist in

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


EVENT_TYPES = (
    "conference", "open_house", "pta_meeting", "performance", "sports", "workshop", "volunteering",
)  # fmt: skip
CHANNELS = ("email", "sms", "app_push", "newsletter", "video", "phone_call")
CONTENT_TYPES = ("text", "newsletter", "video")
DIRECTIONS = ("school_to_family", "family_to_school")
MODES = ("in_person", "virtual")
PLATFORMS = ("web", "app")
ATTENDANCE_STATUS = ("present", "absent", "tardy")

ROSTER = SourceFile(
    "roster.csv",
    None,
    key=("student_id",),
    description="The project's simple roster: one row per student, with the student's family.",
    columns=(
        Column("student_id", "id", description="the school's student id"),
        Column("family_id", "id", description="the school's family (household) id"),
        Column("grade_level", "int", minimum=-1, maximum=12, description="-1 pre-K, 0 K, 1-12"),
        Column("student_name", "text", required=False, identifying=True),
        Column("guardian_name", "text", required=False, identifying=True),
        Column("guardian_email", "text", required=False, identifying=True),
        Column("guardian_phone", "text", required=False, identifying=True),
        Column("address", "text", required=False, identifying=True),
        Column("preferred_language", "text", required=False),
    ),
)

ONEROSTER_USERS = SourceFile(
    "users.csv",
    None,
    key=("sourcedId",),
    description="OneRoster 1.1/1.2 users: students, parents and guardians. A family is a "
    "group of students and the guardians linked to them through agentSourcedIds.",
    columns=(
        Column("sourcedId", "id"),
        Column("role", "enum", values=("student", "parent", "guardian", "teacher", "administrator", "aide", "relative")),
        Column("agentSourcedIds", "text", description="comma-separated sourcedIds linking students and guardians (may be empty in a row)"),
        Column("grades", "text", required=False),
        Column("givenName", "text", required=False, identifying=True),
        Column("familyName", "text", required=False, identifying=True),
        Column("middleName", "text", required=False, identifying=True),
        Column("email", "text", required=False, identifying=True),
        Column("sms", "text", required=False, identifying=True),
        Column("phone", "text", required=False, identifying=True),
        Column("username", "text", required=False, identifying=True),
        Column("identifier", "text", required=False, identifying=True),
    ),
)  # fmt: skip

EVENTS = SourceFile(
    "events.csv",
    "event_attendance",
    key=("event_id",),
    description="The school's event calendar: every family is invited to every event.",
    columns=(
        Column("event_id", "id"),
        Column("event_type", "enum", values=EVENT_TYPES),
        Column("event_date", "date"),
        Column("event_time", "time", required=False),
        Column("mode", "enum", values=MODES),
    ),
)

EVENT_ATTENDANCE = SourceFile(
    "event_attendance.csv",
    "event_attendance",
    key=("event_id", "family_id"),
    description="Who came: one row per family that attended an event.",
    links={"event_id": "events.csv", "family_id": "roster"},
    columns=(Column("event_id", "id"), Column("family_id", "id")),
)

COMMUNICATIONS = SourceFile(
    "communications.csv",
    "communications",
    key=("message_id",),
    description="Teacher-parent and school-parent messages, with what the family did with them.",
    links={"family_id": "roster"},
    columns=(
        Column("message_id", "id"),
        Column("family_id", "id"),
        Column("channel", "enum", values=CHANNELS),
        Column("content_type", "enum", values=CONTENT_TYPES),
        Column("direction", "enum", values=DIRECTIONS),
        Column("sent_at", "datetime"),
        Column("opened_at", "datetime", required=False),
        Column("clicked_at", "datetime", required=False, description="clicked or watched"),
        Column("replied_at", "datetime", required=False),
    ),
)

PLATFORM_ACTIVITY = SourceFile(
    "platform_activity.csv",
    "platform_activity",
    key=("family_id", "date", "platform", "feature"),
    description="Use of the school's online platform and app: per family, day and feature.",
    links={"family_id": "roster"},
    columns=(
        Column("family_id", "id"),
        Column("date", "date"),
        Column("platform", "enum", values=PLATFORMS),
        Column(
            "feature",
            "id",
            description="a short code (no spaces, no @): free text could carry names or e-mails",
        ),
        Column("sessions", "int", minimum=0, maximum=1000),
        Column("minutes", "number", minimum=0, maximum=1440),
    ),
)

GRADES = SourceFile(
    "grades.csv",
    "grades",
    key=("student_id", "term", "subject"),
    description="Grades per student per term, on a 0-100 scale.",
    links={"student_id": "roster"},
    columns=(
        Column("student_id", "id"),
        Column("term", "id", description="a short code, e.g. 2026-T01; terms sort in time order"),
        Column("subject", "id", description="a short code, e.g. math"),
        Column("grade", "number", minimum=0, maximum=100),
    ),
)

ATTENDANCE = SourceFile(
    "attendance.csv",
    "attendance",
    key=("student_id", "date", "period"),
    description="Daily (or per-period) attendance.",
    links={"student_id": "roster"},
    columns=(
        Column("student_id", "id"),
        Column("date", "date"),
        Column(
            "period", "id", required=False, description="a short code; empty for daily attendance"
        ),
        Column("status", "enum", values=ATTENDANCE_STATUS),
        Column("excused", "bool", required=False),
    ),
)

WEARABLES = SourceFile(
    "wearables.csv",
    "wearables",
    key=("student_id", "date"),
    description="Wearable summaries. Refused unless the policy enables wearables with consent.",
    links={"student_id": "roster"},
    columns=(
        Column("student_id", "id"),
        Column("date", "date"),
        Column("sleep_minutes", "number", minimum=0, maximum=1440),
        Column("active_minutes", "number", minimum=0, maximum=1440),
    ),
)

SOURCES: tuple[SourceFile, ...] = (
    EVENTS, EVENT_ATTENDANCE, COMMUNICATIONS, PLATFORM_ACTIVITY, GRADES, ATTENDANCE, WEARABLES,
)  # fmt: skip
ONEROSTER_FILES = ("users.csv", "orgs.csv", "enrollments.csv")  # + roles.csv in 1.2

_PATTERNS = {
    "id": r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$",
    "date": r"^\d{4}-\d{2}-\d{2}$",
    "time": r"^([01]\d|2[0-3]):[0-5]\d$",
    "datetime": r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2})?(Z|[+-]\d{2}:?\d{2})?$",
    "bool": r"^(yes|no|true|false|1|0)$",
    "int": r"^-?\d+$",
    "number": r"^-?\d+(\.\d+)?$",
}


def _column_schema(column: Column) -> dict:
    schema: dict = {"type": "string", "description": column.description or column.type}
    if column.type == "enum":
        schema["enum"] = list(column.values)
    elif column.type in _PATTERNS:
        schema["pattern"] = _PATTERNS[column.type]
    if column.minimum is not None:
        schema["x-minimum"] = column.minimum
    if column.maximum is not None:
        schema["x-maximum"] = column.maximum
    if column.identifying:
        schema["x-identifying"] = True
    return schema


def json_schema() -> dict:
    """A JSON Schema per file for one CSV row (every cell is a string, as CSV gives it)."""
    files = (ROSTER, ONEROSTER_USERS, *SOURCES)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://schoolfed.example/export-format/v{FORMAT_VERSION}",
        "title": f"SchoolFed school export format, version {FORMAT_VERSION}",
        "description": "One folder per export, one CSV per source; a row of each file must "
        "match the schema under $defs named after the file. x-minimum/x-maximum bound the "
        "numeric value of a cell; x-identifying marks a direct identifier that is never stored.",
        "$defs": {
            f.name.removesuffix(".csv"): {
                "type": "object",
                "description": f.description,
                "x-category": f.category,
                "x-key": list(f.key),
                "properties": {c.name: _column_schema(c) for c in f.columns},
                "required": [c.name for c in f.columns if c.required],
            }
            for f in files
        },
    }


INTRO = f"""# SchoolFed school export format, version {FORMAT_VERSION}

What a school node ingests with `schoolfed node ingest EXPORT_DIR --node-dir NODE_DIR`.
Generated from `client_node/export_format.py` (the single source of truth); the same content as
JSON Schema is `export-format.schema.json`, and `example-export/` is a small valid export.

## The folder

One folder per export, one CSV file per source. Every file is optional except the roster.

- Encoding UTF-8 (a byte-order mark is accepted); LF or CRLF line endings; a header row.
- Column order is free. A column not listed here is reported and ignored. An empty cell means
  "no value"; a required column must have a value in every row.
- Dates are `YYYY-MM-DD`, times `HH:MM`, date-times ISO 8601 (`2026-09-14T08:30` or with
  seconds and an offset). Yes/no cells are `yes`/`no` (`true`/`false`, `1`/`0` accepted).
- Ids are 1-64 characters of letters, digits and `_ . : -`. They are pseudonymized at the
  node (HMAC-SHA256 under the school's own secret) before anything is stored.
- Columns marked *identifying* (names, e-mails, phones, addresses) may be present in an export
  (SIS exports have them); they are never stored, logged or sent anywhere.
- A row that breaks a rule goes to the node's quarantine with its file, line, column and
  reason (never its values); a row whose key repeats an earlier row is a duplicate.
- A file whose category the node's policy does not allow is refused as a whole; a column the
  policy does not allow in its category is not stored.

## The roster (required)

Either the project's simple `roster.csv`, or 1EdTech OneRoster 1.1/1.2 CSV: `users.csv`
(role student, parent or guardian; `agentSourcedIds` links a student to its guardians and
back), `orgs.csv`, `enrollments.csv` and, for 1.2, `roles.csv`. A family is a group of students
and the guardians linked to them; its id is the smallest guardian `sourcedId` of the group.
"""


def markdown() -> str:
    """The human page: the intro, then one table per file."""
    lines = [INTRO]
    for f in (ROSTER, ONEROSTER_USERS, *SOURCES):
        category = f"policy category `{f.category}`" if f.category else "the roster"
        lines += [f"## `{f.name}` ({category})", "", f.description, ""]
        lines += [f"Key: {', '.join(f.key)}." + (
            " Links: " + ", ".join(f"`{c}` must exist in {t}" for c, t in f.links.items()) + "."
            if f.links else ""
        ), ""]  # fmt: skip
        lines += ["| column | type | required | allowed values | notes |", "|---|---|---|---|---|"]
        for c in f.columns:
            allowed = ", ".join(c.values) if c.values else (
                f"{c.minimum:g} to {c.maximum:g}" if c.minimum is not None and c.maximum is not None else ""
            )  # fmt: skip
            notes = "; ".join(
                filter(None, [c.description, "identifying: never stored" if c.identifying else ""])
            )
            lines.append(
                f"| `{c.name}` | {c.type} | {'yes' if c.required else 'no'} | {allowed} | {notes} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(markdown() if "--markdown" in sys.argv else json.dumps(json_schema(), indent=2))
