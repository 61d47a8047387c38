"""What ingestion of a million activity rows cannot go below on this machine, next to
pandas.read_csv of the same file (the reference of benchmarks/ingest_throughput.py).

    .venv/bin/python benchmarks/ingest_floor.py [--rows 1000000] [--repeat 5]

Per repeat, back to back on the same file: `pandas.read_csv` (default engine); Arrow's CSV
reader into factorized columns (what ingestion's parser does, nothing else); and SQLite alone
copying the same number of rows into the compact platform_activity table (integer key in a
WITHOUT ROWID table) from an in-memory copy of that table made beforehand, in key order: no
Python, no parsing, no validation, no binding of values; then committing under WAL + synchronous=NORMAL as the store does; and the same copy into the
wide layout the store had before (TEXT pseudonyms, dates, codes and export id in every row).
Prints the medians. Whatever ingestion adds (validation, pseudonyms, de-duplication, binding the values
from Python) comes on top of the parse and the SQLite figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_throughput import write_export  # noqa: E402

COMPACT = (
    "CREATE TABLE platform_activity (family_sid INTEGER, day INTEGER, platform INTEGER, "
    "feature INTEGER, sessions INTEGER, minutes REAL, record_day INTEGER NOT NULL, "
    "export_no INTEGER NOT NULL, PRIMARY KEY (family_sid, day, platform, feature)) WITHOUT ROWID"
)
# the layout before the compact one: 32-hex-char pseudonym, ISO dates, text codes, the export's
# 64-hex-char id in every row
WIDE = (
    "CREATE TABLE platform_activity (family_pid TEXT, date TEXT, platform TEXT, feature TEXT, "
    "sessions INTEGER, minutes REAL, record_date TEXT NOT NULL, export_id TEXT NOT NULL, "
    "PRIMARY KEY (family_pid, date, platform, feature)) WITHOUT ROWID"
)
WIDE_FILL = (
    "WITH RECURSIVE c(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
    "INSERT INTO platform_activity SELECT printf('%032x', x / 5840 + 1), "
    "date(20000 * 86400 + ((x / 16) % 365) * 86400, 'unixepoch'), "
    "CASE (x / 8) % 2 WHEN 0 THEN 'app' ELSE 'web' END, printf('feature%d', x % 8), x % 20, "
    "(x % 977) / 10.0, date(20000 * 86400 + ((x / 16) % 365) * 86400, 'unixepoch'), "
    "printf('%064x', 7) FROM c"
)
# 5,000 families x 365 days x 2 platforms x 8 features, the first `rows` cells in key order
FILL = (
    "WITH RECURSIVE c(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
    "INSERT INTO platform_activity SELECT x / 5840 + 1, 20000 + (x / 16) % 365, (x / 8) % 2, "
    "x % 8, x % 20, (x % 977) / 10.0, 20000 + (x / 16) % 365, 1 FROM c"
)


def sqlite_only(path: Path, rows: int, *, wide: bool = False) -> tuple[float, float]:
    table, fill = (WIDE, WIDE_FILL) if wide else (COMPACT, FILL)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(table)
    db.execute("ATTACH DATABASE ':memory:' AS src")  # the rows, made beforehand, untimed
    db.execute(table.replace("TABLE platform_activity", "TABLE src.platform_activity"))
    db.execute(fill.replace("INTO platform_activity", "INTO src.platform_activity"), (rows - 1,))
    start = time.perf_counter()
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO main.platform_activity SELECT * FROM src.platform_activity")
    inserted = time.perf_counter()
    db.execute("COMMIT")
    done = time.perf_counter()
    assert db.execute("SELECT count(*) FROM main.platform_activity").fetchone()[0] == rows
    db.close()
    return inserted - start, done - inserted


def arrow_parse(path: Path) -> float:
    start = time.perf_counter()
    data = path.read_bytes()
    names = data[: data.index(b"\n")].decode().split(",")
    table = pa_csv.read_csv(
        pa.py_buffer(data),
        convert_options=pa_csv.ConvertOptions(
            column_types={n: pa.dictionary(pa.int32(), pa.string()) for n in names},
            strings_can_be_null=False,
        ),
    )
    for name in names:
        table.column(name).unify_dictionaries()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="schoolfed-ingest-floor-"))
    try:
        activity = write_export(root / "export", rows=args.rows, families=5_000)
        activity = activity / "platform_activity.csv"
        reads, parses, inserts, commits, wide_inserts, wide_commits = [], [], [], [], [], []
        for i in range(args.repeat):
            start = time.perf_counter()
            assert len(pd.read_csv(activity)) == args.rows
            reads.append(time.perf_counter() - start)
            parses.append(arrow_parse(activity))
            db = root / f"floor-{i}.sqlite"
            insert_s, commit_s = sqlite_only(db, args.rows)
            inserts.append(insert_s)
            commits.append(commit_s)
            insert_s, commit_s = sqlite_only(root / f"wide-{i}.sqlite", args.rows, wide=True)
            wide_inserts.append(insert_s)
            wide_commits.append(commit_s)
            for name in (db, root / f"wide-{i}.sqlite"):
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{name}{suffix}").unlink(missing_ok=True)
        read = statistics.median(reads)
        print(f"median of {args.repeat}, {args.rows:,} rows:")
        print(f"  pandas.read_csv              {read:.3f} s  ({args.rows / read:,.0f} rows/s)")
        for label, times in (
            ("Arrow parse + factorize", parses),
            ("SQLite insert, no Python", inserts),
            ("SQLite commit", commits),
            ("wide layout: insert", wide_inserts),
            ("wide layout: commit", wide_commits),
        ):
            t = statistics.median(times)
            print(f"  {label:<28} {t:.3f} s  ({t / read:.2f} x read_csv)")
        floor = statistics.median(parses) + statistics.median(inserts) + statistics.median(commits)
        print(f"  floor (parse + insert + commit) {floor:.3f} s: ratio at most {read / floor:.2f}")
        print(f"  load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
