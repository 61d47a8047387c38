"""Errors raised by the federation package (deployment, certificates, processes)."""


class FederationError(Exception):
    """The federation cannot do what it was asked. The message names what, the value and where."""


class DeploymentError(FederationError):
    """A district or node deployment step failed: a file, a key, a process or a connection."""
