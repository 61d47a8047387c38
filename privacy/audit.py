"""The node's append-only, hash-chained audit log.

One JSON object per line: `seq`, `at`, `kind`, `data`, `prev` (the previous entry's hash) and
`hash` (SHA-256 of the canonical JSON of the other five). A head file beside the log holds the
last sequence number and hash, so deleting entries from the end is caught too. Each append is
fsynced under an exclusive lock. Nothing about a single family ever goes into `data`: only
types, sizes, digests, ε figures, counts and policy ids.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from privacy.crypto import sha256_hex
from privacy.errors import PrivacyError

GENESIS = "0" * 64
_FIELDS = ("seq", "at", "kind", "data", "prev")


class AuditError(PrivacyError):
    """The audit log cannot be read or appended to."""


def _entry_hash(entry: dict[str, Any]) -> str:
    canonical = json.dumps({k: entry[k] for k in _FIELDS}, sort_keys=True, separators=(",", ":"))
    return sha256_hex(canonical.encode())


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    first_bad: int | None = None  # 1-based line number of the first bad entry
    reason: str = ""


class AuditLog:
    """Append-only audit log at `path` (with `path`.head)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + ".head")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _head(self) -> tuple[int, str]:
        if not self.head_path.exists():
            if self.path.exists() and self.path.stat().st_size > 0:
                raise AuditError(f"audit log {self.path}: its head file is missing")
            return 0, GENESIS
        head = json.loads(self.head_path.read_text())
        return int(head["seq"]), str(head["hash"])

    def append(self, kind: str, **data: Any) -> dict[str, Any]:
        """Append one entry and return it. The entry is on disk when this returns."""
        with self._locked():
            seq, prev = self._head()
            entry: dict[str, Any] = {
                "seq": seq + 1,
                "at": datetime.now(UTC).isoformat(timespec="microseconds"),
                "kind": kind,
                "data": data,
                "prev": prev,
            }
            entry["hash"] = _entry_hash(entry)
            line = _line(entry)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            tmp = self.head_path.with_name(self.head_path.name + ".tmp")
            with open(tmp, "w") as fh:
                json.dump({"seq": entry["seq"], "hash": entry["hash"]}, fh)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(self.head_path)
            return entry

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines()]

    def verify(self) -> Verification:
        """Check every entry and the head; name the first bad entry."""
        if not self.path.exists():
            if self.head_path.exists():
                return Verification(False, 0, 1, "the log is missing but its head file exists")
            return Verification(True, 0)
        try:
            raw = self.path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = raw_line_of(self.path.read_bytes(), exc.start)
            return Verification(False, bad - 1, bad, "entry is not valid UTF-8 text")
        if raw and not raw.endswith("\n"):
            lines = raw.split("\n")
            return Verification(False, len(lines) - 1, len(lines), "the last entry is incomplete")
        prev, count = GENESIS, 0
        for number, line in enumerate(raw.splitlines(), start=1):
            try:
                entry = json.loads(line)
                fields_ok = isinstance(entry, dict) and set(entry) == {*_FIELDS, "hash"}
            except json.JSONDecodeError:
                fields_ok = False
            if not fields_ok:
                return Verification(False, count, number, "entry is not a well-formed record")
            if line != _line(entry):  # e.g. 1e-05 -> 1E-05: same value, different bytes
                return Verification(False, count, number, "entry is not as it was written")
            if entry["seq"] != number:
                return Verification(
                    False, count, number, f"sequence {entry['seq']!r} where {number} belongs"
                )
            if entry["prev"] != prev:
                return Verification(
                    False, count, number, "its link to the previous entry is broken"
                )
            if _entry_hash(entry) != entry["hash"]:
                return Verification(False, count, number, "its content does not match its hash")
            prev, count = entry["hash"], number
        try:
            head_seq, head_hash = self._head()
        except (AuditError, ValueError, KeyError, TypeError):
            return Verification(False, count, count + 1, "the head file is missing or unreadable")
        if head_seq != count or head_hash != prev:
            if head_seq > count:
                return Verification(
                    False, count, count + 1, f"entries {count + 1}..{head_seq} were deleted"
                )
            return Verification(False, count, count, "the head file does not match the last entry")
        return Verification(True, count)


def _line(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), allow_nan=False)


def raw_line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1
