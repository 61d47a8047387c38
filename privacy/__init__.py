"""Budgets, the ε ledger and the accountant: the privacy core that every other package builds on."""
