"""The node's local store: what ingestion keeps, in SQL tables, ids pseudonymized.

By default an embedded SQLite file, `NODE_DIR/store.sqlite`; any SQLAlchemy engine URL works
(`Store("postgresql+psycopg://...")` for a district that runs a database server). Only policy-
allowed fields are ever written; direct identifiers (names, e-mails, phones, addresses) and raw
ids never are.

Every record table has `record_date` (ISO date the record is about; for grades the date they
were ingested) for retention, and `export_id` (the export it came from, see `exports`).

High-volume record tables (`COMPACT`: platform activity, a row per family, day, platform and
feature) are stored compactly and read back with the same columns and values: the family as
its integer surrogate key in `families` (which holds the pseudonym once), dates as day numbers
(days since 1970-01-01), short codes (platform, feature) as integers from `codes`, the export
as its number in `export_numbers`; the primary key is all integers in a WITHOUT ROWID table, and
rows go in in key order. `frame()` decodes them. A row takes about 32 bytes on disk instead of
~170 (measured on the benchmark's million rows), a fifth of the pages to insert, write to the
WAL and commit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
)

from client_node.errors import NodeError

STORE_FILE = "store.sqlite"
# Rows per INSERT statement on SQLite (one statement binds at most 32766 values).
_ROWS_PER_STATEMENT = 200

metadata = MetaData()


def _record(name: str, *columns: Column, key: Sequence[str]) -> Table:
    """A record table: `columns` (those named in `key` make the primary key), then
    record_date and export_id."""
    for column in columns:
        if column.name in key:
            column.primary_key = True
            column.nullable = False
    return Table(
        name,
        metadata,
        *columns,
        Column("record_date", Text, nullable=False),
        Column("export_id", Text, nullable=False),
        sqlite_with_rowid=False,  # rows live in the key's b-tree: smaller, faster bulk loads
    )


families = Table(
    "families",
    metadata,
    Column("family_sid", Integer, primary_key=True),  # the surrogate compact tables refer to
    Column("family_pid", Text, nullable=False, unique=True),
)
students = Table(
    "students",
    metadata,
    Column("student_pid", Text, primary_key=True),
    Column("family_pid", Text, nullable=False),
    Column("grade_level", Integer),
)
events = _record(
    "events",
    Column("event_id", Text),
    Column("event_type", Text),
    Column("event_date", Text),
    Column("event_time", Text),
    Column("mode", Text),
    key=("event_id",),
)
event_attendance = _record(
    "event_attendance",
    Column("event_id", Text),
    Column("family_pid", Text),
    key=("event_id", "family_pid"),
)
communications = _record(
    "communications",
    Column("message_pid", Text),
    Column("family_pid", Text),
    Column("channel", Text),
    Column("content_type", Text),
    Column("direction", Text),
    Column("sent_at", Text),
    Column("opened_at", Text),
    Column("clicked_at", Text),
    Column("replied_at", Text),
    key=("message_pid",),
)
platform_activity = Table(  # compact (see COMPACT): read it through Store.frame()
    "platform_activity",
    metadata,
    Column("family_sid", Integer, primary_key=True),
    Column("day", Integer, primary_key=True),
    Column("platform", Integer, primary_key=True),
    Column("feature", Integer, primary_key=True),
    Column("sessions", Integer),
    Column("minutes", Float),
    Column("record_day", Integer, nullable=False),
    Column("export_no", Integer, nullable=False),
    sqlite_with_rowid=False,
)
grades = _record(
    "grades",
    Column("student_pid", Text),
    Column("term", Text),
    Column("subject", Text),
    Column("grade", Float),
    key=("student_pid", "term", "subject"),
)
attendance = _record(
    "attendance",
    Column("student_pid", Text),
    Column("date", Text),
    Column("period", Text),  # '' for daily attendance
    Column("status", Text),
    Column("excused", Boolean),
    key=("student_pid", "date", "period"),
)
wearables = _record(
    "wearables",
    Column("student_pid", Text),
    Column("date", Text),
    Column("sleep_minutes", Float),
    Column("active_minutes", Float),
    key=("student_pid", "date"),
)
exports = Table(
    "exports",
    metadata,
    Column("export_id", Text, primary_key=True),
    Column("ingested_at", Text, nullable=False),
    Column("summary", Text, nullable=False),  # JSON: counts and reasons, never ids or values
)
# the dictionaries of compact tables (not tables of their own for frame() and counts())
codes = Table(
    "codes",
    metadata,
    Column("kind", Text, primary_key=True),  # the column, e.g. "feature"
    Column("value", Text, primary_key=True),
    Column("code", Integer, nullable=False),
    sqlite_with_rowid=False,
)
export_numbers = Table(
    "export_numbers",
    metadata,
    Column("export_no", Integer, primary_key=True),
    Column("export_id", Text, nullable=False, unique=True),
)
_DICTIONARIES = ("codes", "export_numbers")

TABLES: dict[str, Table] = {
    name: t for name, t in metadata.tables.items() if name not in _DICTIONARIES
}
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class _Compact:
    """A compact table's logical columns (what frame() returns and insert() takes, in order)
    and how each is stored: (physical column, kind). Kinds: "family" (the pseudonym ->
    families.family_sid), "day" (an ISO date -> days since 1970-01-01), "code" (a short code
    -> codes.code of that column), "export" (export_id -> export_numbers.export_no), "value"
    (as it is)."""

    columns: dict[str, tuple[str, str]]
    key: tuple[str, ...]  # logical key columns: frame() is ordered by them

    def physical(self, logical: str) -> str:
        return self.columns[logical][0]


COMPACT: dict[str, _Compact] = {
    "platform_activity": _Compact(
        {
            "family_pid": ("family_sid", "family"),
            "date": ("day", "day"),
            "platform": ("platform", "code"),
            "feature": ("feature", "code"),
            "sessions": ("sessions", "value"),
            "minutes": ("minutes", "value"),
            "record_date": ("record_day", "day"),
            "export_id": ("export_no", "export"),
        },
        key=("family_pid", "date", "platform", "feature"),
    ),
}
RECORD_TABLES = tuple(name for name, t in TABLES.items() if "record_date" in t.c or name in COMPACT)


@dataclass(frozen=True)
class Coded:
    """A column given as codes into its distinct values: row i holds `values[codes[i]]`.
    Ingestion has its columns factorized already; a compact table encodes only the distinct
    values then, and every other table gets `decode()`."""

    codes: np.ndarray  # integer, one per row
    values: np.ndarray  # object: the distinct values

    def __len__(self) -> int:
        return len(self.codes)

    def decode(self) -> np.ndarray:
        return self.values[self.codes]


def _table(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise NodeError(
            f"store table {name!r} does not exist; tables: {', '.join(TABLES)}"
        ) from None


class Store:
    """The node's tables behind one SQLAlchemy engine."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            _sqlite_setup(self.engine)
        existing = inspect(self.engine)
        if existing.has_table("families") and "family_sid" not in {
            c["name"] for c in existing.get_columns("families")
        }:
            self.engine.dispose()
            raise NodeError(
                f"store {url}: written by an earlier SchoolFed (no compact tables); move it "
                "aside and ingest the school's exports again"
            )
        metadata.create_all(self.engine)

    @classmethod
    def for_node(cls, node_dir: Path) -> Store:
        """The node's default store: `NODE_DIR/store.sqlite`."""
        node_dir = Path(node_dir)
        if not node_dir.is_dir():
            raise NodeError(f"node directory {node_dir}: not found")
        return cls(f"sqlite:///{(node_dir / STORE_FILE).resolve()}")

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction: committed when the block ends, rolled back if it raises.

        On SQLite it takes the write lock when it begins (BEGIN IMMEDIATE), so it never fails
        half-way because another writer got in first; readers go on reading the last commit.
        """
        with self.engine.connect() as conn:
            conn.execution_options(schoolfed_write=True)
            with conn.begin():
                yield conn

    # --- reading ---------------------------------------------------------------------------

    def frame(self, table: str) -> pd.DataFrame:
        """A whole table, ordered by its key (a compact table decoded to its logical columns)."""
        t = _table(table)
        with self.engine.connect() as conn:
            if table in COMPACT:
                return _decoded(conn, t, COMPACT[table])
            if t is families:
                result = conn.execute(select(families.c.family_pid).order_by(families.c.family_pid))
            else:
                result = conn.execute(select(t).order_by(*t.primary_key.columns))
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                for name, t in TABLES.items()
            }

    def has_export(self, export_id: str, *, conn: Connection | None = None) -> bool:
        query = select(exports.c.export_id).where(exports.c.export_id == export_id)
        if conn is not None:
            return conn.execute(query).first() is not None
        with self.engine.connect() as own:
            return own.execute(query).first() is not None

    def event_dates(self, conn: Connection) -> dict[str, str]:
        """event_id -> record_date of the events already stored."""
        rows = conn.execute(select(events.c.event_id, events.c.record_date))
        return {event_id: day for event_id, day in rows}

    # --- writing ---------------------------------------------------------------------------

    def delete_older_than(self, table: str, cutoff: date) -> int:
        """Delete the records about a day before `cutoff`; the number of rows deleted."""
        t = _table(table)
        if table not in RECORD_TABLES:
            raise NodeError(
                f"store table {table!r} has no record_date; tables with one: "
                f"{', '.join(RECORD_TABLES)}"
            )
        with self.transaction() as conn:
            # date.max means "everything": no record is about a day after it
            if table in COMPACT:
                day = t.c[COMPACT[table].physical("record_date")]
                condition = day < (cutoff - _EPOCH).days
            else:
                condition = t.c.record_date < cutoff.isoformat()
            result = conn.execute(delete(t).where(condition))
            return int(result.rowcount)

    def record_export(
        self, conn: Connection, *, export_id: str, ingested_at: str, summary: Mapping[str, Any]
    ) -> None:
        conn.execute(
            insert(exports).values(
                export_id=export_id,
                ingested_at=ingested_at,
                summary=json.dumps(summary, sort_keys=True),
            )
        )

    def insert(
        self,
        conn: Connection,
        table: str,
        columns: Mapping[str, np.ndarray | Coded],
        *,
        constants: Mapping[str, object] | None = None,
        chunk: int = 50_000,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Insert rows given column-wise; rows whose key is already stored are left alone.

        `columns` maps column names to equally long object arrays of Python values (None for
        NULL), or to `Coded` columns; passing the same array for two columns binds it once.
        `constants` are the same in every row (e.g. the export id). A compact table takes its
        logical columns (as `frame()` returns them), encodes them and inserts in key order.
        `progress(rows_done)` is called after each chunk. Returns the number of rows added.
        """
        t = _table(table)
        layout = COMPACT.get(table)
        constants = dict(constants or {})
        for name in [*columns, *constants]:
            if name not in (layout.columns if layout is not None else t.c):
                raise NodeError(f"store table {table!r} has no column {name!r}")
        n = len(next(iter(columns.values()))) if columns else 0
        if any(len(column) != n for column in columns.values()):
            raise ValueError("every column must have one value per row")
        if n == 0:
            return 0
        arrays: dict[str, np.ndarray]
        if layout is not None:
            arrays, constants = _encode(conn, layout, columns, constants)
            arrays = _in_key_order(arrays, [c.name for c in t.primary_key.columns])
        else:
            decoded: dict[int, np.ndarray] = {}
            arrays = {}
            for name, column in columns.items():
                if isinstance(column, Coded):  # the same Coded column decoded once
                    column = decoded.setdefault(id(column), column.decode())
                arrays[name] = column
        # distinct arrays become the parameters of a row; the same array bound once
        distinct: list[np.ndarray] = []
        slot: list[int] = []
        for array in arrays.values():
            for i, seen in enumerate(distinct):
                if seen is array:
                    slot.append(i)
                    break
            else:
                slot.append(len(distinct))
                distinct.append(array)
        names = [*arrays, *constants]
        if self.engine.dialect.name == "sqlite":
            return _sqlite_insert(conn, t, names, slot, distinct, constants, chunk, progress)
        return _generic_insert(conn, t, list(arrays), slot, distinct, constants, chunk, progress)


