"""The per-school ε ledger: an SQLite file on the school's disk.

Every spend is checked against the budget *before* it is recorded, inside one IMMEDIATE
transaction, so two processes cannot both pass the check, and a crash either leaves the spend
fully recorded or not at all (SQLite's journal, synchronous=FULL). The ledger accumulates
across rounds, runs and restarts within the policy's period; ε is recomputed from the whole
history with the RDP accountant, never by adding per-round ε values.

One file keeps one pool per purpose (`training`, `analytics`): an `EpsilonLedger` opened for a
purpose sees, composes and checks only that pool's spends, against that purpose's budget (the
policy's training or analytics share). The pools' (ε, δ) add up to the policy's (ε, δ) by basic
composition, so the school's total stays within the policy whatever each pool does.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from privacy.accountant import Spend, epsilon_of
from privacy.budget import Budget
from privacy.errors import BudgetExceeded, LedgerError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spends (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recorded_at TEXT NOT NULL,
    period TEXT NOT NULL,
    purpose TEXT NOT NULL,
    run_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    noise_multiplier REAL NOT NULL,
    sample_rate REAL NOT NULL,
    steps INTEGER NOT NULL,
    epsilon_after REAL NOT NULL,
    UNIQUE (period, purpose, run_id, round)
);
CREATE TABLE IF NOT EXISTS plans (
    period TEXT NOT NULL,
    run_id TEXT NOT NULL,
    noise_multiplier REAL NOT NULL,
    sample_rate REAL NOT NULL,
    steps_per_round INTEGER NOT NULL,
    rounds INTEGER NOT NULL,
    target_epsilon REAL NOT NULL,
    PRIMARY KEY (period, run_id)
);
"""


Purpose = Literal["training", "analytics"]
PURPOSES: tuple[Purpose, ...] = ("training", "analytics")


@dataclass(frozen=True, slots=True)
class Plan:
    """The noise multiplier fixed once for a run's planned rounds."""

    run_id: str
    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    rounds: int
    target_epsilon: float


class EpsilonLedger:
    """Crash-safe record of the ε a school has spent in one policy period, for one purpose."""

    def __init__(
        self, path: Path, *, budget: Budget, period: str, purpose: Purpose = "training"
    ) -> None:
        if purpose not in PURPOSES:
            raise LedgerError(
                f"ε ledger {path}: purpose {purpose!r} is not one of {', '.join(PURPOSES)}"
            )
        self.path = Path(path)
        self.budget = budget
        self.period = period
        self.purpose: Purpose = purpose
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect() as db:
                db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(
                f"ε ledger {self.path}: not a readable SQLite ledger ({exc})"
            ) from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    def _history(self, db: sqlite3.Connection) -> list[Spend]:
        rows = db.execute(
            "SELECT noise_multiplier, sample_rate, steps FROM spends"
            " WHERE period = ? AND purpose = ? ORDER BY id",
            (self.period, self.purpose),
        ).fetchall()
        return [Spend(float(s), float(q), int(n)) for s, q, n in rows]

    def history(self) -> list[Spend]:
        """Every spend of this period and purpose, oldest first."""
        with self._connect() as db:
            return self._history(db)

    def spent(self) -> float:
        """ε spent so far in this period's pool, composed over its whole history."""
        return epsilon_of(self.history(), delta=self.budget.delta)

    def remaining(self) -> float:
        return max(0.0, self.budget.epsilon - self.spent())

    def after(self, spend: Spend) -> tuple[float, float]:
        """(ε spent now, ε spent if `spend` were charged): the figures a pre-flight check shows."""
        history = self.history()
        return (
            epsilon_of(history, delta=self.budget.delta),
            epsilon_of([*history, spend], delta=self.budget.delta),
        )

    def charge(self, spend: Spend, *, run_id: str, round: int) -> float:
        """Record `spend` in this ledger's pool if its budget allows it; return ε spent after.

        The check and the insert happen in one IMMEDIATE transaction. A spend the budget does not
        allow raises BudgetExceeded with the requested, remaining and budget figures, and
        records nothing. Charging the same (run, round, purpose) twice is refused as well.
        """
        purpose = self.purpose
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                history = self._history(db)
                before = epsilon_of(history, delta=self.budget.delta)
                after = epsilon_of([*history, spend], delta=self.budget.delta)
                if after > self.budget.epsilon:
                    raise BudgetExceeded(
                        requested=after - before,
                        spent=before,
                        budget=self.budget.epsilon,
                        what=f"{purpose} round {round} of run {run_id}",
                    )
                db.execute(
                    "INSERT INTO spends (recorded_at, period, purpose, run_id, round,"
                    " noise_multiplier, sample_rate, steps, epsilon_after)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        datetime.now(UTC).isoformat(),
                        self.period,
                        purpose,
                        run_id,
                        round,
                        spend.noise_multiplier,
                        spend.sample_rate,
                        spend.steps,
                        after,
                    ),
                )
                db.execute("COMMIT")
            except sqlite3.IntegrityError:
                db.execute("ROLLBACK")
                raise LedgerError(
                    f"ε ledger {self.path}: {purpose} round {round} of run {run_id} was already "
                    "charged; a round is never charged twice"
                ) from None
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return after

    def plan(self, run_id: str) -> Plan | None:
        """The plan saved for `run_id`, if any."""
        with self._connect() as db:
            row = db.execute(
                "SELECT noise_multiplier, sample_rate, steps_per_round, rounds, target_epsilon"
                " FROM plans WHERE period = ? AND run_id = ?",
                (self.period, run_id),
            ).fetchone()
        if row is None:
            return None
        return Plan(run_id, float(row[0]), float(row[1]), int(row[2]), int(row[3]), float(row[4]))

    def save_plan(self, plan: Plan) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO plans VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    self.period,
                    plan.run_id,
                    plan.noise_multiplier,
                    plan.sample_rate,
                    plan.steps_per_round,
                    plan.rounds,
                    plan.target_epsilon,
                ),
            )

    def run_history(self, run_id: str) -> list[Spend]:
        """The spends of one run, oldest first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT noise_multiplier, sample_rate, steps FROM spends"
                " WHERE period = ? AND purpose = ? AND run_id = ? ORDER BY id",
                (self.period, self.purpose, run_id),
            ).fetchall()
        return [Spend(float(s), float(q), int(n)) for s, q, n in rows]

    def periods(self) -> dict[str, list[Spend]]:
        """Every period in the ledger file with this purpose's spends (for audit reports)."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT period, noise_multiplier, sample_rate, steps FROM spends"
                " WHERE purpose = ? ORDER BY id",
                (self.purpose,),
            ).fetchall()
        out: dict[str, list[Spend]] = {}
        for period, s, q, n in rows:
            out.setdefault(str(period), []).append(Spend(float(s), float(q), int(n)))
        return out
