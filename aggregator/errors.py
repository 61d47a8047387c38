"""Errors raised on the district side. Each message says what, the value, what is allowed."""


class AggregatorError(Exception):
    """Base class for district-side errors."""


class QueryError(AggregatorError):
    """An analytics query file is missing, unreadable or breaks the query schema."""
