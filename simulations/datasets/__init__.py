"""Dataset adapters: each turns a real public dataset into per-school family tables.

A family table has one row per family: `family_id`, the label `at_risk` (0/1) and numeric
feature columns scaled to [0, 1] by fixed, documented code ranges.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from simulations.datasets import nhes, uci
from simulations.errors import SimulationError

DATA_ROOT = Path(__file__).parent / "data"

# name -> (adapter, default folder under DATA_ROOT)
ADAPTERS: dict[str, tuple[Callable[[Path], dict[str, pd.DataFrame]], str]] = {
    "nhes-pfi-2019": (nhes.school_tables, "nhes-2019-pfi"),
    "uci-student": (uci.school_tables, "uci-student-performance"),
}


def load_dataset(name: str, *, data_dir: Path | None = None) -> dict[str, pd.DataFrame]:
    """Per-school family tables of dataset `name`, read from `data_dir` or the bundled copy."""
    if name not in ADAPTERS:
        raise SimulationError(
            f"dataset {name!r} is not known; choose one of: {', '.join(sorted(ADAPTERS))}"
        )
    adapter, folder = ADAPTERS[name]
    return adapter(Path(data_dir) if data_dir is not None else DATA_ROOT / folder)