# --- compact tables ------------------------------------------------------------------------


def _encode(
    conn: Connection,
    layout: _Compact,
    columns: Mapping[str, np.ndarray | Coded],
    constants: Mapping[str, object],
) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """The physical columns and constants of a compact table's rows: each distinct value
    encoded once (the same input column twice gives the same array, bound once)."""
    done: dict[tuple[int, str], np.ndarray] = {}
    arrays: dict[str, np.ndarray] = {}
    for name, column in columns.items():
        physical, kind = layout.columns[name]
        key = (id(column), kind)
        if key not in done:
            if kind == "value":
                if isinstance(column, Coded):  # numbers bound from a typed array (fast)
                    done[key] = _typed(column)
                else:
                    done[key] = column
            else:
                if isinstance(column, Coded):
                    codes, values = column.codes, column.values
                else:
                    codes, values = pd.factorize(column)  # None -> -1
                    values = np.asarray(values, dtype=object)
                encoded = _encode_values(conn, kind, physical, values.tolist())
                missing = np.array([e is None for e in encoded] + [True])
                if missing[codes].any():  # NULLs (refused by a NOT NULL column)
                    done[key] = np.array([*encoded, None], dtype=object)[codes]
                else:
                    filled = np.array([0 if e is None else e for e in encoded] + [0], np.int64)
                    done[key] = filled[codes]
        arrays[physical] = done[key]
    physical_constants: dict[str, object] = {}
    for name, value in constants.items():
        physical, kind = layout.columns[name]
        physical_constants[physical] = (
            value if kind == "value" else _encode_values(conn, kind, physical, [value])[0]
        )
    return arrays, physical_constants


