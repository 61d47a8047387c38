"""Ingestion of a school export: validation, quarantine, minimization, pseudonyms, atomicity."""

from __future__ import annotations

import csv
import hashlib
import stat
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from cli.main import main
from client_node import ingest as ingest_module
from client_node.errors import NodeError
from client_node.ingest import ingest_export
from client_node.node import NodeConfig, install_policy, node_audit_log, write_node_config
from client_node.pseudonym import SECRET_FILE, Pseudonymizer
from client_node.store import TABLES, Store
from policies.trust import PolicyRefused
from tests.conftest import current_policy_text, signed_policy

N_FAMILIES = 20
DAY = date.today() - timedelta(days=20)  # inside every retention period
EVENTS = [("EVT-1", "conference", 0), ("EVT-2", "pta_meeting", 3), ("EVT-3", "open_house", 7)]


def fid(i: int) -> str:
    return f"FAM-QX-{i:04d}"


def sid(i: int) -> str:
    return f"STU-QX-{i:04d}"


def mid(i: int) -> str:
    return f"MSG-QX-{i:04d}"


def day(offset: int) -> str:
    return (DAY + timedelta(days=offset)).isoformat()


def person(i: int) -> dict[str, str]:
    """Identifying details nobody could mistake for anything else."""
    return {
        "student_name": f"Xanthippe Quagmire{i:02d}",
        "guardian_name": f"Barnabas Quagmire{i:02d}",
        "guardian_email": f"barnabas.quagmire{i:02d}@example.org",
        "guardian_phone": f"+1 555 013 77{i:02d}",
        "address": f"{100 + i} Zzyzx Road",
    }


def students() -> list[tuple[str, str, int]]:
    """(student id, family id, grade level): families 1-5 have two children."""
    rows = [(sid(i), fid(i), i % 13 - 1) for i in range(1, N_FAMILIES + 1)]
    rows += [(sid(100 + i), fid(i), (i + 4) % 13) for i in range(1, 6)]
    return rows


def write_csv(path: Path, header: list[str], rows: list[list[object]], **kw) -> Path:
    with open(path, "w", newline="", encoding=kw.pop("encoding", "utf-8")) as fh:
        writer = csv.writer(fh, lineterminator=kw.pop("lineterminator", "\n"))
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_export(folder: Path) -> Path:
    """A valid export of 20 families (25 students) with every source but wearables."""
    folder.mkdir(parents=True, exist_ok=True)
    header = ["student_id", "family_id", "grade_level", *person(0), "preferred_language"]
    write_csv(
        folder / "roster.csv",
        header,
        [[s, f, g, *person(int(f[-2:])).values(), "es"] for s, f, g in students()],
    )
    write_csv(
        folder / "events.csv",
        ["event_id", "event_type", "event_date", "event_time", "mode"],
        [[e, t, day(d), "18:30", "in_person"] for e, t, d in EVENTS],
    )
    write_csv(
        folder / "event_attendance.csv",
        ["event_id", "family_id"],
        [[e, fid(i)] for e, _, _ in EVENTS for i in range(1, N_FAMILIES + 1) if i % 3 != 0],
    )
    comms = []
    for i in range(1, N_FAMILIES + 1):
        for k in range(2):
            sent = f"{day(k)}T09:00"
            opened = f"{day(k)}T12:00" if i % 2 else ""
            comms.append(
                [mid(i * 10 + k), fid(i), "email" if k else "sms", "text", "school_to_family",
                 sent, opened, opened, ""]
            )  # fmt: skip
    write_csv(
        folder / "communications.csv",
        ["message_id", "family_id", "channel", "content_type", "direction", "sent_at",
         "opened_at", "clicked_at", "replied_at"],
        comms,
    )  # fmt: skip
    write_csv(
        folder / "platform_activity.csv",
        ["family_id", "date", "platform", "feature", "sessions", "minutes"],
        [[fid(i), day(d), "app", "homework", 2, 12.5] for i in range(1, N_FAMILIES + 1) for d in range(3)],
    )  # fmt: skip
    write_csv(
        folder / "grades.csv",
        ["student_id", "term", "subject", "grade"],
        [[s, "2026-Q1", subject, 70 + g] for s, _, g in students() for subject in ("math", "reading")],
    )  # fmt: skip
    write_csv(
        folder / "attendance.csv",
        ["student_id", "date", "period", "status", "excused"],
        [[s, day(d), "", "absent" if d == 1 else "present", "yes" if d == 1 else ""]
         for s, _, _ in students() for d in range(3)],
    )  # fmt: skip
    return folder


