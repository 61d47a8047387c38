"""Ingestion of a school export (format v1, client_node/export_format.py) into the node's store.

    validate every row  ->  minimize (the policy's allow-list)  ->  drop direct identifiers
    ->  pseudonymize ids (HMAC under the school's secret)  ->  store, all or nothing

An export needs a roster (`roster.csv`, or OneRoster `users.csv` + `orgs.csv` +
`enrollments.csv`); without one it is refused and the store is not touched. A file the policy
does not allow, or with a required column missing, is refused as a whole and reported. A row
that breaks a rule goes to `NODE_DIR/quarantine/<export_id>/<file>` as (file, line, column,
reason), never with its values; a row repeating an earlier row's key is a duplicate (the first
is kept). Everything is written in one transaction: a failure leaves the store as it was, and
an export already ingested adds nothing.

Validation is vectorized: each column is factorized and only its distinct values are checked
and pseudonymized, so a million-row file costs a few passes over arrays, not a Python loop per
row.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import shutil
import warnings
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from cryptography.hazmat.primitives import hashes
from sqlalchemy import Connection

from client_node import export_format as ef
from client_node.errors import NodeError
from client_node.node import SchoolNode
from client_node.pseudonym import Kind, Pseudonymizer
from client_node.store import COMPACT, Coded, Store
from policies.categories import FIELDS
from policies.schema import Policy

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]

QUARANTINE_DIR = "quarantine"
QUARANTINE_COLUMNS = ("file", "line", "column", "reason")
ONEROSTER_ROLES_FILE = "roles.csv"
GUARDIAN_ROLES = frozenset({"parent", "guardian"})
# OneRoster grade codes (CEDS) -> the roster's grade_level (-1 pre-K, 0 K, 1-12)
ONEROSTER_GRADES = {"PK": -1, "PR": -1, "PS": -1, "TK": 0, "KG": 0} | {
    f"{g:02d}": g for g in range(1, 13)
}
# raw id column -> (pseudonym kind, store column)
PSEUDONYMIZED: dict[str, tuple[Kind, str]] = {
    "family_id": ("family", "family_pid"),
    "student_id": ("student", "student_pid"),
    "message_id": ("message", "message_pid"),
}
_INSERT_CHUNK = 50_000
_BOM = b"\xef\xbb\xbf"
_LINE_STARTS_BLANK = re.compile(rb"\n[\n\r \t]")  # maybe a blank line: count them exactly
_LONE_CR = re.compile(rb"\r[^\n]")
_ONLY_BLANK = re.compile(rb"[\xef\xbb\xbf \t\r\n]*")
_FILES = (ef.ROSTER, ef.ONEROSTER_USERS, *ef.SOURCES)

# Reasons (a quarantine entry never holds the value that broke the rule).
MISSING = "a value is required"
NOT_IN_ROSTER = "not in the roster"
NOT_IN_EVENTS = "not an event in events.csv or already stored"
NOT_A_USER = "names a user not in users.csv"
_TYPE_REASONS = {
    "id": "not an id (1-64 letters, digits, _ . : -; starting with a letter or digit)",
    "date": "not a date (YYYY-MM-DD)",
    "time": "not a time (HH:MM)",
    "datetime": "not a date-time (YYYY-MM-DDTHH:MM, optionally :SS and an offset)",
    "bool": "not yes/no (yes, no, true, false, 1, 0)",
    "int": "not a whole number",
    "number": "not a number",
}
_PATTERNS = {k: re.compile(v, re.ASCII) for k, v in ef._PATTERNS.items()}


# --- the summary ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FileReport:
    """What became of one file's rows. `accepted` = valid and not a duplicate; `added` = of
    those, the rows the store did not hold yet (an overlapping earlier export may have)."""

    file: str
    rows: int
    accepted: int
    quarantined: int
    duplicates: int
    added: int
    ignored_columns: tuple[str, ...] = ()
    not_stored: tuple[str, ...] = ()  # identifying or not allowed by the policy

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "added": self.added,
            "ignored_columns": list(self.ignored_columns),
            "not_stored": list(self.not_stored),
        }


@dataclass(frozen=True)
class IngestSummary:
    export_id: str
    already_ingested: bool = False
    files: dict[str, FileReport] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # file -> reason
    ignored_files: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    quarantine_dir: Path | None = None

    @property
    def quarantined(self) -> int:
        return sum(r.quarantined for r in self.files.values())

    def as_dict(self) -> dict[str, Any]:
        """Counts, file names and reasons only: what the exports table and the log keep."""
        return {
            "export_id": self.export_id,
            "already_ingested": self.already_ingested,
            "files": {name: r.as_dict() for name, r in self.files.items()},
            "refused": dict(self.refused),
            "ignored_files": list(self.ignored_files),
            "notes": list(self.notes),
        }

    def render(self) -> str:
        """A short plain-text table for the operator."""
        head = f"export {self.export_id[:16]}"
        if self.already_ingested:
            return f"{head}: already ingested; nothing added"
        rows: list[tuple[str, ...]] = [
            ("file", "rows", "accepted", "quarantined", "duplicates", "added")
        ]
        for r in self.files.values():
            rows.append(
                (r.file, *map(str, (r.rows, r.accepted, r.quarantined, r.duplicates, r.added)))
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [head]
        for row in rows:
            cells = [row[0].ljust(widths[0])] + [
                c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
            ]
            lines.append("  ".join(cells).rstrip())
        for r in self.files.values():
            if r.ignored_columns:
                lines.append(f"{r.file}: ignored columns: {', '.join(r.ignored_columns)}")
        for name, reason in self.refused.items():
            lines.append(f"refused {name}: {reason}")
        if self.ignored_files:
            lines.append(f"ignored files: {', '.join(self.ignored_files)}")
        lines.extend(self.notes)
        if self.quarantine_dir is not None:
            lines.append(f"quarantined rows ({self.quarantined}): {self.quarantine_dir}")
        return "\n".join(lines)


# --- reading CSV ---------------------------------------------------------------------------


class _FileRefused(Exception):
    """A whole file cannot be used; `column` names the header cell at fault, if any."""

    def __init__(
        self,
        reason: str,
        *,
        column: str | None = None,
        file: str | None = None,
        by_policy: bool = False,
    ):
        super().__init__(reason)
        self.reason = reason
        self.column = column
        self.file = file
        self.by_policy = by_policy  # the policy does not allow it: skip the file, keep the rest


@dataclass
class _Parsed:
    """A CSV file as columns of strings, with the source line of every record."""

    file: str
    header: list[str]
    cells: dict[str, np.ndarray]  # column -> object array of str, one per record
    lines: np.ndarray  # 1-based source line of each record (the header is line 1)
    shape_errors: list[tuple[int, str]]  # (line, reason) of records with a wrong cell count
    # column -> (codes, distinct strings): columns the reader factorized instead (not in cells)
    coded: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def column(self, name: str) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """A kept column: its strings, or (codes, distinct strings) if the reader coded it."""
        return self.coded[name] if name in self.coded else self.cells[name]

    @property
    def n(self) -> int:
        return len(self.lines)

    @property
    def rows(self) -> int:
        return self.n + len(self.shape_errors)


def _parse(file: str, data: bytes, *, keep: Callable[[str], bool], coded: bool = False) -> _Parsed:
    """Parse one CSV export file. `keep(column)` says which columns to keep in memory (direct
    identifiers are never kept). The fast path (no quotes: every line is a record) uses
    Arrow's multi-threaded reader with `coded` (each kept column comes back factorized, in
    `_Parsed.coded`), else pandas' C reader, and checks cell counts on the bytes; anything else
    goes through the csv module, which knows quoting and multi-line cells."""
    if _ONLY_BLANK.fullmatch(data):  # (stops at the first other byte: no copy of the file)
        raise _FileRefused("the file is empty (no header row)")
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise _FileRefused(f"not UTF-8 text (line {line})") from None
    if b'"' not in data:
        parsed = _parse_fast(file, data, keep, coded=coded)
        if parsed is not None:
            return parsed
    return _parse_csv_module(file, data, keep)


def _header_of(cells: Sequence[str]) -> list[str]:
    header = list(cells)
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise _FileRefused(f"column {name!r} appears twice in the header", column=name)
        seen.add(name)
    if any(name == "" for name in header):
        raise _FileRefused("the header has an empty column name")
    return header


def _parse_fast(
    file: str, data: bytes, keep: Callable[[str], bool], *, coded: bool = False
) -> _Parsed | None:
    """pandas' C reader (or with `coded` Arrow's, see `_parse_arrow`) for a file without
    quotes (every line is a record); None when the file needs the csv module.

    The C reader fills a short row with empty cells and lets the first row carry one extra
    empty cell, so the cell counts are checked on the bytes: the first row here, every later
    row by the reader (it refuses a row with too many cells), and then all commas must add up
    to exactly (cells - 1) per line, so no row is short either.
    """
    body = data[len(_BOM) :] if data.startswith(_BOM) else data
    first = _first_lines(body, 2)
    if not first or b"\r" in first[0].rstrip(b"\r"):
        return None  # no header, or old Mac line ends: the csv module reads those
    header = _header_of(first[0].rstrip(b"\r").decode().split(","))
    width = len(header)
    if len(first) > 1 and first[1].count(b",") != width - 1:
        return None
    if coded:
        parsed = _parse_arrow(file, body, header, keep)
        if parsed is not None:
            return parsed
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                io.BytesIO(data),
                dtype=object,
                na_filter=False,
                encoding="utf-8-sig",
                index_col=False,
                skip_blank_lines=True,
                engine="c",
            )
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError):
        return None
    n = len(frame)
    if list(frame.columns) != header or body.count(b",") != (width - 1) * (n + 1):
        return None
    lines = _record_lines(body, n)
    if lines is None:
        return None
    cells = {c: frame[c].to_numpy(dtype=object) for c in header if keep(c)}
    return _Parsed(file, header, cells, lines, [])


def _parse_arrow(
    file: str, body: bytes, header: list[str], keep: Callable[[str], bool]
) -> _Parsed | None:
    """Arrow's CSV reader (multi-threaded) on a file without quotes and BOM, every kept column
    read straight into codes + distinct strings (no string per cell is ever made); None when
    the file needs another reader. Arrow refuses a row with too few or too many cells and
    skips empty lines; the same byte checks as for pandas make sure it read every line."""
    width = len(header)
    kept = [name for name in header if keep(name)]
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(body),
            read_options=pa_csv.ReadOptions(use_threads=True),
            parse_options=pa_csv.ParseOptions(
                quote_char=False, double_quote=False, escape_char=False, ignore_empty_lines=True
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.dictionary(pa.int32(), pa.string()) for name in kept},
                include_columns=kept,
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None  # its message quotes the row: never pass it on
    n = table.num_rows
    if body.count(b",") != (width - 1) * (n + 1):
        return None
    lines = _record_lines(body, n)
    if lines is None:
        return None
    coded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in kept:
        column = table.column(name).unify_dictionaries()
        if column.num_chunks == 0:
            codes = np.zeros(0, dtype=np.int32)
            uniques = np.zeros(0, dtype=object)
        else:
            codes = np.concatenate(
                [chunk.indices.to_numpy(zero_copy_only=False) for chunk in column.chunks]
            )
            uniques = np.asarray(
                column.chunk(0).dictionary.to_numpy(zero_copy_only=False), dtype=object
            )
        coded[name] = (codes, uniques)
    return _Parsed(file, header, {}, lines, [], coded)


def _first_lines(body: bytes, count: int) -> list[bytes]:
    """The first `count` lines that are not blank (split at LF)."""
    found: list[bytes] = []
    start = 0
    while len(found) < count and start < len(body):
        stop = body.find(b"\n", start)
        stop = len(body) if stop < 0 else stop
        line = body[start:stop]
        if line.strip(b" \t\r"):
            found.append(line)
        start = stop + 1
    return found


def _record_lines(body: bytes, n: int) -> np.ndarray | None:
    """The 1-based line of each of the `n` records pandas read (blank lines are skipped)."""
    simple = (
        not body[:1].isspace()
        and not _LINE_STARTS_BLANK.search(body)
        and (b"\r" not in body or not (_LONE_CR.search(body) or body.endswith(b"\r")))
    )
    if simple:
        breaks = body.count(b"\n")
        if breaks == n + 1 or (breaks == n and not body.endswith(b"\n")):
            return np.arange(2, n + 2, dtype=np.int64)
    # blank or whitespace-only lines somewhere: find the lines with content
    raw = np.frombuffer(body, dtype=np.uint8)
    is_break = raw == 10
    if b"\r" in body:  # a CR not followed by LF ends a line too
        lone_cr = raw == 13
        lone_cr[:-1] &= ~is_break[1:]
        is_break |= lone_cr
    starts = np.concatenate(([0], np.flatnonzero(is_break) + 1))
    if starts[-1] == len(raw):
        starts = starts[:-1]
    filled = ~((raw == 32) | (raw == 9) | (raw == 13) | is_break)
    content = np.add.reduceat(filled.view(np.uint8), starts, dtype=np.int64)
    lines = np.flatnonzero(content > 0)
    if len(lines) != n + 1:
        return None
    return lines[1:].astype(np.int64) + 1


def _parse_csv_module(file: str, data: bytes, keep: Callable[[str], bool]) -> _Parsed:
    text = data.decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""), strict=False)
    header: list[str] | None = None
    records: list[list[str]] = []
    lines: list[int] = []
    shape_errors: list[tuple[int, str]] = []
    previous = 0
    try:
        for record in reader:
            line, previous = previous + 1, reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # a blank line
            if header is None:
                header = _header_of(record)
                continue
            if len(record) != len(header):
                shape_errors.append(
                    (line, f"the row has {len(record)} cells; the header has {len(header)}")
                )
                continue
            records.append(record)
            lines.append(line)
    except csv.Error as exc:
        raise _FileRefused(f"not readable as CSV at line {reader.line_num} ({exc})") from None
    if header is None:
        raise _FileRefused("the file is empty (no header row)")
    matrix = np.empty((len(records), len(header)), dtype=object)
    if records:
        matrix[:] = records
    cells = {name: matrix[:, i].copy() for i, name in enumerate(header) if keep(name)}
    return _Parsed(file, header, cells, np.asarray(lines, dtype=np.int64), shape_errors)


# --- validating columns --------------------------------------------------------------------


class _Reasons:
    """Reason texts numbered per file (0 = no problem)."""

    def __init__(self) -> None:
        self.texts = [""]
        self._codes: dict[str, int] = {"": 0}

    def code(self, text: str | None) -> int:
        if not text:
            return 0
        if text not in self._codes:
            self._codes[text] = len(self.texts)
            self.texts.append(text)
        return self._codes[text]


@dataclass
class _Checked:
    """One column checked: per distinct value its stored value and reason code."""

    codes: np.ndarray  # record -> index of its distinct value
    uniques: np.ndarray  # the distinct raw strings
    values: np.ndarray  # distinct value -> the value to store (None: empty or invalid)
    reason: np.ndarray  # distinct value -> reason code (0: valid)

    def row_reason(self) -> np.ndarray:
        return self.reason[self.codes]

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return self.values[self.codes[idx]]


def _convert(column: ef.Column, text: str) -> tuple[object, str | None]:
    """(value to store, reason it is invalid or None) for one distinct cell text."""
    if text == "":
        return None, MISSING if column.required else None
    kind = column.type
    if kind == "text":
        return text, None
    if kind == "enum":
        if text in column.values:
            return text, None
        return None, f"not one of {', '.join(column.values)}"
    if not _PATTERNS[kind].fullmatch(text):
        return None, _TYPE_REASONS[kind]
    value: object = text
    try:
        if kind == "date":
            date.fromisoformat(text)
        elif kind == "datetime":
            datetime.fromisoformat(text)
        elif kind == "bool":
            value = text in ("yes", "true", "1")
        elif kind == "int":
            value = int(text)
        elif kind == "number":
            value = float(text)
    except ValueError:
        return None, _TYPE_REASONS[kind]
    if isinstance(value, int | float) and not isinstance(value, bool):
        if column.minimum is not None and value < column.minimum:
            return None, f"below the minimum {column.minimum:g}"
        if column.maximum is not None and value > column.maximum:
            return None, f"above the maximum {column.maximum:g}"
    return value, None


def _check(
    column: ef.Column,
    cells: np.ndarray | tuple[np.ndarray, np.ndarray],
    reasons: _Reasons,
    *,
    known: Container[str] | None = None,
    unknown_reason: str = "",
) -> _Checked:
    """Check every cell of a column, once per distinct value; `known`: the values a link
    allows (an id that must exist in the roster or events.csv). `cells`: the strings, or
    (codes, distinct strings) when the reader factorized them already."""
    if isinstance(cells, tuple):
        codes, uniques = cells
    else:
        codes, uniques = pd.factorize(cells)
    uniques = np.asarray(uniques, dtype=object)
    results = [_convert(column, text) for text in uniques.tolist()]
    if known is not None:
        results = [
            (None, unknown_reason) if why is None and value is not None and text not in known
            else (value, why)
            for text, (value, why) in zip(uniques.tolist(), results, strict=True)
        ]  # fmt: skip
    values = np.empty(len(uniques), dtype=object)
    values[:] = [value for value, _ in results]
    reason = np.array([reasons.code(why) for _, why in results], dtype=np.int32)
    codes = np.asarray(codes)
    if codes.dtype.kind not in "iu":
        codes = codes.astype(np.int64)
    return _Checked(codes, uniques, values, reason)


# --- the quarantine ------------------------------------------------------------------------


class _Quarantine:
    """Quarantine entries per file: (line, column, reason); never the cell values."""

    def __init__(self) -> None:
        self.entries: dict[str, list[tuple[np.ndarray, str, np.ndarray]]] = {}

    def add(self, file: str, lines: np.ndarray, column: str, reasons: np.ndarray) -> None:
        if len(lines):
            self.entries.setdefault(file, []).append((lines, column, reasons))

    def add_one(self, file: str, line: int, column: str, reason: str) -> None:
        self.add(file, np.array([line]), column, np.array([reason], dtype=object))

    def frame(self, file: str, column_order: Sequence[str]) -> pd.DataFrame:
        parts = self.entries.get(file, [])
        order = {name: i for i, name in enumerate(["", *column_order])}
        frame = pd.DataFrame(
            {
                "file": file,
                "line": np.concatenate([p[0] for p in parts]).astype(np.int64),
                "column": np.concatenate([np.full(len(p[0]), p[1], dtype=object) for p in parts]),
                "reason": np.concatenate([p[2] for p in parts]).astype(object),
            }
        )
        rank = frame["column"].map(lambda c: order.get(c, len(order)))
        return (
            frame.assign(_rank=rank)
            .sort_values(["line", "_rank"], kind="stable")
            .drop(columns="_rank")
            .reset_index(drop=True)
        )

    def write(self, folder: Path) -> None:
        """One CSV per file, written aside and then moved into place."""
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        columns = {f.name: [c.name for c in f.columns] for f in _FILES}
        for file in self.entries:
            self.frame(file, columns.get(file, ())).to_csv(tmp / file, index=False)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)


# --- the roster ----------------------------------------------------------------------------


@dataclass
class _Roster:
    files: list[str]
    students: dict[str, str]  # raw student id -> raw family id
    grade_level: dict[str, int | None]
    families: set[str]
    reports: dict[str, FileReport]
    notes: list[str]


def _keep(source: ef.SourceFile) -> Callable[[str], bool]:
    identifying = {c.name for c in source.columns if c.identifying}
    return lambda name: name not in identifying


def _header_issues(
    source: ef.SourceFile, parsed: _Parsed, needed: Iterable[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(ignored columns, identifying columns present); refuses a file missing a needed one."""
    known = {c.name for c in source.columns}
    for name in needed:
        if name not in parsed.header:
            raise _FileRefused(f"the required column {name!r} is missing", column=name)
    ignored = tuple(c for c in parsed.header if c not in known)
    identifying = tuple(c.name for c in source.columns if c.identifying and c.name in parsed.header)
    return ignored, identifying


