"""DP-SGD training of the school's model with Opacus, and local evaluation.

The privacy unit is the family: each row of a family table is one family, so Opacus'
per-sample guarantee is a per-family guarantee. Sampling is Poisson (Opacus' DPDataLoader); the
noise multiplier is fixed by the caller (calibrated once per run against the school's ledger).
`PrivateTrainer` is built first and exposes the exact spend it will make, so the ledger can be
charged *before* any step is taken.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from client_node.model import predict_proba
from client_node.table import FamilyTable
from privacy.accountant import Spend


@dataclass(frozen=True, slots=True)
class TrainSettings:
    """Hyper-parameters the district chooses for a run (privacy ones come from the policy)."""

    local_epochs: int = 2
    batch_size: int = 64
    learning_rate: float = 1.0
    momentum: float = 0.5


def poisson_schedule(n_families: int, settings: TrainSettings) -> tuple[float, int]:
    """(sample rate, steps per round) exactly as Opacus' DPDataLoader will use them."""
    batches = max(1, math.ceil(n_families / settings.batch_size))
    sample_rate = 1 / batches
    return sample_rate, settings.local_epochs * int(1 / sample_rate)


class PrivateTrainer:
    """One round of DP-SGD on a school's table; `spend` is known before `run()` is called.

    Sampling is Poisson at the planned rate `sample_rate`, drawn from `generator` (Opacus'
    DPDataLoader): the rate, not the table's current size, is what the guarantee rests on, so a
    family opting out mid-run changes nothing in the accounting.
    """

    def __init__(
        self,
        model: nn.Module,
        table: FamilyTable,
        *,
        noise_multiplier: float,
        sample_rate: float,
        max_grad_norm: float,
        settings: TrainSettings,
        generator: torch.Generator,
    ) -> None:
        self.model = model
        self.settings = settings
        dataset = TensorDataset(torch.as_tensor(table.features), torch.as_tensor(table.labels))
        loader = DPDataLoader(dataset, sample_rate=sample_rate, generator=generator)
        if 1 / len(loader) != sample_rate:
            raise ValueError(f"sample rate {sample_rate} is not 1/k for a whole number k")
        optimizer = torch.optim.SGD(
            model.parameters(), lr=settings.learning_rate, momentum=settings.momentum
        )
        with warnings.catch_warnings():
            # "Secure RNG turned off": torchcsprng, which secure_mode needs, has no build for
            # this torch; sampling and noise come from `generator`, seeded by the caller.
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            self.engine = PrivacyEngine(accountant="rdp")
            _, self.optimizer, self.loader = self.engine.make_private(
                module=model,
                optimizer=optimizer,
                data_loader=loader,
                noise_multiplier=noise_multiplier,
                max_grad_norm=max_grad_norm,
                poisson_sampling=False,  # the loader above already samples (with our generator)
                wrap_model=False,
                noise_generator=generator,
            )
        self.spend = Spend(noise_multiplier, sample_rate, settings.local_epochs * len(self.loader))

    def run(self) -> float:
        """Train for the planned steps; return the mean training loss."""
        loss_fn = nn.BCEWithLogitsLoss()
        self.model.train()
        losses: list[float] = []
        with warnings.catch_warnings():
            # Opacus' per-sample hooks on a linear input layer: harmless, said on every step.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for _ in range(self.settings.local_epochs):
                for features, labels in self.loader:  # Poisson batches, empty ones included
                    self.optimizer.zero_grad()
                    loss = loss_fn(self.model(features).squeeze(-1), labels)
                    loss.backward()
                    self.optimizer.step()
                    if len(labels):
                        losses.append(float(loss.detach()))
        taken = self.engine.accountant.history
        charged = [(self.spend.noise_multiplier, self.spend.sample_rate, self.spend.steps)]
        if taken != charged:
            raise RuntimeError(f"DP-SGD took {taken}, but the ledger was charged for {charged}")
        return float(np.mean(losses)) if losses else float("nan")


def train_plain(
    model: nn.Module, table: FamilyTable, *, epochs: int, settings: TrainSettings, seed: int
) -> None:
    """Non-private training: used only for the pooled baseline in simulations."""
    generator = torch.Generator().manual_seed(seed)
    dataset = TensorDataset(torch.as_tensor(table.features), torch.as_tensor(table.labels))
    loader = DataLoader(dataset, batch_size=settings.batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(epochs):
        for features, labels in loader:
            optimizer.zero_grad()
            loss_fn(model(features).squeeze(-1), labels).backward()
            optimizer.step()


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Aggregate metrics of a model on a table: nothing per family."""

    n: int
    loss: float
    accuracy: float
    auc: float  # NaN when the table holds only one class


def evaluate(model: nn.Module, table: FamilyTable) -> Evaluation:
    model.eval()
    scores = predict_proba(model, table.features).astype(np.float64)
    labels = table.labels.astype(np.float64)
    eps = 1e-7
    clipped = np.clip(scores, eps, 1 - eps)
    loss = float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))
    accuracy = float(np.mean((scores >= 0.5) == (labels == 1)))
    auc = float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")
    return Evaluation(len(labels), loss, accuracy, auc)
