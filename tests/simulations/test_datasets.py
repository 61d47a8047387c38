import numpy as np
import pandas as pd
import pytest

from client_node.table import validate
from simulations.datasets import DATA_ROOT, load_dataset, nhes, uci
from simulations.errors import DatasetError, SimulationError

NHES_CSV = DATA_ROOT / "nhes-2019-pfi" / "CuratedData.csv"


@pytest.fixture(scope="module")
def nhes_tables():
    return load_dataset("nhes-pfi-2019")


def test_nhes_has_16_schools_with_the_source_row_counts(nhes_tables):
    raw = pd.read_csv(NHES_CSV)
    graded = raw[raw["SEGRADES"].isin([1, 2, 3, 4])]
    expected = graded.groupby([graded["CENREG"], graded["ZIPLOCL"] // 10]).size()
    assert len(nhes_tables) == 16
    assert sum(len(t) for t in nhes_tables.values()) == 13533 == len(graded)
    for (region, locale), count in expected.items():
        school = f"{nhes.REGIONS[region]}-{nhes.LOCALES[locale]}"
        assert len(nhes_tables[school]) == count
    assert len(nhes_tables["northeast-town"]) == 112
    assert len(nhes_tables["south-suburb"]) == 2233


def test_nhes_label_is_grades_c_or_lower(nhes_tables):
    raw = pd.read_csv(NHES_CSV)
    positives = int(raw["SEGRADES"].isin([3, 4]).sum())
    assert sum(int(t["at_risk"].sum()) for t in nhes_tables.values()) == positives == 1542


def test_nhes_features_leave_out_outcomes_and_identifiers(nhes_tables):
    table = nhes_tables["west-city"]
    columns = set(table.columns)
    for banned in ("SEGRADEQ", "SEGRADES", "BASMID", "CENREG", "ZIPLOCL", "CDOBYY", "RACEETH"):
        assert not any(c == banned or c.startswith(banned + "=") for c in columns)
    assert list(table.columns[2:]) == nhes.feature_names()
    features = table.drop(columns=["family_id", "at_risk"]).to_numpy()
    assert features.min() >= 0 and features.max() <= 1
    validate(table, source="west-city")  # the client node accepts it


def test_nhes_reserve_codes_become_indicators_not_numbers():
    raw = pd.read_csv(NHES_CSV, nrows=500)
    encoded = nhes.encode(raw)
    skipped = (raw["FSFREQ"] < 0).to_numpy()
    assert skipped.any()
    assert (encoded.loc[skipped, "FSFREQ__missing"] == 1).all()
    assert (encoded.loc[skipped, "FSFREQ"] == 0).all()
    assert (encoded.loc[~skipped, "FSFREQ__missing"] == 0).all()


def test_nhes_scaling_uses_fixed_code_ranges():
    raw = pd.read_csv(NHES_CSV, nrows=1)
    raw["FSVOL"] = [1]
    raw["FCSCHOOL"] = [4]
    raw["FSFREQ"] = [99]
    raw["P1AGE"] = [15]
    encoded = nhes.encode(raw)
    assert encoded["FCSCHOOL"].item() == 1.0  # (4 - 1) / (4 - 1)
    assert encoded["FSFREQ"].item() == pytest.approx(1.0)
    assert encoded["P1AGE"].item() == 0.0
    assert encoded["FSVOL"].item() == 1.0  # 1 = yes


def test_a_code_outside_the_documented_range_is_refused():
    raw = pd.read_csv(NHES_CSV, nrows=2)
    raw.loc[1, "FCSCHOOL"] = 7
    with pytest.raises(DatasetError, match="row 3 column FCSCHOOL: code 7 is outside"):
        nhes.encode(raw)


def test_uci_has_4_schools_with_the_published_sizes():
    tables = load_dataset("uci-student")
    assert {k: len(v) for k, v in tables.items()} == {
        "mat-GP": 349,
        "mat-MS": 46,
        "por-GP": 423,
        "por-MS": 226,
    }
    raw = pd.read_csv(DATA_ROOT / "uci-student-performance" / "student-mat.csv", sep=";")
    gp = raw[raw["school"] == "GP"]
    assert int(tables["mat-GP"]["at_risk"].sum()) == int((gp["G3"] < 10).sum())
    assert not {"G1", "G2", "G3", "sex"} & set(tables["mat-GP"].columns)
    assert list(tables["por-MS"].columns[2:]) == uci.feature_names()
    assert np.isclose(tables["por-MS"]["at_risk"].mean(), 0.301, atol=0.001)


def test_missing_data_file_is_one_clear_error(tmp_path):
    with pytest.raises(DatasetError, match=r"nhes-pfi-2019: data file .*CuratedData.csv not found"):
        load_dataset("nhes-pfi-2019", data_dir=tmp_path)
    with pytest.raises(DatasetError, match="student-mat.csv not found"):
        load_dataset("uci-student", data_dir=tmp_path)


def test_table_without_a_required_column_is_refused(tmp_path):
    raw = pd.read_csv(NHES_CSV, nrows=50).drop(columns=["SEGRADES"])
    raw.to_csv(tmp_path / "CuratedData.csv", index=False)
    with pytest.raises(DatasetError, match="has no column SEGRADES"):
        load_dataset("nhes-pfi-2019", data_dir=tmp_path)


def test_text_in_a_code_column_is_refused(tmp_path):
    raw = pd.read_csv(NHES_CSV, nrows=50)
    raw["FSVOL"] = raw["FSVOL"].astype(object)
    raw.loc[7, "FSVOL"] = "yes"
    raw.to_csv(tmp_path / "CuratedData.csv", index=False)
    with pytest.raises(DatasetError, match="row 9 column FSVOL: 'yes' is not an integer code"):
        load_dataset("nhes-pfi-2019", data_dir=tmp_path)


def test_unknown_dataset_is_refused():
    with pytest.raises(SimulationError, match="choose one of: nhes-pfi-2019, uci-student"):
        load_dataset("nhes-2020")