def _bad_rows(
    file: str, parsed: _Parsed, checked: dict[str, _Checked], reasons: _Reasons, q: _Quarantine
) -> np.ndarray:
    """Quarantine every broken cell (and malformed row); a mask of the valid records."""
    ok = np.ones(parsed.n, dtype=bool)
    for name, result in checked.items():
        if not result.reason.any():
            continue  # every distinct value of the column is valid: no record breaks here
        row_reason = result.row_reason()
        bad = np.flatnonzero(row_reason)
        if len(bad):
            ok[bad] = False
            texts = np.asarray(reasons.texts, dtype=object)[row_reason[bad]]
            q.add(file, parsed.lines[bad], name, texts)
    if parsed.shape_errors:
        q.add(
            file,
            np.array([line for line, _ in parsed.shape_errors]),
            "",
            np.array([why for _, why in parsed.shape_errors], dtype=object),
        )
    return ok


def _first_of_each_key(
    keys: Sequence[np.ndarray], good: np.ndarray, *, in_key_order: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Among the valid records `good` (ascending), the first of each key, in key order
    (the store's b-tree order: inserting in it is several times faster); and the duplicates.
    `keys`: per key column, each record's rank (0 <= rank < number of distinct values).
    `in_key_order=False`: both in file order, found by hashing instead of sorting (for a compact
    table, which sorts by its own integer key)."""
    if len(good) == 0:
        return good, good
    every = len(keys) > 0 and len(good) == len(keys[0])  # all records are valid
    sort_keys = [k if every else k[good] for k in keys]
    sizes = [int(k.max()) + 1 for k in sort_keys]
    if float(np.prod(sizes, dtype=np.float64)) < 2.0**62:  # one int64 key, one stable sort
        combined = np.zeros(len(good), dtype=np.int64)
        for k, size in zip(sort_keys, sizes, strict=True):
            combined = combined * size + k
        if not in_key_order:
            repeat = pd.Series(combined).duplicated(keep="first").to_numpy()
            return good[~repeat], good[repeat]
        order = np.argsort(combined, kind="stable")
        ordered = combined[order]
        repeat = np.concatenate(([False], ordered[1:] == ordered[:-1]))
    else:
        order = np.lexsort((good, *reversed(sort_keys)))
        repeat = np.ones(len(good), dtype=bool)
        repeat[0] = False
        for k in sort_keys:
            ordered = k[order]
            repeat[1:] &= ordered[1:] == ordered[:-1]
    return good[order[~repeat]], good[order[repeat]]


def _ranks(values: np.ndarray) -> np.ndarray:
    """Per distinct value, its rank among the stored values in sort order (equal values share
    a rank; None, an invalid value, sorts first)."""
    keyed = np.array(["" if v is None else str(v) for v in values.tolist()], dtype=object)
    if len(keyed) == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse = np.unique(keyed, return_inverse=True)
    return np.asarray(inverse, dtype=np.int64).reshape(-1)


def _read_simple_roster(
    data: bytes, reasons: _Reasons, q: _Quarantine, progress: Progress | None
) -> _Roster:
    source = ef.ROSTER
    parsed = _parse(source.name, data, keep=_keep(source))
    needed = [c.name for c in source.columns if c.required]
    ignored, identifying = _header_issues(source, parsed, needed)
    if progress:
        progress(source.name, 0, parsed.rows)
    checked = {
        name: _check(source.column(name), parsed.cells[name], reasons)
        for name in ("student_id", "family_id", "grade_level")
    }
    ok = _bad_rows(source.name, parsed, checked, reasons, q)
    student = checked["student_id"]
    keep, dups = _first_of_each_key([student.codes], np.flatnonzero(ok))
    keep = np.sort(keep)
    students = dict(
        zip(student.rows(keep).tolist(), checked["family_id"].rows(keep).tolist(), strict=True)
    )
    grade_level = dict(
        zip(student.rows(keep).tolist(), checked["grade_level"].rows(keep).tolist(), strict=True)
    )
    not_stored = identifying + tuple(
        c for c in ("preferred_language",) if c in parsed.header
    )  # fmt: skip
    report = FileReport(
        source.name,
        parsed.rows,
        len(keep),
        parsed.rows - int(ok.sum()),
        len(dups),
        0,
        ignored,
        not_stored,
    )
    if progress:
        progress(source.name, parsed.rows, parsed.rows)
    return _Roster(
        [source.name],
        students,
        grade_level,
        set(students.values()),
        {source.name: report},
        [],
    )


def _oneroster_roles(data: bytes | None, reasons: _Reasons, q: _Quarantine) -> dict[str, str]:
    """OneRoster 1.2 roles.csv: user -> role (a primary role wins over others)."""
    if data is None:
        return {}
    try:
        parsed = _parse(ONEROSTER_ROLES_FILE, data, keep=lambda name: True)
    except _FileRefused as exc:
        raise _FileRefused(exc.reason, file=ONEROSTER_ROLES_FILE) from None
    for name in ("userSourcedId", "role"):
        if name not in parsed.header:
            raise _FileRefused(
                f"the required column {name!r} is missing", column=name, file=ONEROSTER_ROLES_FILE
            )
    users = _check(ef.Column("userSourcedId", "id"), parsed.cells["userSourcedId"], reasons)
    roles = _check(ef.ONEROSTER_USERS.column("role"), parsed.cells["role"], reasons)
    ok = _bad_rows(
        ONEROSTER_ROLES_FILE, parsed, {"userSourcedId": users, "role": roles}, reasons, q
    )
    primary = parsed.cells.get("roleType", np.full(parsed.n, "", dtype=object)) == "primary"
    found: dict[str, str] = {}
    for i in np.flatnonzero(ok & ~primary).tolist() + np.flatnonzero(ok & primary).tolist():
        found[users.values[users.codes[i]]] = roles.values[roles.codes[i]]
    return found


def _read_oneroster(
    data: dict[str, bytes], reasons: _Reasons, q: _Quarantine, progress: Progress | None
) -> _Roster:
    source = ef.ONEROSTER_USERS
    parsed = _parse(source.name, data[source.name], keep=_keep(source))
    roles_from_file = _oneroster_roles(data.get(ONEROSTER_ROLES_FILE), reasons, q)
    needed = ["sourcedId"] + ([] if roles_from_file else ["role"])
    ignored, identifying = _header_issues(source, parsed, needed)
    if progress:
        progress(source.name, 0, parsed.rows)
    ids = _check(source.column("sourcedId"), parsed.cells["sourcedId"], reasons)
    checked = {"sourcedId": ids}
    if "role" in parsed.header:
        checked["role"] = _check(source.column("role"), parsed.cells["role"], reasons)
    # agentSourcedIds: a comma-separated list of ids of users in this file
    all_ids = set(v for v in ids.values.tolist() if v is not None)
    agents_text = parsed.cells.get("agentSourcedIds", np.full(parsed.n, "", dtype=object))
    agent_codes, agent_uniques = pd.factorize(agents_text)
    agent_lists: list[list[str]] = []
    agent_reason = np.zeros(len(agent_uniques), dtype=np.int32)
    for i, text in enumerate(np.asarray(agent_uniques, dtype=object).tolist()):
        items = [s.strip() for s in text.split(",")] if text.strip() else []
        if not all(_PATTERNS["id"].fullmatch(s) for s in items):
            agent_reason[i] = reasons.code("not a comma-separated list of ids")
            items = []
        elif not all(s in all_ids for s in items):
            agent_reason[i] = reasons.code(NOT_A_USER)
            items = []
        agent_lists.append(items)
    agent_values = np.empty(len(agent_lists), dtype=object)
    for i, items in enumerate(agent_lists):
        agent_values[i] = items
    agents = _Checked(
        np.asarray(agent_codes, dtype=np.int64),
        np.asarray(agent_uniques, dtype=object),
        agent_values,
        agent_reason,
    )
    checked["agentSourcedIds"] = agents
    ok = _bad_rows(source.name, parsed, checked, reasons, q)
    role_of_row = (
        checked["role"].rows(np.arange(parsed.n))
        if "role" in checked
        else np.array([roles_from_file.get(u) for u in ids.rows(np.arange(parsed.n))], object)
    )
    no_role = ok & np.array([r is None for r in role_of_row.tolist()], dtype=bool)
    if no_role.any():
        q.add(
            source.name,
            parsed.lines[no_role],
            "role",
            np.full(int(no_role.sum()), "the user has no role in roles.csv", dtype=object),
        )
        ok &= ~no_role
    keep, dups = _first_of_each_key([ids.codes], np.flatnonzero(ok))
    keep = np.sort(keep)
    user_ids = ids.rows(keep).tolist()
    role = dict(zip(user_ids, role_of_row[keep].tolist(), strict=True))
    linked = dict(zip(user_ids, agents.rows(keep).tolist(), strict=True))
    grades_text = parsed.cells.get("grades", np.full(parsed.n, "", dtype=object))[keep].tolist()

    # families: connected groups of students and the guardians linked to them
    parent = {u: u for u, r in role.items() if r == "student" or r in GUARDIAN_ROLES}

    def root(u: str) -> str:
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    for u, others in linked.items():
        for v in others:
            if u in parent and v in parent and (role[u] == "student") != (role[v] == "student"):
                a, b = root(u), root(v)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    members: dict[str, list[str]] = {}
    for u in parent:
        members.setdefault(root(u), []).append(u)
    students: dict[str, str] = {}
    for group in members.values():
        guardians = [u for u in group if role[u] in GUARDIAN_ROLES]
        kids = [u for u in group if role[u] == "student"]
        for kid in kids:
            students[kid] = min(guardians) if guardians else kid
    grade_level: dict[str, int | None] = {}
    unknown_grades = 0
    for u, text in zip(user_ids, grades_text, strict=True):
        if u in students:
            code = text.split(",")[0].strip() if text else ""
            grade_level[u] = ONEROSTER_GRADES.get(code)
            unknown_grades += grade_level[u] is None
    notes = []
    if unknown_grades:
        notes.append(
            f"users.csv: {unknown_grades} students have no grade PK, KG or 01-12; "
            "their grade_level is left empty"
        )
    report = FileReport(
        source.name,
        parsed.rows,
        len(keep),
        parsed.rows - int(ok.sum()),
        len(dups),
        0,
        ignored,
        identifying,
    )
    if progress:
        progress(source.name, parsed.rows, parsed.rows)
    files = [*ef.ONEROSTER_FILES] + ([ONEROSTER_ROLES_FILE] if ONEROSTER_ROLES_FILE in data else [])
    notes.append(
        "OneRoster: "
        + ", ".join(f for f in files if f != source.name)
        + " read for the roster, not stored"
    )
    return _Roster(
        files, students, grade_level, set(students.values()), {source.name: report}, notes
    )


# --- the sources ---------------------------------------------------------------------------


@dataclass
class _Context:
    conn: Connection
    store: Store
    policy: Policy
    pseudonym: Pseudonymizer
    roster: _Roster
    export_id: str
    today: date
    reasons: _Reasons
    quarantine: _Quarantine
    progress: Progress | None


def _allowed_columns(source: ef.SourceFile, policy: Policy) -> tuple[set[str], str | None]:
    """(columns the policy lets the node store, reason the file is refused or None)."""
    category = source.category
    assert category is not None
    rule = policy.categories.get(category)  # type: ignore[call-overload]
    if rule is None or not rule.enabled:
        return set(), f"the policy does not enable the category {category}"
    if category == "wearables" and rule.consent != "explicit":
        return set(), "wearables need explicit consent (consent: explicit) in the policy"
    fields = FIELDS[category]
    allowed = {
        c.name
        for c in source.columns
        if not c.identifying and (c.name not in fields or c.name in rule.fields)
    }
    for name in source.key:
        if name not in allowed:
            return set(), f"the policy does not allow {name}, part of the file's key"
    if source is ef.EVENT_ATTENDANCE and "attended" not in rule.fields:
        return set(), f"the policy does not allow attended in {category}"
    return allowed, None


def _ingest_source(ctx: _Context, source: ef.SourceFile, data: bytes) -> FileReport:
    file = source.name
    allowed, refusal = _allowed_columns(source, ctx.policy)
    if refusal:
        raise _FileRefused(refusal, by_policy=True)
    parsed = _parse(file, data, keep=lambda name: name in allowed, coded=True)
    needed = [c.name for c in source.columns if c.name in allowed and c.required]
    ignored, identifying = _header_issues(source, parsed, needed)
    not_stored = identifying + tuple(
        c.name
        for c in source.columns
        if c.name in parsed.header and c.name not in allowed and not c.identifying
    )
    total = parsed.rows
    if ctx.progress:
        ctx.progress(file, 0, total)

    event_dates: dict[str, str] = {}
    if source is ef.EVENT_ATTENDANCE:
        event_dates = ctx.store.event_dates(ctx.conn)  # this export's events are in by now
    checked: dict[str, _Checked] = {}
    for column in source.columns:
        if column.name not in allowed or column.name not in parsed.header:
            continue
        link = source.links.get(column.name)
        known: set[str] | dict[str, Any] | None = None
        why = ""
        if link == "roster":
            known = ctx.roster.families if column.name == "family_id" else ctx.roster.students
            why = NOT_IN_ROSTER
        elif link == "events.csv":
            known, why = event_dates, NOT_IN_EVENTS
        checked[column.name] = _check(
            column, parsed.column(column.name), ctx.reasons, known=known, unknown_reason=why
        )
    ok = _bad_rows(file, parsed, checked, ctx.reasons, ctx.quarantine)

    # stored values per distinct value: pseudonyms for ids
    stored: dict[str, np.ndarray] = {}
    for name, result in checked.items():
        if name in PSEUDONYMIZED:
            kind, _ = PSEUDONYMIZED[name]
            valid = [v for v in result.values.tolist() if v is not None]
            pids = dict(zip(valid, ctx.pseudonym.many(kind, valid), strict=True))
            stored[name] = np.array([pids.get(v) for v in result.values.tolist()], dtype=object)
        elif source is ef.ATTENDANCE and name == "period":  # '' for daily attendance
            stored[name] = np.array(
                ["" if v is None else v for v in result.values.tolist()], object
            )
        else:
            stored[name] = result.values
    keys = []
    for name in source.key:
        if name in checked:
            keys.append(_ranks(stored[name])[checked[name].codes])
        else:  # an optional key column absent from the file (attendance period)
            keys.append(np.zeros(parsed.n, dtype=np.int64))
    table = file.removesuffix(".csv")
    rows, dups = _first_of_each_key(keys, np.flatnonzero(ok), in_key_order=table not in COMPACT)

    columns: dict[str, np.ndarray | Coded] = {}
    for name, result in checked.items():
        target = PSEUDONYMIZED[name][1] if name in PSEUDONYMIZED else name
        columns[target] = Coded(result.codes[rows], stored[name])
    constants: dict[str, object] = {"export_id": ctx.export_id}
    if source is ef.ATTENDANCE and "period" not in columns:
        constants["period"] = ""  # daily attendance
    record_date = _record_dates(source, checked, rows, columns, event_dates)
    if record_date is None:
        constants["record_date"] = ctx.today.isoformat()
    else:
        columns["record_date"] = record_date

    def step(done: int) -> None:
        if ctx.progress:
            ctx.progress(file, min(total, total - len(rows) + done), total)

    added = ctx.store.insert(
        ctx.conn, table, columns, constants=constants, chunk=_INSERT_CHUNK, progress=step
    )
    if ctx.progress:
        ctx.progress(file, total, total)
    return FileReport(
        file,
        total,
        len(rows),
        total - int(ok.sum()),
        len(dups),
        added,
        ignored,
        not_stored,
    )


def _record_dates(
    source: ef.SourceFile,
    checked: dict[str, _Checked],
    rows: np.ndarray,
    columns: dict[str, np.ndarray | Coded],
    event_dates: dict[str, str],
) -> np.ndarray | Coded | None:
    """The date each record is about (None: the ingestion date, for grades and for records
    whose date field the policy does not allow)."""
    if source is ef.EVENTS:
        return columns.get("event_date")
    if source is ef.EVENT_ATTENDANCE:
        events = checked["event_id"]
        dates = np.array([event_dates.get(e) for e in events.values.tolist()], dtype=object)
        return dates[events.codes[rows]]
    if source is ef.COMMUNICATIONS:
        if "sent_at" not in checked:
            return None
        sent = checked["sent_at"]
        days = np.array([None if v is None else v[:10] for v in sent.values.tolist()], object)
        return days[sent.codes[rows]]
    if "date" in columns:
        return columns["date"]  # the same array: bound once per row
    return None


# --- the export ----------------------------------------------------------------------------


def _export_files(export_dir: Path) -> tuple[dict[str, bytes], tuple[str, ...]]:
    """(file name -> bytes for every regular file, sub-folders)."""
    data: dict[str, bytes] = {}
    folders: list[str] = []
    for path in sorted(export_dir.iterdir(), key=lambda p: p.name):
        if path.is_file():
            data[path.name] = path.read_bytes()
        else:
            folders.append(path.name + "/")
    return data, tuple(folders)


def export_id_of(files: dict[str, bytes]) -> str:
    """SHA-256 over the export's file names and bytes (sorted by name)."""
    digest = hashes.Hash(hashes.SHA256())
    for name in sorted(files):
        encoded = name.encode()
        digest.update(len(encoded).to_bytes(8, "big") + encoded)
        digest.update(len(files[name]).to_bytes(8, "big"))
        digest.update(files[name])
    return digest.finalize().hex()


def _refuse(node: SchoolNode, reason: str) -> NodeError:
    node.audit.append("refusal", what="ingestion", reason=reason)
    return NodeError(reason)


def ingest_export(
    export_dir: Path,
    *,
    node_dir: Path,
    progress: Progress | None = None,
    today: date | None = None,
) -> IngestSummary:
    """Validate, minimize, pseudonymize and store one export, all or nothing.

    Raises NodeError (one line) when the export as a whole is refused (no roster, an unusable
    roster); the store is unchanged then. Refused files and quarantined rows do not refuse the
    export: they are in the summary (and the quarantine folder).
    """
    export_dir = Path(export_dir)
    node = SchoolNode(node_dir, today=today)  # verifies the signed policy; fails closed
    day = today or date.today()
    if not export_dir.is_dir():
        raise _refuse(node, f"export {export_dir}: not a folder")
    files, folders = _export_files(export_dir)
    simple = ef.ROSTER.name in files
    oneroster = ef.ONEROSTER_USERS.name in files
    if simple and oneroster:
        raise _refuse(
            node,
            f"export {export_dir}: both roster.csv and OneRoster users.csv are present; "
            "an export has one roster",
        )
    if not simple and not oneroster:
        raise _refuse(
            node,
            f"export {export_dir}: no roster (roster.csv, or OneRoster users.csv, orgs.csv "
            "and enrollments.csv); nothing was ingested",
        )
    if oneroster:
        missing = [f for f in ef.ONEROSTER_FILES if f not in files]
        if missing:
            raise _refuse(
                node,
                f"export {export_dir}: the OneRoster roster lacks {', '.join(missing)}; "
                "nothing was ingested",
            )
    export_id = export_id_of(files)
    store = Store.for_node(node.dir)
    try:
        if store.has_export(export_id):
            node.audit.append("ingestion", export_id=export_id, already_ingested=True)
            return IngestSummary(export_id, already_ingested=True)
        reasons, quarantine = _Reasons(), _Quarantine()
        roster_name = ef.ROSTER.name if simple else ef.ONEROSTER_USERS.name
        try:
            roster = (
                _read_simple_roster(files[roster_name], reasons, quarantine, progress)
                if simple
                else _read_oneroster(files, reasons, quarantine, progress)
            )
        except _FileRefused as exc:
            raise _refuse(
                node,
                f"export {export_dir}: {exc.file or roster_name}: {exc.reason}; "
                "nothing was ingested",
            ) from None
        try:
            summary = _store_export(
                store, node, files, folders, export_id, roster, reasons, quarantine, progress, day
            )
        except _FileRefused as exc:
            raise _refuse(
                node,
                f"export {export_dir}: {exc.file}: {exc.reason}; nothing was ingested (fix the "
                "file, or leave it out, and ingest the export again)",
            ) from None
    finally:
        store.close()
    return summary


def _store_roster(store: Store, conn: Connection, roster: _Roster, pseudonym: Pseudonymizer) -> int:
    """Families and students, pseudonymized; the number of students added."""
    families = sorted(roster.families)
    family_pid = dict(zip(families, pseudonym.many("family", families), strict=True))
    store.insert(conn, "families", {"family_pid": np.array(sorted(family_pid.values()), object)})
    students = sorted(roster.students)
    student_pids = np.array(pseudonym.many("student", students), dtype=object)
    order = np.argsort(student_pids)
    return store.insert(
        conn,
        "students",
        {
            "student_pid": student_pids[order],
            "family_pid": np.array([family_pid[roster.students[s]] for s in students], object)[
                order
            ],
            "grade_level": np.array([roster.grade_level.get(s) for s in students], object)[order],
        },
    )


def _store_export(
    store: Store,
    node: SchoolNode,
    files: dict[str, bytes],
    folders: tuple[str, ...],
    export_id: str,
    roster: _Roster,
    reasons: _Reasons,
    quarantine: _Quarantine,
    progress: Progress | None,
    day: date,
) -> IngestSummary:
    pseudonym = Pseudonymizer.for_node(node.dir)
    reports = dict(roster.reports)
    refused: dict[str, str] = {}
    source_names = {s.name for s in ef.SOURCES}
    ignored_files = (
        tuple(name for name in files if name not in source_names and name not in roster.files)
        + folders
    )
    with store.transaction() as conn:
        if store.has_export(export_id, conn=conn):  # another ingestion got in first
            return IngestSummary(export_id, already_ingested=True)
        added = _store_roster(store, conn, roster, pseudonym)
        roster_file = next(iter(roster.reports))
        reports[roster_file] = replace(reports[roster_file], added=added)
        ctx = _Context(
            conn, store, node.policy, pseudonym, roster, export_id, day, reasons, quarantine,
            progress,
        )  # fmt: skip
        for source in ef.SOURCES:
            if source.name not in files:
                continue
            try:
                reports[source.name] = _ingest_source(ctx, source, files[source.name])
            except _FileRefused as exc:
                if not exc.by_policy:  # a broken file: the whole export, or nothing (rollback)
                    exc.file = source.name
                    raise
                refused[source.name] = exc.reason
        folder = node.dir / QUARANTINE_DIR / export_id if quarantine.entries else None
        summary = IngestSummary(
            export_id,
            files=reports,
            refused=refused,
            ignored_files=ignored_files,
            notes=tuple(roster.notes),
            quarantine_dir=folder,
        )
        store.record_export(
            conn,
            export_id=export_id,
            ingested_at=datetime.now(UTC).isoformat(timespec="seconds"),
            summary=summary.as_dict(),
        )
    if folder is not None:
        quarantine.write(folder)
    node.audit.append(
        "ingestion",
        export_id=export_id,
        files={
            name: {"accepted": r.accepted, "quarantined": r.quarantined, "duplicates": r.duplicates}
            for name, r in reports.items()
        },
        refused=refused,
        policy_id=node.policy.policy_id,
        policy_version=node.policy.version,
    )
    log.info("export %s ingested: %s", export_id[:16], json.dumps(summary.as_dict()["files"]))
    return summary
