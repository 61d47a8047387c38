"""NCES NHES 2019 Parent and Family Involvement survey -> 16 schools of family tables.

Schools are census region (CENREG) × locale group (ZIPLOCL tens digit). The label `at_risk` is
SEGRADES in {3, 4} (mostly C's or lower); rows with SEGRADES 5 (no grades) or a negative code
are left out. Every feature is scaled by the code range the NCES codebook documents, never by
statistics of the pooled data, so every school computes the same encoding on its own.

Negative NCES reserve codes (-1 valid skip, -9 missing) become a `<COLUMN>__missing` indicator
and the value itself 0; they are never read as numbers.

Left out on purpose: BASMID (an identifier), SEGRADEQ (the parent's description of school work:
the outcome in disguise), SEGRADES (the label), CENREG and ZIPLOCL (the school split), the
child's birth month and year (quasi-identifiers; ALLGRADEX carries the age), and the child's
sex and race/ethnicity (protected attributes an early-warning model should not score on).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from simulations.errors import DatasetError

FILE = "CuratedData.csv"
REGIONS = {1: "northeast", 2: "south", 3: "midwest", 4: "west"}
LOCALES = {1: "city", 2: "suburb", 3: "town", 4: "rural"}


@dataclass(frozen=True)
class Code:
    """How one survey column is encoded."""

    kind: Literal["yesno", "scale", "count", "nominal"]
    low: int = 0
    high: int = 1
    codes: tuple[int, ...] = ()
    may_skip: bool = False  # the codebook allows reserve codes (-1 valid skip, -9 missing)


def yesno(skip: bool = True) -> Code:
    return Code("yesno", 1, 2, may_skip=skip)


def scale(low: int, high: int, skip: bool = False) -> Code:
    return Code("scale", low, high, may_skip=skip)


def count(high: int, skip: bool = False) -> Code:
    return Code("count", 0, high, may_skip=skip)


def nominal(*codes: int, skip: bool = False) -> Code:
    return Code("nominal", min(codes), max(codes), codes=codes, may_skip=skip)


# column -> encoding; ranges from the NCES codebook (see data/nhes-2019-pfi/SOURCE.md).
FEATURES: dict[str, Code] = {
    # family involvement at school
    "FSSPORTX": yesno(), "FSVOL": yesno(), "FSMTNG": yesno(), "FSPTMTNG": yesno(),
    "FSATCNFN": yesno(), "FSFUNDRS": yesno(), "FSCOMMTE": yesno(), "FSCOUNSLR": yesno(),
    "FSFREQ": count(99, skip=True),
    # school communications
    "FSNOTESX": yesno(), "FSMEMO": yesno(),
    # satisfaction (1 very satisfied ... 4 very dissatisfied)
    "FCSCHOOL": scale(1, 4, True), "FCTEACHR": scale(1, 4, True), "FCSTDS": scale(1, 4, True),
    "FCORDER": scale(1, 4, True), "FCSUPPRT": scale(1, 4, True),
    # homework
    "FHHOME": scale(1, 6, True), "FHWKHRS": count(75, skip=True), "FHAMOUNT": scale(1, 3, True),
    "FHCAMT": scale(1, 3, True), "FHPLACE": scale(1, 3, True), "FHCHECKX": scale(1, 4, True),
    "FHHELP": scale(1, 5, True),
    # activities at home
    "FOSTORY2X": yesno(False), "FOCRAFTS": yesno(False), "FOGAMES": yesno(False),
    "FOBUILDX": yesno(False), "FOSPORT": yesno(False), "FORESPON": yesno(False),
    "FOHISTX": yesno(False), "FODINNERX": scale(0, 7), "FOLIBRAYX": yesno(False),
    "FOBOOKSTX": yesno(False),
    # the child and the school
    "ALLGRADEX": scale(2, 15), "EDCPUB": yesno(False), "SCCHOICE": yesno(),
    "SPUBCHOIX": nominal(1, 2, 3, skip=True), "SCONSIDR": yesno(), "SCHLHRSWK": scale(1, 4, True),
    "EINTNET": nominal(1, 2, 3, 4, skip=True), "INTNUM": count(16, skip=True),
    "SEENJOY": scale(1, 4, True), "SEABSNT": scale(1, 4, True), "HDHEALTH": scale(1, 5),
    "DSBLTY": yesno(False), "CHLDNT": scale(1, 5), "SEFUTUREX": scale(1, 6),
    "CSPEAKX": nominal(1, 2, 3, 4, 5, 6),
    # household context
    "HHTOTALXX": scale(2, 10), "NUMSIBSX": scale(0, 7), "RELATION": nominal(*range(1, 12)),
    "P1REL": nominal(1, 2, 3, 4, 5, 6), "P1SEX": yesno(False), "P1MRSTA": nominal(1, 2, 3, 4, 5),
    "P1EMPL": nominal(1, 2, 3, 4, 5, 6, 7), "P1HRSWK": count(80, skip=True),
    "P1MTHSWRK": scale(0, 12), "P1AGE": scale(15, 90), "P2GUARD": yesno(False),
    "TTLHHINC": scale(1, 12), "OWNRNTHB": nominal(1, 2, 3), "HHPARN19X": nominal(1, 2, 3, 4),
    "PARGRADEX": scale(1, 5), "INTACC": nominal(1, 2, 3, 4),
}  # fmt: skip

REQUIRED = ["BASMID", "SEGRADES", "CENREG", "ZIPLOCL", *FEATURES]


def read_survey(data_dir: Path) -> pd.DataFrame:
    """The raw survey file, checked for presence and required columns."""
    path = Path(data_dir) / FILE
    if not path.is_file():
        raise DatasetError(f"nhes-pfi-2019: data file {path} not found")
    try:
        raw = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"nhes-pfi-2019: {path} is not a readable CSV ({exc})") from None
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise DatasetError(
            f"nhes-pfi-2019: {path} has no column {missing[0]}"
            f" ({len(missing)} required column(s) missing: {', '.join(missing[:5])})"
        )
    for col in REQUIRED:
        if not pd.api.types.is_integer_dtype(raw[col]):
            bad = pd.to_numeric(raw[col], errors="coerce").isna() | (
                pd.to_numeric(raw[col], errors="coerce") % 1 != 0
            )
            row = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else 0
            raise DatasetError(
                f"nhes-pfi-2019: {path} row {row + 2} column {col}: {raw[col].iloc[row]!r}"
                " is not an integer code"
            )
    return raw


def encode(raw: pd.DataFrame, *, source: str = FILE) -> pd.DataFrame:
    """Encode survey columns into [0, 1] features plus missing-value indicators."""
    out: dict[str, np.ndarray] = {}
    for col, code in FEATURES.items():
        values = raw[col].to_numpy()
        reserve = values < 0
        if reserve.any() and not code.may_skip:
            row = int(np.flatnonzero(reserve)[0])
            raise DatasetError(
                f"nhes-pfi-2019: {source} row {row + 2} column {col}: reserve code"
                f" {values[row]} where the codebook allows none"
            )
        valid = values[~reserve]
        allowed = code.codes if code.kind == "nominal" else None
        out_of_range = (
            ~np.isin(valid, allowed)
            if allowed is not None
            else (valid < code.low) | (valid > max(code.high, code.low))
        )
        if code.kind == "count":
            out_of_range = valid < 0
        if out_of_range.any():
            row = int(np.flatnonzero(~reserve)[np.flatnonzero(out_of_range)[0]])
            raise DatasetError(
                f"nhes-pfi-2019: {source} row {row + 2} column {col}: code {values[row]} is"
                f" outside the documented range {code.low}..{code.high}"
            )
        clean = np.where(reserve, code.low, values).astype(float)
        if code.kind == "yesno":
            out[col] = np.where(reserve, 0.0, (clean == 1).astype(float))
        elif code.kind == "scale":
            out[col] = np.where(reserve, 0.0, (clean - code.low) / (code.high - code.low))
        elif code.kind == "count":
            capped = np.minimum(clean, code.high)
            out[col] = np.where(reserve, 0.0, np.log1p(capped) / np.log1p(code.high))
        else:
            for c in code.codes:
                out[f"{col}={c}"] = np.where(reserve, 0.0, (clean == c).astype(float))
        if code.may_skip:
            out[f"{col}__missing"] = reserve.astype(float)
    return pd.DataFrame(out, index=raw.index)


def feature_names() -> list[str]:
    """The encoded feature columns, in order (the same for every school)."""
    names: list[str] = []
    for col, code in FEATURES.items():
        names.extend([f"{col}={c}" for c in code.codes] if code.kind == "nominal" else [col])
        if code.may_skip:
            names.append(f"{col}__missing")
    return names


def school_tables(data_dir: Path) -> dict[str, pd.DataFrame]:
    """One family table per school (region × locale group), keyed by school id."""
    raw = read_survey(data_dir)
    graded = raw[raw["SEGRADES"].between(1, 4)].reset_index(drop=True)
    bad_region = ~graded["CENREG"].isin(list(REGIONS))
    bad_locale = ~(graded["ZIPLOCL"] // 10).isin(list(LOCALES))
    if bad_region.any() or bad_locale.any():
        row = int(np.flatnonzero((bad_region | bad_locale).to_numpy())[0])
        raise DatasetError(
            f"nhes-pfi-2019: {FILE}: CENREG/ZIPLOCL {graded['CENREG'][row]}/"
            f"{graded['ZIPLOCL'][row]} is not a documented region (1-4) and locale (11-43)"
        )
    table = pd.concat(
        [
            pd.DataFrame(
                {
                    "family_id": graded["BASMID"].astype(str),
                    "at_risk": graded["SEGRADES"].isin([3, 4]).astype(int),
                }
            ),
            encode(graded),
        ],
        axis=1,
    )
    school = (
        graded["CENREG"].map(REGIONS) + "-" + (graded["ZIPLOCL"] // 10).map(LOCALES)
    ).to_numpy()
    return {sid: table[school == sid].reset_index(drop=True) for sid in sorted(set(school))}
