import json
from pathlib import Path

from client_node.export_format import ROSTER, SOURCES, json_schema, markdown
from policies.categories import FIELDS

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_published_pages_match_the_code():
    assert (DOCS / "export-format.md").read_text() == markdown() + "\n"
    assert json.loads((DOCS / "export-format.schema.json").read_text()) == json_schema()


def test_every_stored_column_is_a_field_a_policy_can_allow():
    ids = {"student_id", "family_id", "message_id"}
    for source in SOURCES:
        allowed = set(FIELDS[source.category]) | ids
        stored = {c.name for c in source.columns if not c.identifying}
        assert stored <= allowed | {"event_id"}, source.name


def test_identifying_columns_are_optional_and_marked():
    identifying = {c.name for c in ROSTER.columns if c.identifying}
    assert identifying == {
        "student_name",
        "guardian_name",
        "guardian_email",
        "guardian_phone",
        "address",
    }
    assert all(not c.required for c in ROSTER.columns if c.identifying)