EXPECTED = {
    "families": 20,
    "students": 25,
    "events": 3,
    "event_attendance": 3 * 14,
    "communications": 40,
    "platform_activity": 60,
    "grades": 50,
    "attendance": 75,
    "wearables": 0,
    "exports": 1,
}


@pytest.fixture
def node(tmp_path, officer) -> Path:
    return make_ingest_node(tmp_path, officer)


def make_ingest_node(root: Path, officer, policy_text: str | None = None) -> Path:
    """A node directory: node.yaml, the signed policy and the trust anchor (no data)."""
    node_dir = root / "node"
    write_node_config(node_dir, NodeConfig(school_id="west-town"))
    folder = root / "policy"
    folder.mkdir(exist_ok=True)
    policy = signed_policy(folder, policy_text or current_policy_text(), officer[0])
    install_policy(node_dir, policy=policy, trust_anchor=officer[1])
    return node_dir


def counts(node_dir: Path) -> dict[str, int]:
    with Store.for_node(node_dir) as store:
        return store.counts()


def table_hashes(node_dir: Path) -> dict[str, str]:
    with Store.for_node(node_dir) as store:
        return {
            name: hashlib.sha256(store.frame(name).to_csv(index=False).encode()).hexdigest()
            for name in TABLES
        }


def quarantine(node_dir: Path, file: str) -> list[tuple[str, int, str, str]]:
    (folder,) = (node_dir / "quarantine").iterdir()
    frame = pd.read_csv(folder / file, dtype={"column": str}, keep_default_na=False)
    assert list(frame.columns) == ["file", "line", "column", "reason"]
    return [(r.file, int(r.line), r.column, r.reason) for r in frame.itertuples()]


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert text.count(old) >= count, old
    path.write_text(text.replace(old, new, count))


# --- a valid export ---------------------------------------------------------------------------


def test_a_valid_export_is_stored_with_exact_row_counts(tmp_path, node):
    export = write_export(tmp_path / "export")

    summary = ingest_export(export, node_dir=node)

    assert counts(node) == EXPECTED
    assert summary.refused == {}
    assert summary.quarantine_dir is None
    assert not (node / "quarantine").exists()
    platform = summary.files["platform_activity.csv"]
    assert (platform.rows, platform.accepted, platform.quarantined, platform.duplicates) == (
        60, 60, 0, 0,
    )  # fmt: skip
    assert platform.added == 60
    assert summary.files["roster.csv"].added == 25
    assert set(summary.files["roster.csv"].not_stored) == {*person(0), "preferred_language"}
    assert "platform_activity.csv" in summary.render()


def test_stored_values_are_pseudonymized_and_typed(tmp_path, node):
    ingest_export(write_export(tmp_path / "export"), node_dir=node)
    pseudonym = Pseudonymizer.for_node(node)

    with Store.for_node(node) as store:
        families = store.frame("families")
        students_ = store.frame("students").set_index("student_pid")
        activity = store.frame("platform_activity")
        attendance = store.frame("attendance")
        grades = store.frame("grades")
        attended = store.frame("event_attendance")
        comms = store.frame("communications").set_index("message_pid")

    assert set(families["family_pid"]) == {pseudonym("family", fid(i)) for i in range(1, 21)}
    twin = students_.loc[pseudonym("student", sid(103))]
    assert twin["family_pid"] == pseudonym("family", fid(3)) and twin["grade_level"] == 7
    assert len(pseudonym("family", fid(1))) == 32
    assert pseudonym("family", "X") != pseudonym("student", "X")
    row = activity.iloc[0]
    assert (row["sessions"], row["minutes"], row["record_date"]) == (2, 12.5, row["date"])
    assert set(attendance["period"]) == {""}
    assert attendance["excused"].tolist().count(True) == 25
    assert set(grades["record_date"]) == {date.today().isoformat()}
    assert set(attended["record_date"]) == {day(d) for _, _, d in EVENTS}
    message = comms.loc[pseudonym("message", mid(11))]
    assert message["record_date"] == day(1) and message["clicked_at"] == f"{day(1)}T12:00"
    assert message["replied_at"] is None


def test_the_same_export_twice_adds_nothing(tmp_path, node):
    export = write_export(tmp_path / "export")
    ingest_export(export, node_dir=node)
    before = table_hashes(node)

    again = ingest_export(export, node_dir=node)

    assert again.already_ingested
    assert counts(node) == EXPECTED
    assert table_hashes(node) == before
    kinds = [e["kind"] for e in node_audit_log(node).entries()]
    assert kinds.count("ingestion") == 2


