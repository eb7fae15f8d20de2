"""The two kinds of failure the harness keeps apart, all the way to the report.

A product failure (FAILED) is Xen or its tools misbehaving: a panic, a guest that does
not migrate. Infrastructure breakage (BROKEN) is the lab not doing its part: a BMC that
does not answer, a console that cannot connect, a host that never reaches SSH before Xen
printed anything. A broken host is recovered by power cycle, not reported as a Xen bug.
"""

from __future__ import annotations

import signal


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""


class ConfigError(HarnessError):
    """Bad input: found before anything touches a host."""


class InfrastructureError(HarnessError):
    """The lab broke (BMC, console, network, SSH), not the product."""


class ProductFailure(HarnessError, AssertionError):
    """Xen or its tools did not do what they promise.

    An AssertionError, so that pytest and allure report it as `failed`, while every
    other exception (InfrastructureError included) is reported as `broken`."""


class SignalInterrupt(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, as the KeyboardInterrupt pytest and the harness handle:
    `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signal.Signals(signum).name}")
        self.signum = signum
