"""The data categories a policy can allow, and the fields each may hold.

These names are the contract between the policy (what a privacy officer allows) and ingestion
(what a node stores): a field not listed here cannot be allowed, and direct identifiers (names,
e-mail addresses, phone numbers, postal addresses) are not fields of any category.
"""

from __future__ import annotations

from typing import Literal

CategoryName = Literal[
    "event_attendance", "communications", "platform_activity", "grades", "attendance", "wearables"
]

FIELDS: dict[str, tuple[str, ...]] = {
    "event_attendance": (
        "family_id", "event_id", "event_type", "event_date", "event_time", "mode", "attended",
    ),
    "communications": (
        "family_id", "channel", "content_type", "direction", "sent_at", "opened_at",
        "clicked_at", "replied_at",
    ),
    "platform_activity": ("family_id", "date", "platform", "feature", "sessions", "minutes"),
    "grades": ("student_id", "family_id", "term", "subject", "grade"),
    "attendance": ("student_id", "family_id", "date", "period", "status", "excused"),
    "wearables": ("student_id", "family_id", "date", "sleep_minutes", "active_minutes"),
}  # fmt: skip

# Categories about a child's body or school record: a policy must state why it holds them.
SENSITIVE = frozenset({"grades", "attendance", "wearables"})

# Never a field of any category; ingestion drops them before anything is stored.
DIRECT_IDENTIFIERS = frozenset(
    {"name", "first_name", "last_name", "email", "e_mail", "phone", "address", "street", "postcode"}
)