def test_overlapping_exports_add_only_the_new_rows(tmp_path, node):
    first = write_export(tmp_path / "first")
    ingest_export(first, node_dir=node)
    second = write_export(tmp_path / "second")
    with open(second / "platform_activity.csv", "a") as fh:
        fh.write(f"{fid(1)},{day(9)},web,calendar,1,3\n")

    summary = ingest_export(second, node_dir=node)

    report = summary.files["platform_activity.csv"]
    assert (report.accepted, report.added) == (61, 1)
    assert counts(node)["platform_activity"] == 61
    assert counts(node)["exports"] == 2


def test_the_audit_log_gets_counts_and_no_ids(tmp_path, node):
    ingest_export(write_export(tmp_path / "export"), node_dir=node)

    (entry,) = [e for e in node_audit_log(node).entries() if e["kind"] == "ingestion"]

    assert entry["data"]["files"]["communications.csv"] == {
        "accepted": 40, "quarantined": 0, "duplicates": 0,
    }  # fmt: skip
    text = (node / "audit.log").read_text()
    assert "QX-" not in text and "Quagmire" not in text
    assert node_audit_log(node).verify().ok


# --- refused exports and files ----------------------------------------------------------------


def test_an_export_without_a_roster_is_refused_and_the_store_unchanged(tmp_path, node):
    ingest_export(write_export(tmp_path / "first"), node_dir=node)
    before = (counts(node), table_hashes(node))
    export = write_export(tmp_path / "export")
    (export / "roster.csv").unlink()

    with pytest.raises(NodeError, match="no roster"):
        ingest_export(export, node_dir=node)

    assert (counts(node), table_hashes(node)) == before
    assert node_audit_log(node).entries()[-1]["kind"] == "refusal"


def test_the_cli_refuses_an_export_without_a_roster_in_one_line(tmp_path, node, capsys):
    export = write_export(tmp_path / "export")
    (export / "roster.csv").unlink()

    status = main(["node", "ingest", str(export), "--node-dir", str(node)])

    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("schoolfed node ingest: export ")
    assert "no roster" in err


def test_the_cli_ingests_and_prints_the_summary(tmp_path, node, capsys):
    export = write_export(tmp_path / "export")

    status = main(["node", "ingest", str(export), "--node-dir", str(node)])

    out = capsys.readouterr().out
    assert status == 0
    assert "communications.csv" in out and "quarantined" in out
    assert counts(node) == EXPECTED


def test_a_broken_file_refuses_the_whole_export_and_leaves_the_store_as_it_was(tmp_path, node):
    before = table_hashes(node)
    export = write_export(tmp_path / "export")
    frame = pd.read_csv(export / "communications.csv", dtype=str, keep_default_na=False)
    frame.drop(columns="channel").to_csv(export / "communications.csv", index=False)

    with pytest.raises(
        NodeError,
        match="communications.csv: the required column 'channel' is missing; nothing was ingested",
    ):
        ingest_export(export, node_dir=node)

    assert table_hashes(node) == before  # all or nothing: the good files are not stored either
    assert counts(node)["platform_activity"] == 0
    export = write_export(tmp_path / "export2")
    (export / "grades.csv").write_bytes(b"\x00\xff\xfe binary")  # another broken file
    with pytest.raises(NodeError, match="grades.csv"):
        ingest_export(export, node_dir=node)
    assert table_hashes(node) == before


def test_wearables_are_refused_under_the_district_policy(tmp_path, node):
    export = write_export(tmp_path / "export")
    write_csv(
        export / "wearables.csv",
        ["student_id", "date", "sleep_minutes", "active_minutes"],
        [[sid(1), day(0), 480, 60]],
    )

    summary = ingest_export(export, node_dir=node)

    assert summary.refused == {"wearables.csv": "the policy does not enable the category wearables"}
    assert counts(node)["wearables"] == 0
    assert summary.quarantine_dir is None  # a policy refusal is not a data defect


def test_wearables_need_explicit_consent_even_when_enabled(tmp_path, officer):
    text = current_policy_text().replace(
        "  wearables:\n    enabled: false\n    retention_days: 90\n    consent: explicit",
        "  wearables:\n    enabled: true\n    fields: [student_id, date, sleep_minutes]\n"
        "    retention_days: 90\n    purposes: [research]\n    consent: none",
    )
    node_dir = make_ingest_node(tmp_path, officer, text)
    export = write_export(tmp_path / "export")
    write_csv(
        export / "wearables.csv",
        ["student_id", "date", "sleep_minutes", "active_minutes"],
        [[sid(1), day(0), 480, 60]],
    )

    # a node will not even open under a policy that enables wearables without consent
    with pytest.raises(PolicyRefused, match="categories.wearables.consent"):
        ingest_export(export, node_dir=node_dir)

    consented = make_ingest_node(
        tmp_path / "b", officer, text.replace("consent: none", "consent: explicit")
    )
    ingest_export(export, node_dir=consented)
    with Store.for_node(consented) as store:
        stored = store.frame("wearables")
    assert stored[["sleep_minutes", "active_minutes"]].values.tolist() == [[480.0, None]]


