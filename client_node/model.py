"""The disengagement model: logistic regression over the family features.

Small on purpose: under DP-SGD the noise grows with the number of parameters, and a linear model
stays interpretable for the staff who act on its scores.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def build_model(n_features: int) -> nn.Module:
    """A fresh model with zero weights (deterministic, and a neutral 0.5 score for everyone)."""
    model = nn.Linear(n_features, 1)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    return model


def get_weights(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def set_weights(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    received = {k: tuple(np.shape(v)) for k, v in weights.items()}
    if expected != received:
        raise ValueError(f"model arrays {received} do not fit this model {expected}")
    model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in weights.items()})


def predict_proba(model: nn.Module, features: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(model(torch.as_tensor(features)).squeeze(-1)).numpy()