def _encode_values(conn: Connection, kind: str, column: str, values: list[Any]) -> list[Any]:
    """Distinct logical values -> their stored integers (None stays None); new families,
    codes and exports are added to their dictionary table (in the same transaction)."""
    present = sorted({v for v in values if v is not None})
    if kind == "day":
        return [None if v is None else (date.fromisoformat(v) - _EPOCH).days for v in values]
    if kind == "family":
        table, value_col, code_col, where = families, "family_pid", "family_sid", None
    elif kind == "export":
        table, value_col, code_col, where = export_numbers, "export_id", "export_no", None
    elif kind == "code":
        table, value_col, code_col, where = codes, "value", "code", codes.c.kind == column
    else:
        raise NodeError(f"store: unknown compact column kind {kind!r}")

    def known() -> dict[Any, int]:
        query = select(table.c[value_col], table.c[code_col])
        if where is not None:
            query = query.where(where)
        return {value: code for value, code in conn.execute(query)}

    mapping = known()
    new = [v for v in present if v not in mapping]
    if new:
        if kind == "code":
            start = max(mapping.values(), default=-1) + 1
            rows = [{"kind": column, "value": v, "code": start + i} for i, v in enumerate(new)]
        else:
            rows = [{value_col: v} for v in new]  # the integer key is assigned by the database
        for part in range(0, len(rows), _ROWS_PER_STATEMENT):
            conn.execute(insert(table), rows[part : part + _ROWS_PER_STATEMENT])
        mapping = known()
    return [None if v is None else mapping[v] for v in values]