def test_a_field_the_policy_does_not_allow_is_not_stored(tmp_path, officer):
    text = current_policy_text().replace(
        "sent_at, opened_at, clicked_at, replied_at]", "sent_at, opened_at, replied_at]"
    )
    assert "clicked_at" not in text.split("communications:")[1].split("retention")[0]
    node_dir = make_ingest_node(tmp_path, officer, text)

    summary = ingest_export(write_export(tmp_path / "export"), node_dir=node_dir)

    with Store.for_node(node_dir) as store:
        comms = store.frame("communications")
    assert len(comms) == 40
    assert comms["clicked_at"].isna().all()
    assert comms["opened_at"].notna().sum() == 20
    assert "clicked_at" in summary.files["communications.csv"].not_stored


# --- broken rows ------------------------------------------------------------------------------


def test_an_unknown_channel_is_quarantined(tmp_path, node):
    export = write_export(tmp_path / "export")
    edit(export / "communications.csv", f"{mid(30)},{fid(3)},sms", f"{mid(30)},{fid(3)},pigeon")

    summary = ingest_export(export, node_dir=node)

    report = summary.files["communications.csv"]
    assert (report.accepted, report.quarantined) == (39, 1)
    assert counts(node)["communications"] == 39
    assert quarantine(node, "communications.csv") == [
        ("communications.csv", 6, "channel",
         "not one of email, sms, app_push, newsletter, video, phone_call"),
    ]  # fmt: skip
    assert "pigeon" not in (summary.quarantine_dir / "communications.csv").read_text()


def test_text_in_a_numeric_column_is_quarantined(tmp_path, node):
    export = write_export(tmp_path / "export")
    lines = (export / "platform_activity.csv").read_text().splitlines()
    lines[4] = lines[4].replace(",2,12.5", ",two,12.5")  # line 5
    lines[7] = lines[7].replace(",2,12.5", ",2,lots")  # line 8
    lines[9] = lines[9].replace(",2,12.5", ",2,2000")  # line 10
    (export / "platform_activity.csv").write_text("\n".join(lines) + "\n")

    summary = ingest_export(export, node_dir=node)

    assert summary.files["platform_activity.csv"].quarantined == 3
    assert counts(node)["platform_activity"] == 57
    assert quarantine(node, "platform_activity.csv") == [
        ("platform_activity.csv", 5, "sessions", "not a whole number"),
        ("platform_activity.csv", 8, "minutes", "not a number"),
        ("platform_activity.csv", 10, "minutes", "above the maximum 1440"),
    ]


def test_event_attendance_for_an_unknown_family_is_quarantined(tmp_path, node):
    export = write_export(tmp_path / "export")
    with open(export / "event_attendance.csv", "a") as fh:
        fh.write("EVT-1,FAM-QX-9999\nEVT-9,FAM-QX-0001\n")

    summary = ingest_export(export, node_dir=node)

    report = summary.files["event_attendance.csv"]
    assert (report.rows, report.accepted, report.quarantined) == (44, 42, 2)
    assert quarantine(node, "event_attendance.csv") == [
        ("event_attendance.csv", 44, "family_id", "not in the roster"),
        ("event_attendance.csv", 45, "event_id", "not an event in events.csv or already stored"),
    ]


def test_duplicated_rows_are_counted_and_the_first_kept(tmp_path, node):
    export = write_export(tmp_path / "export")
    with open(export / "grades.csv", "a") as fh:
        fh.write(f"{sid(1)},2026-Q1,math,99\n{sid(1)},2026-Q1,math,98\n")
    pseudonym = Pseudonymizer.for_node(node)

    summary = ingest_export(export, node_dir=node)

    report = summary.files["grades.csv"]
    assert (report.rows, report.accepted, report.duplicates, report.quarantined) == (52, 50, 2, 0)
    with Store.for_node(node) as store:
        grades = store.frame("grades")
    math = grades[
        (grades["student_pid"] == pseudonym("student", sid(1))) & (grades["subject"] == "math")
    ]
    assert math["grade"].tolist() == [70.0]  # the first row, not the later ones
    assert summary.quarantine_dir is None


