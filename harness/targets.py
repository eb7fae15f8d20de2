"""The lab file's labgrid targets, for commands that act on a host outside a test run
(`xenhil power`, the run's preflight): power goes through labgrid's PowerProtocol,
as it does in tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from labgrid import Environment

from . import drivers  # noqa: F401  (registers our labgrid resources and drivers)
from .errors import ConfigError
from .lab import Lab


@contextlib.contextmanager
def lab_environment(lab: Lab) -> Iterator[Environment]:
    environment = Environment(str(lab.path))
    try:
        yield environment
    finally:
        environment.cleanup()


def power_of(environment: Environment, lab: Lab, name: str, *,
             retries: int | None = None) -> Any:
    """The active PowerProtocol driver of host `name`, waiting for power states as long
    as the timeout table says for that host."""
    target = environment.get_target(name)
    if target is None:
        raise ConfigError(f"{lab.path}: no labgrid target {name}")
    power = target.get_driver("PowerProtocol", activate=False)
    if hasattr(power, "state_timeout"):  # ours: the table's wait, scaled for this host
        power.state_timeout = lab.timeouts(lab.host(name))["bmc_power_state"]
    if retries is not None and hasattr(power, "retries"):
        power.retries, power.retry_delay = retries, 1.0
    target.activate(power)
    return power
