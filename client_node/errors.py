"""Errors raised at a school node."""


class NodeError(Exception):
    """A node cannot do what it was asked. The message names what, the value and where."""


class TableError(NodeError):
    """A family table is missing, malformed or holds values outside the documented encoding."""
