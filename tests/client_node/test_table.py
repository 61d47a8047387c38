import numpy as np
import pandas as pd
import pytest

from client_node.errors import TableError
from client_node.table import read_table, validate


def frame(**overrides):
    data = {"family_id": ["a", "b", "c"], "at_risk": [0, 1, 0], "x": [0.0, 0.5, 1.0]}
    data.update(overrides)
    return pd.DataFrame(data)


def test_a_valid_table():
    table = validate(frame(), source="t.csv")
    assert len(table) == 3
    assert table.feature_names == ("x",)
    assert table.features.dtype == np.float32
    assert table.labels.tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"at_risk": [0, 2, 0]}, "row 3 column at_risk: 2 is not allowed; expected 0 or 1"),
        (
            {"x": [0.0, 1.5, 1.0]},
            r"row 3 column x: 1.5 is not allowed; features are numbers in \[0, 1\]",
        ),
        ({"x": [0.0, "high", 1.0]}, "row 3 column x: 'high' is not allowed"),
        ({"x": [0.0, np.nan, 1.0]}, "row 3 column x: nan is not allowed"),
        ({"family_id": ["a", "b", "a"]}, "row 4: family appears twice"),
    ],
)
def test_bad_values_are_named_with_row_and_column(change, message):
    with pytest.raises(TableError, match=message):
        validate(frame(**change), source="t.csv")


def test_missing_required_column():
    with pytest.raises(TableError, match="t.csv: required column 'at_risk' is missing"):
        validate(frame().drop(columns=["at_risk"]), source="t.csv")


def test_missing_file(tmp_path):
    with pytest.raises(TableError, match="not found"):
        read_table(tmp_path / "nope.csv")
