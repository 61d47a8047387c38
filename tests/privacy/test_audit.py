import json
import random

import pytest

from privacy.audit import AuditLog


@pytest.fixture
def log(tmp_path):
    audit = AuditLog(tmp_path / "audit.log")
    for i in range(12):
        audit.append(
            "egress", message_type="train", bytes=1000 + i, sha256="ab" * 32, epsilon_spent=0.25 * i
        )
    audit.append("refusal", reason="budget: needs ε 0.5, remains 0.0001, budget 3")
    return audit


def test_a_fresh_log_verifies_and_chains(log):
    result = log.verify()
    assert (result.ok, result.entries) == (True, 13)
    entries = log.entries()
    assert [e["seq"] for e in entries] == list(range(1, 14))
    assert all(b["prev"] == a["hash"] for a, b in zip(entries, entries[1:], strict=False))
    assert entries[0]["prev"] == "0" * 64


def test_a_log_survives_reopening(log):
    again = AuditLog(log.path)
    again.append("ingestion", rows=5)
    assert again.verify().ok and again.verify().entries == 14


def test_every_single_byte_flip_is_caught(log):
    original = log.path.read_bytes()
    rng = random.Random(20261203)
    positions = rng.sample(range(len(original)), 400)
    for position in positions:
        flipped = bytearray(original)
        flipped[position] ^= 1 << rng.randrange(8)
        log.path.write_bytes(bytes(flipped))
        result = log.verify()
        line = original.count(b"\n", 0, position) + 1
        assert not result.ok, f"flip at byte {position} went unnoticed"
        assert result.first_bad is not None and result.first_bad <= line + 1
    log.path.write_bytes(original)
    assert log.verify().ok


def test_deletion_insertion_and_reordering_are_caught(log):
    lines = log.path.read_text().splitlines(keepends=True)
    log.path.write_text("".join(lines[:5] + lines[6:]))
    assert (log.verify().ok, log.verify().first_bad) == (False, 6)
    log.path.write_text("".join(lines[:3] + [lines[7]] + lines[3:]))
    assert (log.verify().ok, log.verify().first_bad) == (False, 4)
    log.path.write_text("".join(lines[:2] + [lines[3], lines[2]] + lines[4:]))
    assert (log.verify().ok, log.verify().first_bad) == (False, 3)
    log.path.write_text("".join(lines[:-2]))  # the tail cut off
    result = log.verify()
    assert not result.ok and "were deleted" in result.reason and result.first_bad == 12
    log.path.write_text("".join(lines))
    assert log.verify().ok


def test_a_rewritten_entry_with_a_fresh_hash_still_breaks_the_chain(log):
    lines = log.path.read_text().splitlines(keepends=True)
    entry = json.loads(lines[4])
    entry["data"]["bytes"] = 1
    from privacy.audit import _entry_hash, _line

    entry["hash"] = _entry_hash(entry)
    lines[4] = _line(entry) + "\n"
    log.path.write_text("".join(lines))
    result = log.verify()
    assert (result.ok, result.first_bad) == (False, 6)
    assert "link to the previous entry" in result.reason


def test_the_head_file_must_be_there(log):
    log.head_path.unlink()
    assert not log.verify().ok