def _typed(column: Coded) -> np.ndarray:
    """The column's values, as an int64 or float64 array if the values its rows use are all
    ints or all floats (no None, no bools), else as objects."""
    used = np.zeros(len(column.values), dtype=bool)
    used[column.codes] = True
    items = column.values[used].tolist()
    for kind, dtype in ((int, np.int64), (float, np.float64)):
        if items and all(type(v) is kind for v in items):
            typed = np.zeros(len(column.values), dtype=dtype)
            typed[used] = items
            return typed[column.codes]
    return column.decode()


def _in_key_order(arrays: dict[str, np.ndarray], key: list[str]) -> dict[str, np.ndarray]:
    """The rows sorted by the (integer) key, the b-tree's order: inserting in it appends.
    Among rows with the same key the first given stays first (it is the one kept)."""
    parts = [arrays[name] for name in key]
    if not all(p.dtype.kind in "iu" for p in parts):
        return arrays  # NULLs in the key: the insert refuses them anyway
    low = [int(p.min()) for p in parts]
    sizes = [int(p.max()) - lo + 1 for p, lo in zip(parts, low, strict=True)]
    if float(np.prod(sizes, dtype=np.float64)) < 2.0**62:  # one int64 key, one sort
        combined = np.zeros(len(parts[0]), dtype=np.int64)
        for p, lo, size in zip(parts, low, sizes, strict=True):
            combined *= size
            combined += p
            combined -= lo
        if bool(np.all(combined[1:] > combined[:-1])):
            return arrays  # already in key order
        bits = max(1, (len(combined) - 1).bit_length())
        if float(np.prod(sizes, dtype=np.float64)) * 2.0**bits < 2.0**62:
            # the row number in the low bits: a plain sort is stable and gives the order
            combined <<= bits
            combined |= np.arange(len(combined), dtype=np.int64)
            combined.sort()
            order = combined & ((1 << bits) - 1)
            ordered = combined >> bits
        else:
            order = np.argsort(combined, kind="stable")
            ordered = combined[order]
        # the key columns back from the sorted key (cheaper than gathering each of them)
        done: dict[int, np.ndarray] = {}
        for name, lo, size in reversed(list(zip(key, low, sizes, strict=True))):
            ordered, digit = np.divmod(ordered, size)
            done.setdefault(id(arrays[name]), digit + lo)
    else:
        order = np.lexsort(tuple(reversed(parts)))
        done = {}
    return {name: done.setdefault(id(a), a[order]) for name, a in arrays.items()}


