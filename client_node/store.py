"""The node's local store: what ingestion keeps, in SQL tables, ids pseudonymized.

By default an embedded SQLite file, `NODE_DIR/store.sqlite`; any SQLAlchemy engine URL works
(`Store("postgresql+psycopg://...")` for a district that runs a database server). Only policy-
allowed fields are ever written; direct identifiers (names, e-mails, phones, addresses) and raw
ids never are.

Every record table has `record_date` (ISO date the record is about; for grades the date they
were ingested) for retention, and `export_id` (the export it came from, see `exports`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date
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


families = Table("families", metadata, Column("family_pid", Text, primary_key=True))
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
platform_activity = _record(
    "platform_activity",
    Column("family_pid", Text),
    Column("date", Text),
    Column("platform", Text),
    Column("feature", Text),
    Column("sessions", Integer),
    Column("minutes", Float),
    key=("family_pid", "date", "platform", "feature"),
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

TABLES: dict[str, Table] = dict(metadata.tables)
RECORD_TABLES = tuple(name for name, t in TABLES.items() if "record_date" in t.c)


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
        """A whole table, ordered by its key."""
        t = _table(table)
        with self.engine.connect() as conn:
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
        if "record_date" not in t.c:
            raise NodeError(
                f"store table {table!r} has no record_date; tables with one: "
                f"{', '.join(RECORD_TABLES)}"
            )
        with self.transaction() as conn:
            # date.max means "everything": no record is about a day after it
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
        columns: Mapping[str, np.ndarray],
        *,
        constants: Mapping[str, object] | None = None,
        chunk: int = 50_000,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Insert rows given column-wise; rows whose key is already stored are left alone.

        `columns` maps column names to equally long object arrays of Python values (None for
        NULL); passing the same array for two columns binds it once. `constants` are the same
        in every row (e.g. the export id). `progress(rows_done)` is called after each chunk.
        Returns the number of rows actually added.
        """
        t = _table(table)
        constants = dict(constants or {})
        names = [*columns, *constants]
        for name in names:
            if name not in t.c:
                raise NodeError(f"store table {table!r} has no column {name!r}")
        arrays = list(columns.values())
        n = len(arrays[0]) if arrays else 0
        if n == 0:
            return 0
        # distinct arrays become the parameters of a row; the same array bound once
        distinct: list[np.ndarray] = []
        slot: list[int] = []
        for array in arrays:
            for i, seen in enumerate(distinct):
                if seen is array:
                    slot.append(i)
                    break
            else:
                if len(array) != n:
                    raise ValueError("every column must have one value per row")
                slot.append(len(distinct))
                distinct.append(array)
        matrix = np.empty((n, len(distinct)), dtype=object)
        for j, array in enumerate(distinct):
            matrix[:, j] = array
        if self.engine.dialect.name == "sqlite":
            return _sqlite_insert(conn, t, names, slot, matrix, constants, chunk, progress)
        return _generic_insert(conn, t, list(columns), slot, matrix, constants, chunk, progress)


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
    matrix: np.ndarray,
    constants: dict[str, object],
    chunk: int,
    progress: Callable[[int], None] | None,
) -> int:
    """Multi-row INSERT OR IGNORE with numbered parameters: each distinct value of a row is
    bound once, constants once per statement."""
    n, width = matrix.shape
    per = max(1, min(_ROWS_PER_STATEMENT, 30000 // max(1, width)))
    constant_values = list(constants.values())

    def statement(rows: int) -> str:
        base = rows * width
        groups = []
        for r in range(rows):
            params = [f"?{r * width + s + 1}" for s in slot]
            params += [f"?{base + k + 1}" for k in range(len(constant_values))]
            groups.append("(" + ",".join(params) + ")")
        column_list = ",".join(f'"{name}"' for name in names)
        return f'INSERT OR IGNORE INTO "{table.name}" ({column_list}) VALUES ' + ",".join(groups)

    full_sql = statement(per)
    added = 0
    for start in range(0, n, chunk):
        part = matrix[start : start + chunk]
        whole = (len(part) // per) * per
        if whole:
            params = [
                (*row, *constant_values) for row in part[:whole].reshape(-1, per * width).tolist()
            ]
            added += _rowcount(conn.exec_driver_sql(full_sql, params))
        if whole < len(part):
            rest = part[whole:]
            row = rest.reshape(-1).tolist() + constant_values
            added += _rowcount(conn.exec_driver_sql(statement(len(rest)), (*row,)))
        if progress is not None:
            progress(min(n, start + chunk))
    return added


def _generic_insert(
    conn: Connection,
    table: Table,
    names: list[str],
    slot: list[int],
    matrix: np.ndarray,
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
    n = len(matrix)
    added = 0
    for start in range(0, n, chunk):
        part = matrix[start : start + chunk].tolist()
        rows = [
            {**{name: row[s] for name, s in zip(names, slot, strict=True)}, **constants}
            for row in part
        ]
        added += _rowcount(conn.execute(stmt, rows))
        if progress is not None:
            progress(min(n, start + chunk))
    return added


def _rowcount(result: Any) -> int:
    count = result.rowcount
    return int(count) if count is not None and count >= 0 else 0
