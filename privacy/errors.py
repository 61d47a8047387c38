"""Errors raised by the privacy package. Each message says what, the value, what is allowed."""


class PrivacyError(Exception):
    """Base class for privacy errors."""


class InvalidBudget(PrivacyError, ValueError):
    """A privacy parameter is NaN, negative or otherwise outside its allowed range."""


class BudgetExceeded(PrivacyError):
    """A spend would take a ledger past its budget. Carries the figures for the message."""

    def __init__(self, *, requested: float, spent: float, budget: float, what: str) -> None:
        self.requested = requested
        self.spent = spent
        self.budget = budget
        self.remaining = max(0.0, budget - spent)
        super().__init__(
            f"refused {what}: it needs ε {requested:.4f} but only {self.remaining:.4f} of the "
            f"budget {budget:.4f} remains (spent {spent:.4f})"
        )


class LedgerError(PrivacyError):
    """The ledger file is unreadable or belongs to another policy set-up."""