def test_a_file_with_a_bom_and_windows_line_endings_is_accepted(tmp_path, node):
    export = write_export(tmp_path / "export")
    for name in ("roster.csv", "attendance.csv"):
        text = (export / name).read_text()
        (export / name).write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())

    summary = ingest_export(export, node_dir=node)

    assert counts(node) == EXPECTED
    assert summary.files["attendance.csv"].accepted == 75
    assert summary.files["roster.csv"].ignored_columns == ()


def test_quoted_cells_blank_lines_and_short_rows_keep_their_line_numbers(tmp_path, node):
    export = write_export(tmp_path / "export")
    path = export / "platform_activity.csv"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace(",homework,", ',"home\nwork",')  # a cell over lines 2-3
    lines.insert(3, "")  # line 5 is blank
    lines[4] = ",".join(lines[4].split(",")[:4])  # line 6: 4 cells
    lines[5] = lines[5].replace(",2,12.5", ",x,12.5")  # line 7
    path.write_text("\n".join(lines) + "\n")

    summary = ingest_export(export, node_dir=node)

    # the quoted cell spans lines 2-3; a newline is not allowed in a feature code
    assert summary.files["platform_activity.csv"].quarantined == 3
    entries = quarantine(node, "platform_activity.csv")
    assert entries[0][:3] == ("platform_activity.csv", 2, "feature")
    assert entries[1:] == [
        ("platform_activity.csv", 6, "", "the row has 4 cells; the header has 6"),
        ("platform_activity.csv", 7, "sessions", "not a whole number"),
    ]


def test_an_extra_cell_in_the_first_row_and_a_short_row_are_both_caught(tmp_path, node):
    export = write_export(tmp_path / "export")
    path = export / "platform_activity.csv"
    lines = path.read_text().splitlines()
    lines[1] += ","  # 7 cells: pandas alone would drop the extra one silently
    lines[2] = lines[2].removesuffix(",12.5")  # 5 cells: pandas alone would fill one in
    path.write_text("\n".join(lines) + "\n")

    ingest_export(export, node_dir=node)

    assert quarantine(node, "platform_activity.csv") == [
        ("platform_activity.csv", 2, "", "the row has 7 cells; the header has 6"),
        ("platform_activity.csv", 3, "", "the row has 5 cells; the header has 6"),
    ]


FAST_READER_CASES = [
    (b"a,b\n1,2\n3,4\n", True),
    (b"a,b\r\n1,2\r\n\r\n3,4\r\n", True),
    (b"\xef\xbb\xbfa,b\n1,2\n  \n\t\n3,4", True),
    (b"\n\na,b\n1,2\n3,4\n\n\n", True),
    (b"a,b\n1,2,\n3\n", False),
    (b"a,b\n1,2,3\n", False),
    (b"a,b\n1,2\n3\n", False),
    (b"a,b\r1,2\r3,4\r", False),
    (b"a,b\n1,2\n3,4\r5,6\n", True),
    (b"a,b\nNA,\nnull,N/A\n,\n", True),
    (b"a,b\n\xc3\xa9 x , 2\n", True),
]


@pytest.mark.parametrize(("data", "fast"), FAST_READER_CASES)
def test_the_coding_reader_agrees_with_the_csv_module(data, fast):
    keep = lambda name: name != "b"  # noqa: E731

    parsed = ingest_module._parse("f.csv", data, keep=keep, coded=True)
    reference = ingest_module._parse_csv_module("f.csv", data, keep)

    assert parsed.header == reference.header
    decoded = {}
    for name in ("a",):
        column = parsed.column(name)
        decoded[name] = (column[1][column[0]] if isinstance(column, tuple) else column).tolist()
    assert decoded == {k: v.tolist() for k, v in reference.cells.items()}
    assert "b" not in parsed.cells and "b" not in parsed.coded
    assert parsed.lines.tolist() == reference.lines.tolist()
    assert parsed.shape_errors == reference.shape_errors


@pytest.mark.parametrize(("data", "fast"), FAST_READER_CASES[:9])  # the cases without NA or é
def test_the_fast_reader_agrees_with_the_csv_module(data, fast):
    keep = lambda name: True  # noqa: E731

    taken = ingest_module._parse_fast("f.csv", data, keep)
    parsed = ingest_module._parse("f.csv", data, keep=keep)
    reference = ingest_module._parse_csv_module("f.csv", data, keep)

    assert (taken is not None) == fast
    assert parsed.header == reference.header
    assert {k: v.tolist() for k, v in parsed.cells.items()} == {
        k: v.tolist() for k, v in reference.cells.items()
    }
    assert parsed.lines.tolist() == reference.lines.tolist()
    assert parsed.shape_errors == reference.shape_errors


