"""The model registry: global models saved with what is needed to use and trace them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def save_model(
    path: Path, weights: dict[str, np.ndarray], *, feature_names: list[str], metadata: dict
) -> None:
    """Save weights and their provenance as one .npz file (written atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    arrays: dict[str, np.ndarray] = {
        **weights,
        "__features__": np.array(feature_names),
        "__metadata__": np.array(json.dumps(metadata, sort_keys=True)),
    }
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    tmp.replace(path)


def load_model(path: Path) -> tuple[dict[str, np.ndarray], list[str], dict]:
    with np.load(path, allow_pickle=False) as data:
        weights = {k: data[k] for k in data.files if not k.startswith("__")}
        features = [str(f) for f in data["__features__"]]
        metadata = json.loads(str(data["__metadata__"]))
    return weights, features, metadata
