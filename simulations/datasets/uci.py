"""UCI Student Performance (Cortez & Silva 2008) -> 4 schools of family tables.

Schools are school (GP, MS) × course (mat, por). The label `at_risk` is G3 < 10 (fail). G1 and
G2 are earlier grades of the same year and are not features: this is the early-warning setting
(the paper's setup C). Features are scaled by the documented code ranges in `student.txt`. The
student's sex is left out (a protected attribute). The files carry no identifier, so a family id
is made from the course, the school and the row number.

The same student can appear in both courses (382 do): in this simulation those are two schools,
each accounting for its own rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from simulations.errors import DatasetError

FILES = {"mat": "student-mat.csv", "por": "student-por.csv"}
SCHOOLS = ("GP", "MS")

YESNO = ["schoolsup", "famsup", "paid", "activities", "nursery", "higher", "internet", "romantic"]
# column -> (low, high) from the UCI codebook
SCALES = {
    "age": (15, 22), "Medu": (0, 4), "Fedu": (0, 4), "traveltime": (1, 4), "studytime": (1, 4),
    "failures": (0, 4), "famrel": (1, 5), "freetime": (1, 5), "goout": (1, 5), "Dalc": (1, 5),
    "Walc": (1, 5), "health": (1, 5),
}  # fmt: skip
BINARY = {"address": "U", "famsize": "GT3", "Pstatus": "T"}  # column -> the value coded 1
NOMINAL = {
    "Mjob": ("teacher", "health", "services", "at_home", "other"),
    "Fjob": ("teacher", "health", "services", "at_home", "other"),
    "reason": ("home", "reputation", "course", "other"),
    "guardian": ("mother", "father", "other"),
}
ABSENCES_CAP = 93
REQUIRED = ["school", "G3", "absences", *YESNO, *SCALES, *BINARY, *NOMINAL]


def feature_names() -> list[str]:
    names = list(BINARY) + YESNO + list(SCALES) + ["absences"]
    for col, values in NOMINAL.items():
        names.extend(f"{col}={v}" for v in values)
    return names


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DatasetError(f"uci-student: data file {path} not found")
    try:
        raw = pd.read_csv(path, sep=";")
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"uci-student: {path} is not a readable CSV ({exc})") from None
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise DatasetError(
            f"uci-student: {path} has no column {missing[0]}"
            f" ({len(missing)} required column(s) missing: {', '.join(missing[:5])})"
        )
    return raw


def _check(raw: pd.DataFrame, col: str, ok: pd.Series, allowed: str, path: Path) -> None:
    if not ok.all():
        row = int(np.flatnonzero(~ok.to_numpy())[0])
        raise DatasetError(
            f"uci-student: {path.name} row {row + 2} column {col}: {raw[col].iloc[row]!r}"
            f" is not allowed; expected {allowed}"
        )


def encode(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    out: dict[str, pd.Series] = {}
    for col, one in BINARY.items():
        out[col] = (raw[col] == one).astype(float)
    for col in YESNO:
        _check(raw, col, raw[col].isin(["yes", "no"]), "yes or no", path)
        out[col] = (raw[col] == "yes").astype(float)
    for col, (low, high) in SCALES.items():
        values = pd.to_numeric(raw[col], errors="coerce")
        _check(raw, col, values.between(low, high), f"a number in {low}..{high}", path)
        out[col] = (values - low) / (high - low)
    absences = pd.to_numeric(raw["absences"], errors="coerce")
    _check(raw, "absences", absences >= 0, "a count >= 0", path)
    out["absences"] = np.log1p(absences.clip(upper=ABSENCES_CAP)) / np.log1p(ABSENCES_CAP)
    for col, values in NOMINAL.items():
        _check(raw, col, raw[col].isin(values), f"one of {', '.join(values)}", path)
        for v in values:
            out[f"{col}={v}"] = (raw[col] == v).astype(float)
    return pd.DataFrame(out)


def school_tables(data_dir: Path) -> dict[str, pd.DataFrame]:
    """One family table per school-course, keyed `<course>-<school>` (e.g. `mat-GP`)."""
    tables: dict[str, pd.DataFrame] = {}
    for course, name in FILES.items():
        path = Path(data_dir) / name
        raw = _read(path)
        _check(raw, "school", raw["school"].isin(SCHOOLS), "GP or MS", path)
        g3 = pd.to_numeric(raw["G3"], errors="coerce")
        _check(raw, "G3", g3.between(0, 20), "a grade in 0..20", path)
        features = encode(raw, path)
        for school in SCHOOLS:
            rows = (raw["school"] == school).to_numpy()
            ids = [f"{course}-{school}-{i:04d}" for i in np.flatnonzero(rows)]
            tables[f"{course}-{school}"] = pd.concat(
                [
                    pd.DataFrame(
                        {"family_id": ids, "at_risk": (g3[rows] < 10).astype(int).to_numpy()}
                    ),
                    features[rows].reset_index(drop=True),
                ],
                axis=1,
            )
    return dict(sorted(tables.items()))
