import subprocess
import sys
import textwrap

import pytest

from privacy.accountant import Spend, epsilon_of
from privacy.budget import Budget
from privacy.errors import BudgetExceeded, LedgerError
from privacy.ledger import EpsilonLedger, Plan

BUDGET = Budget(epsilon=3.0, delta=1e-5)
STEP = Spend(3.0, 0.05, 100)  # ε ≈ 0.72 alone


def test_ledger_persists_across_instances(tmp_path):
    path = tmp_path / "ledger.sqlite"
    first = EpsilonLedger(path, budget=BUDGET, period="2026-2027")
    after = first.charge(STEP, run_id="run-a", round=1)
    again = EpsilonLedger(path, budget=BUDGET, period="2026-2027")
    assert again.history() == [STEP]
    assert again.spent() == pytest.approx(after)
    assert after == pytest.approx(epsilon_of([STEP], delta=1e-5))


def test_ledger_composes_across_runs_and_refuses_with_figures(tmp_path):
    ledger = EpsilonLedger(tmp_path / "l.sqlite", budget=BUDGET, period="2026-2027")
    rounds = 0
    with pytest.raises(BudgetExceeded) as info:
        for r in range(1, 100):
            ledger.charge(STEP, run_id=f"run-{r}", round=1)
            rounds += 1
    spent = epsilon_of([STEP] * rounds, delta=1e-5)
    assert spent <= 3.0 < epsilon_of([STEP] * (rounds + 1), delta=1e-5)
    err = info.value
    assert (err.spent, err.budget) == (pytest.approx(spent), 3.0)
    assert err.remaining == pytest.approx(3.0 - spent)
    assert f"{3.0 - spent:.4f}" in str(err) and "3.0000" in str(err)
    assert len(ledger.history()) == rounds  # the refused spend left no trace


def test_periods_are_separate(tmp_path):
    path = tmp_path / "l.sqlite"
    EpsilonLedger(path, budget=BUDGET, period="2025-2026").charge(STEP, run_id="a", round=1)
    assert EpsilonLedger(path, budget=BUDGET, period="2026-2027").spent() == 0.0


def test_the_same_round_is_never_charged_twice(tmp_path):
    ledger = EpsilonLedger(tmp_path / "l.sqlite", budget=BUDGET, period="p")
    ledger.charge(STEP, run_id="a", round=1)
    with pytest.raises(LedgerError, match="already charged"):
        ledger.charge(STEP, run_id="a", round=1)
    assert len(ledger.history()) == 1


def test_plans_round_trip(tmp_path):
    ledger = EpsilonLedger(tmp_path / "l.sqlite", budget=BUDGET, period="p")
    plan = Plan("run-a", 1.5, 0.1, 20, 5, 3.0)
    ledger.save_plan(plan)
    assert ledger.plan("run-a") == plan
    assert ledger.plan("run-b") is None


def test_a_file_that_is_not_a_ledger_is_refused(tmp_path):
    path = tmp_path / "l.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LedgerError, match="not a readable SQLite ledger"):
        EpsilonLedger(path, budget=BUDGET, period="p")


def test_a_crash_mid_write_leaves_the_ledger_as_it_was(tmp_path):
    path = tmp_path / "l.sqlite"
    EpsilonLedger(path, budget=BUDGET, period="p").charge(STEP, run_id="a", round=1)
    # A process dies (no cleanup at all) after inserting a spend but before COMMIT.
    script = textwrap.dedent(
        f"""
        import os, sqlite3
        from privacy.ledger import EpsilonLedger
        from privacy.budget import Budget
        from privacy.accountant import Spend
        ledger = EpsilonLedger({str(path)!r}, budget=Budget(3.0, 1e-5), period="p")
        real_execute = sqlite3.Connection.execute

        class Dying(sqlite3.Connection):
            def execute(self, sql, *args):
                if sql == "COMMIT":
                    os._exit(9)
                return real_execute(self, sql, *args)

        original = sqlite3.connect
        sqlite3.connect = lambda *a, **k: original(*a, factory=Dying, **k)
        ledger.charge(Spend(3.0, 0.05, 100), run_id="b", round=1)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=".", capture_output=True)
    assert result.returncode == 9, result.stderr.decode()
    ledger = EpsilonLedger(path, budget=BUDGET, period="p")
    assert ledger.history() == [STEP]
    # and the ledger still works afterwards
    ledger.charge(STEP, run_id="c", round=1)
    assert len(ledger.history()) == 2


def test_a_committed_spend_survives_a_crash(tmp_path):
    path = tmp_path / "l.sqlite"
    script = textwrap.dedent(
        f"""
        import os
        from privacy.ledger import EpsilonLedger
        from privacy.budget import Budget
        from privacy.accountant import Spend
        ledger = EpsilonLedger({str(path)!r}, budget=Budget(3.0, 1e-5), period="p")
        ledger.charge(Spend(3.0, 0.05, 100), run_id="a", round=1)
        os._exit(9)
        """
    )
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    assert EpsilonLedger(path, budget=BUDGET, period="p").history() == [STEP]


def test_training_and_analytics_are_separate_pools_in_one_file(tmp_path):
    path = tmp_path / "l.sqlite"
    training = EpsilonLedger(path, budget=BUDGET, period="p")
    analytics = EpsilonLedger(path, budget=Budget(1.0, 2.5e-6), period="p", purpose="analytics")
    training.charge(STEP, run_id="a", round=1)
    query = Spend(5.0, 1.0, 1)  # a Gaussian query at σ/Δ = 5
    after = analytics.charge(query, run_id="q1", round=1)
    # each pool composes only its own spends, at its own δ
    assert training.history() == [STEP] and analytics.history() == [query]
    assert training.spent() == pytest.approx(epsilon_of([STEP], delta=1e-5))
    assert after == pytest.approx(epsilon_of([query], delta=2.5e-6))
    assert analytics.after(query) == (pytest.approx(after), epsilon_of([query] * 2, delta=2.5e-6))
    # the analytics pool refuses against the analytics budget, whatever training has left
    with pytest.raises(BudgetExceeded) as info:
        analytics.charge(Spend(1.0, 1.0, 1), run_id="q2", round=1)
    assert info.value.budget == 1.0 and info.value.spent == pytest.approx(after)
    assert "analytics round 1 of run q2" in str(info.value)
    assert len(analytics.history()) == 1 and len(training.history()) == 1