def test_an_unexpected_column_is_reported_and_ignored(tmp_path, node):
    export = write_export(tmp_path / "export")
    frame = pd.read_csv(export / "grades.csv", dtype=str)
    frame.assign(teacher_comment="fine").to_csv(export / "grades.csv", index=False)

    summary = ingest_export(export, node_dir=node)

    assert summary.files["grades.csv"].ignored_columns == ("teacher_comment",)
    assert summary.files["grades.csv"].accepted == 50
    assert "teacher_comment" not in summary.render().split("ignored columns: ")[0]


# --- OneRoster ---------------------------------------------------------------------------------


def write_oneroster(folder: Path) -> None:
    """Students 1-4: 1 and 2 are siblings with two guardians (P-B and P-A, listed from either
    side), 3 has one guardian, 4 has none. Column order differs from the format's."""
    users = [
        # sourcedId, role, grades, agentSourcedIds, givenName, familyName, email, status
        [sid(1), "student", "03", "P-B", "Xanthippe", "Quagmire01", "", "active"],
        [sid(2), "student", "KG", "", "Yorick", "Quagmire01", "", "active"],
        ["P-B", "parent", "", f"{sid(1)},{sid(2)}", "Barnabas", "Quagmire01", "b@example.org", ""],
        ["P-A", "guardian", "", f"{sid(2)}", "Agatha", "Quagmire01", "a@example.org", ""],
        [sid(3), "student", "PK", "P-C", "Zeno", "Quagmire03", "", "active"],
        ["P-C", "parent", "", "", "Clio", "Quagmire03", "", ""],
        [sid(4), "student", "UG", "", "Wendell", "Quagmire04", "", "active"],
        ["T-1", "teacher", "", "", "Tess", "Teacher", "", ""],
    ]
    write_csv(
        folder / "users.csv",
        ["sourcedId", "role", "grades", "agentSourcedIds", "givenName", "familyName", "email",
         "status"][::-1],
        [row[::-1] for row in users],
    )  # fmt: skip
    write_csv(folder / "orgs.csv", ["sourcedId", "name", "type"], [["O-1", "West Town", "school"]])
    write_csv(
        folder / "enrollments.csv",
        ["sourcedId", "classSourcedId", "schoolSourcedId", "userSourcedId", "role"],
        [[f"N-{i}", "C-1", "O-1", sid(i), "student"] for i in range(1, 5)],
    )


def test_a_oneroster_roster_with_another_column_order_gives_families(tmp_path, node):
    export = tmp_path / "export"
    export.mkdir()
    write_oneroster(export)
    write_csv(
        export / "platform_activity.csv",
        ["family_id", "date", "platform", "feature", "sessions", "minutes"],
        [["P-A", day(0), "web", "homework", 1, 5], [sid(4), day(0), "web", "homework", 1, 5],
         ["P-B", day(0), "web", "homework", 1, 5], [sid(1), day(0), "web", "homework", 1, 5]],
    )  # fmt: skip
    pseudonym = Pseudonymizer.for_node(node)

    summary = ingest_export(export, node_dir=node)

    with Store.for_node(node) as store:
        families = set(store.frame("families")["family_pid"])
        students_ = store.frame("students").set_index("student_pid")
    assert families == {pseudonym("family", f) for f in ("P-A", "P-C", sid(4))}
    family_of = students_["family_pid"].to_dict()
    assert family_of[pseudonym("student", sid(1))] == pseudonym("family", "P-A")
    assert family_of[pseudonym("student", sid(2))] == pseudonym("family", "P-A")
    assert family_of[pseudonym("student", sid(3))] == pseudonym("family", "P-C")
    assert family_of[pseudonym("student", sid(4))] == pseudonym("family", sid(4))
    grades = students_["grade_level"].to_dict()
    assert grades[pseudonym("student", sid(1))] == 3
    assert grades[pseudonym("student", sid(3))] == -1
    assert pd.isna(grades[pseudonym("student", sid(4))])
    assert summary.files["users.csv"].ignored_columns == ("status",)
    assert summary.files["platform_activity.csv"].accepted == 2
    assert quarantine(node, "platform_activity.csv") == [
        ("platform_activity.csv", 4, "family_id", "not in the roster"),
        ("platform_activity.csv", 5, "family_id", "not in the roster"),
    ]  # P-B and a student are members of a family, not its id