def _decoded(conn: Connection, table: Table, layout: _Compact) -> pd.DataFrame:
    """A compact table as its logical columns, in the order of its logical key."""
    names = list(layout.columns)
    rows = conn.execute(select(*(table.c[layout.physical(name)] for name in names))).fetchall()
    raw = pd.DataFrame(rows, columns=names)
    out: dict[str, Any] = {}
    rank: dict[str, np.ndarray] = {}
    for name in names:
        physical, kind = layout.columns[name]
        stored = raw[name].to_numpy()
        if kind == "value":
            out[name] = raw[name]
            continue
        if kind == "day":
            days, inverse = np.unique(stored.astype(np.int64), return_inverse=True)
            iso = np.array(
                [(_EPOCH + timedelta(days=d)).isoformat() for d in days.tolist()], dtype=object
            )
            out[name] = iso[inverse.reshape(-1)]
            rank[name] = stored.astype(np.int64)  # ISO dates sort as their day numbers
            continue
        if kind == "family":
            pairs = conn.execute(select(families.c.family_sid, families.c.family_pid))
        elif kind == "export":
            pairs = conn.execute(select(export_numbers.c.export_no, export_numbers.c.export_id))
        else:
            pairs = conn.execute(
                select(codes.c.code, codes.c.value).where(codes.c.kind == physical)
            )
        mapping = dict(pairs.fetchall())
        ints = sorted(mapping)
        lookup = pd.Series([mapping[i] for i in ints], index=ints, dtype=object)
        order = pd.Series(
            np.argsort(np.argsort(np.array([mapping[i] for i in ints], dtype=object))),
            index=ints,
        )
        out[name] = lookup.reindex(stored).to_numpy()
        rank[name] = order.reindex(stored).to_numpy()
    frame = pd.DataFrame(out, columns=names)
    if len(frame):
        order = np.lexsort(tuple(rank[name] for name in reversed(layout.key)))
        frame = frame.iloc[order].reset_index(drop=True)
    return frame


