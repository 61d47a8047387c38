"""Errors raised while reading policy files."""


class PolicyError(Exception):
    """A policy file is missing, unreadable or invalid. The message names file and field."""