def test_oneroster_1_2_takes_roles_from_roles_csv(tmp_path, node):
    export = tmp_path / "export"
    export.mkdir()
    write_oneroster(export)
    users = pd.read_csv(export / "users.csv", dtype=str, keep_default_na=False)
    roles = users[["sourcedId", "role"]].rename(columns={"sourcedId": "userSourcedId"})
    roles.assign(sourcedId=[f"R-{i}" for i in range(len(roles))], roleType="primary").to_csv(
        export / "roles.csv", index=False
    )
    users.drop(columns="role").to_csv(export / "users.csv", index=False)
    pseudonym = Pseudonymizer.for_node(node)

    ingest_export(export, node_dir=node)

    with Store.for_node(node) as store:
        families = set(store.frame("families")["family_pid"])
    assert families == {pseudonym("family", f) for f in ("P-A", "P-C", sid(4))}


# --- privacy of the node directory -------------------------------------------------------------


def test_no_identifier_from_the_export_is_anywhere_in_the_node_directory(tmp_path, node):
    export = write_export(tmp_path / "export")
    edit(export / "communications.csv", f"{mid(30)},{fid(3)},sms", f"{mid(30)},{fid(3)},pigeon")
    with open(export / "event_attendance.csv", "a") as fh:
        fh.write("EVT-1,FAM-QX-9999\n")
    roster = pd.read_csv(export / "roster.csv", dtype=str)
    secrets = set()
    for column in ("student_name", "guardian_name", "guardian_email", "guardian_phone", "address"):
        secrets |= set(roster[column])
    secrets |= {fid(i) for i in range(1, 21)} | {s for s, _, _ in students()}
    secrets |= {mid(i * 10 + k) for i in range(1, 21) for k in range(2)} | {"FAM-QX-9999"}

    ingest_export(export, node_dir=node)
    with Store.for_node(node) as store:  # an open connection keeps the WAL around
        store.counts()
        files = [p for p in node.rglob("*") if p.is_file()]
        blobs = {p: p.read_bytes() for p in files}

    names = {p.name for p in files}
    assert {"store.sqlite", "store.sqlite-wal", "audit.log"} <= names
    assert any(p.parent.parent.name == "quarantine" for p in files)
    leaks = [(p.name, s) for p, blob in blobs.items() for s in secrets if s.encode() in blob]
    assert leaks == []
    # nor any part of one: a family name, a phone prefix, a street, an id prefix
    for fragment in (b"quagmire", b"013 77", b"zzyzx", b"qx-"):
        assert [p.name for p, blob in blobs.items() if fragment in blob.lower()] == []


def test_the_school_secret_is_private_and_never_replaced(tmp_path, node):
    ingest_export(write_export(tmp_path / "export"), node_dir=node)
    secret = node / SECRET_FILE
    first = secret.read_bytes()

    ingest_export(write_export(tmp_path / "other"), node_dir=node)

    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(first) == 32 and secret.read_bytes() == first


def test_a_secret_readable_by_others_is_refused(tmp_path, node):
    ingest_export(write_export(tmp_path / "export"), node_dir=node)
    (node / SECRET_FILE).chmod(0o644)

    with pytest.raises(NodeError, match="readable by others"):
        Pseudonymizer.for_node(node)


# --- all or nothing ----------------------------------------------------------------------------


def test_a_crash_half_way_leaves_the_store_as_it_was(tmp_path, node, monkeypatch):
    ingest_export(write_export(tmp_path / "first"), node_dir=node)
    before = (counts(node), table_hashes(node))
    export = write_export(tmp_path / "second")
    with open(export / "platform_activity.csv", "a") as fh:
        fh.write(f"{fid(1)},{day(9)},web,calendar,1,3\n")
    with open(export / "grades.csv", "a") as fh:
        fh.write(f"{sid(1)},2026-Q2,math,80\n")
    real = ingest_module._ingest_source

    def crash_at_grades(ctx, source, data):
        if source.name == "grades.csv":
            raise RuntimeError("disk on fire")
        return real(ctx, source, data)

    monkeypatch.setattr(ingest_module, "_ingest_source", crash_at_grades)

    with pytest.raises(RuntimeError, match="disk on fire"):
        ingest_export(export, node_dir=node)

    assert (counts(node), table_hashes(node)) == before  # platform activity was rolled back
    assert not (node / "quarantine").exists()
    monkeypatch.undo()
    summary = ingest_export(export, node_dir=node)  # the same export goes in afterwards
    assert summary.files["platform_activity.csv"].added == 1
    assert counts(node)["grades"] == 51


