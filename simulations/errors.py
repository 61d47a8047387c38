"""Errors raised by simulations: bad datasets, bad options."""


class SimulationError(Exception):
    """A simulation cannot run as asked. The message names what, the value and what is allowed."""


class DatasetError(SimulationError):
    """A dataset file is missing or does not have the shape its adapter documents."""