def _sqlite_setup(engine: Engine) -> None:
    """WAL with synchronous=NORMAL (atomic and consistent after a crash; fast bulk loads), and
    BEGIN issued by SQLAlchemy, so a transaction covers every statement in it."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("schoolfed_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _sqlite_insert(
    conn: Connection,
    table: Table,
    names: list[str],
    slot: list[int],
    distinct: list[np.ndarray],
    constants: dict[str, object],
    chunk: int,
    progress: Callable[[int], None] | None,
) -> int:
    """Multi-row INSERT OR IGNORE with numbered parameters: each distinct value of a row is
    bound once, constants once per statement. Integer and float columns are laid out as
    int64 / float64 blocks, so their Python values come from one tolist() per block."""
    n = len(distinct[0])
    blocks: list[np.ndarray] = []
    where: list[tuple[int, int]] = [(0, 0)] * len(distinct)
    by_type: dict[Any, list[int]] = {}
    for j, array in enumerate(distinct):
        kind = array.dtype.kind
        dtype: Any = np.int64 if kind in "iu" else np.float64 if kind == "f" else object
        by_type.setdefault(dtype, []).append(j)
    for dtype, members in by_type.items():
        block = np.empty((n, len(members)), dtype=dtype)
        for c, j in enumerate(members):
            block[:, c] = distinct[j]
            where[j] = (len(blocks), c)
        blocks.append(block)
    widths = [b.shape[1] for b in blocks]
    width = sum(widths)
    per = max(1, min(_ROWS_PER_STATEMENT, 30000 // max(1, width)))
    constant_values = list(constants.values())

    def statement(rows: int) -> str:
        offsets = np.concatenate(([0], np.cumsum(widths) * rows)).tolist()
        base = rows * width
        tail = [f"?{base + k + 1}" for k in range(len(constant_values))]
        groups = []
        for r in range(rows):
            params = []
            for s in slot:
                b, c = where[s]
                params.append(f"?{offsets[b] + r * widths[b] + c + 1}")
            groups.append("(" + ",".join(params + tail) + ")")
        column_list = ",".join(f'"{name}"' for name in names)
        return f'INSERT OR IGNORE INTO "{table.name}" ({column_list}) VALUES ' + ",".join(groups)

    full_sql = statement(per)
    added = 0
    for start in range(0, n, chunk):
        parts = [b[start : start + chunk] for b in blocks]
        rows = len(parts[0])
        whole = (rows // per) * per
        if whole:
            lists = [
                p[:whole].reshape(-1, per * w).tolist() for p, w in zip(parts, widths, strict=True)
            ]
            if len(lists) == 1:
                params = [(*values, *constant_values) for values in lists[0]]
            else:
                params = [
                    (*chain(*values), *constant_values) for values in zip(*lists, strict=True)
                ]
            added += _rowcount(conn.exec_driver_sql(full_sql, params))
        if whole < rows:
            rest = [x for p in parts for x in p[whole:].reshape(-1).tolist()]
            added += _rowcount(
                conn.exec_driver_sql(statement(rows - whole), (*rest, *constant_values))
            )
        if progress is not None:
            progress(min(n, start + chunk))
    return added


def _generic_insert(
    conn: Connection,
    table: Table,
    names: list[str],
    slot: list[int],
    distinct: list[np.ndarray],
    constants: dict[str, object],
    chunk: int,
    progress: Callable[[int], None] | None,
) -> int:
    """Any other database: an INSERT that skips rows whose key exists (PostgreSQL, MySQL)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(table).on_conflict_do_nothing()
    elif dialect in ("mysql", "mariadb"):
        stmt = insert(table).prefix_with("IGNORE")
    else:
        raise NodeError(f"store: the {dialect} database is not supported (sqlite, postgresql)")
    n = len(distinct[0])
    added = 0
    for start in range(0, n, chunk):
        part = [array[start : start + chunk].tolist() for array in distinct]
        rows = [
            {**{name: part[s][i] for name, s in zip(names, slot, strict=True)}, **constants}
            for i in range(len(part[0]))
        ]
        added += _rowcount(conn.execute(stmt, rows))
        if progress is not None:
            progress(min(n, start + chunk))
    return added


def _rowcount(result: Any) -> int:
    count = result.rowcount
    return int(count) if count is not None and count >= 0 else 0