def test_a_crash_inside_the_insert_loop_rolls_back_too(tmp_path, node, monkeypatch):
    before = (counts(node), table_hashes(node))
    export = write_export(tmp_path / "export")
    calls = []
    real = Store.insert

    def insert(self, conn, table, columns, **kw):
        calls.append(table)
        if len(calls) == 5:  # after families, students, events, event_attendance
            raise OSError("no space left on device")
        return real(self, conn, table, columns, **kw)

    monkeypatch.setattr(Store, "insert", insert)

    with pytest.raises(OSError):
        ingest_export(export, node_dir=node)

    assert (counts(node), table_hashes(node)) == before


def test_progress_is_reported_per_file(tmp_path, node):
    calls = []

    ingest_export(
        write_export(tmp_path / "export"), node_dir=node, progress=lambda *a: calls.append(a)
    )

    assert ("platform_activity.csv", 0, 60) in calls
    assert ("platform_activity.csv", 60, 60) in calls
    assert {c[0] for c in calls} >= {"roster.csv", "communications.csv", "grades.csv"}


# --- the store's own API -----------------------------------------------------------------------


def test_the_store_deletes_by_record_date(tmp_path, node):
    ingest_export(write_export(tmp_path / "export"), node_dir=node)

    with Store.for_node(node) as store:
        deleted = store.delete_older_than("platform_activity", DAY + timedelta(days=1))
        with pytest.raises(NodeError, match="no record_date"):
            store.delete_older_than("families", DAY)
        with pytest.raises(NodeError, match="does not exist"):
            store.frame("nope")
        remaining = store.counts()["platform_activity"]

    assert (deleted, remaining) == (20, 40)


# --- the compact platform_activity table ---------------------------------------------------------


def test_compact_activity_reads_back_exactly_what_the_export_held(tmp_path, node):
    export = write_export(tmp_path / "export")
    path = export / "platform_activity.csv"
    with open(path, "a") as fh:  # more features, platforms, a decimal, an early date
        fh.write(f"{fid(2)},{day(1)},web,calendar,0,0.25\n{fid(7)},1969-12-31,web,lunch,3,7\n")
    pseudonym = Pseudonymizer.for_node(node)

    summary = ingest_export(export, node_dir=node)
    with Store.for_node(node) as store:
        activity = store.frame("platform_activity")
        exports = store.frame("exports")

    raw = pd.read_csv(path, dtype={"minutes": float, "sessions": "int64"}, keep_default_na=False)
    expected = (
        raw.assign(family_id=[pseudonym("family", f) for f in raw["family_id"]])
        .rename(columns={"family_id": "family_pid"})
        .assign(record_date=lambda d: d["date"], export_id=summary.export_id)
        .sort_values(["family_pid", "date", "platform", "feature"])
        .reset_index(drop=True)
    )
    assert list(activity.columns) == [
        "family_pid", "date", "platform", "feature", "sessions", "minutes", "record_date",
        "export_id",
    ]  # fmt: skip
    pd.testing.assert_frame_equal(activity, expected)
    assert exports["export_id"].tolist() == [summary.export_id]


def test_compact_activity_stores_integers_and_dictionaries(tmp_path, node):
    ingest_export(write_export(tmp_path / "first"), node_dir=node)
    second = write_export(tmp_path / "second")
    with open(second / "platform_activity.csv", "a") as fh:
        fh.write(f"{fid(1)},{day(9)},web,forms,1,3\n")

    summary = ingest_export(second, node_dir=node)
    with Store.for_node(node) as store, store.engine.connect() as conn:
        types = conn.exec_driver_sql(
            "SELECT DISTINCT typeof(family_sid), typeof(day), typeof(platform), typeof(feature),"
            " typeof(record_day), typeof(export_no) FROM platform_activity"
        ).fetchall()
        codes = conn.exec_driver_sql("SELECT kind, value, code FROM codes ORDER BY 1, 3").fetchall()
        numbers = conn.exec_driver_sql("SELECT count(*) FROM export_numbers").scalar_one()
        activity = store.frame("platform_activity")

    assert types == [("integer",) * 6]
    assert codes == [("feature", "homework", 0), ("feature", "forms", 1), ("platform", "app", 0),
                     ("platform", "web", 1)]  # fmt: skip
    assert summary.files["platform_activity.csv"].added == 1  # the other 60 were stored already
    assert numbers == 2 and len(activity) == 61
    assert activity.set_index("feature").loc["forms", "export_id"] == summary.export_id
    assert (activity["feature"] == "homework").sum() == 60


def test_a_store_in_the_earlier_layout_is_refused_with_a_clear_message(tmp_path):
    import sqlite3

    path = tmp_path / "store.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE families (family_pid TEXT PRIMARY KEY)")

    with pytest.raises(NodeError, match="earlier SchoolFed"):
        Store(f"sqlite:///{path}")
