"""A school's family table: one row per family, validated before anything learns from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from client_node.errors import TableError

FAMILY_ID = "family_id"
LABEL = "at_risk"


@dataclass(frozen=True)
class FamilyTable:
    """Validated features (float32 in [0, 1]), labels (0/1) and family ids of one school."""

    family_ids: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    feature_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, rows: np.ndarray) -> FamilyTable:
        return FamilyTable(
            self.family_ids[rows], self.features[rows], self.labels[rows], self.feature_names
        )


def _show(value: object) -> str:
    """A cell as the operator wrote it: 2, 1.5, nan, 'high' (not np.int64(2))."""
    item = getattr(value, "item", None)
    return repr(item() if callable(item) else value)


def validate(frame: pd.DataFrame, *, source: str) -> FamilyTable:
    """Check a family table's shape and values; raise TableError naming source, row and column."""
    for column in (FAMILY_ID, LABEL):
        if column not in frame.columns:
            raise TableError(f"family table {source}: required column '{column}' is missing")
    names = tuple(c for c in frame.columns if c not in (FAMILY_ID, LABEL))
    if not names:
        raise TableError(f"family table {source}: no feature columns besides {FAMILY_ID}, {LABEL}")
    ids = frame[FAMILY_ID].astype(str)
    duplicated = ids.duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise TableError(
            f"family table {source} row {row + 2}: family appears twice; one row per family"
        )
    labels = pd.to_numeric(frame[LABEL], errors="coerce")
    bad = ~labels.isin([0, 1])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise TableError(
            f"family table {source} row {row + 2} column {LABEL}: {_show(frame[LABEL].iloc[row])}"
            " is not allowed; expected 0 or 1"
        )
    values = frame[list(names)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad_cells = ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad_cells.any():
        row, col = (int(i) for i in np.argwhere(bad_cells)[0])
        raise TableError(
            f"family table {source} row {row + 2} column {names[col]}:"
            f" {_show(frame[names[col]].iloc[row])} is not allowed; features are numbers in [0, 1]"
        )
    # C order always: the same families give the same bytes, and the same float sums.
    return FamilyTable(
        ids.to_numpy(),
        np.ascontiguousarray(values, dtype=np.float32),
        labels.to_numpy(dtype=np.float32),
        names,
    )


def read_table(path: Path) -> FamilyTable:
    """Read and validate a family table CSV."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"family table {path}: not found")
    try:
        frame = pd.read_csv(path, dtype={FAMILY_ID: str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TableError(f"family table {path}: not a readable CSV ({exc})") from None
    return validate(frame, source=str(path))


def write_table(table: pd.DataFrame, path: Path) -> None:
    """Write a family table atomically (a crash leaves the old file or none, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    table.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(path)
