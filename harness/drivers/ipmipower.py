"""labgrid power over IPMI: the `IPMIPowerPort` resource and `IPMIPowerDriver`.

labgrid 26 has no IPMI power backend. This driver implements PowerProtocol (and, through
PowerResetMixin, ResetProtocol) with harness.ipmi, adding what ExternalPowerDriver
lacks: status, polling until the chassis reached the state, and retries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import attr
from labgrid.driver.common import Driver
from labgrid.driver.powerdriver import PowerResetMixin
from labgrid.factory import target_factory
from labgrid.protocol import PowerProtocol
from labgrid.resource.common import Resource
from labgrid.step import step

from ..ipmi import BMC, IPMITool
from ..paths import lab_file_path

_optional_str = attr.validators.optional(attr.validators.instance_of(str))


@target_factory.reg_resource
@attr.s(eq=False)
class IPMIPowerPort(Resource):
    """A host's BMC; the password comes from a file or an environment variable."""

    address: str = attr.ib(validator=attr.validators.instance_of(str))
    username: str = attr.ib(validator=attr.validators.instance_of(str))
    port: int = attr.ib(default=623, validator=attr.validators.instance_of(int))
    password_file: str | None = attr.ib(default=None, validator=_optional_str)
    password_env: str | None = attr.ib(default=None, validator=_optional_str)
    interface: str = attr.ib(default="lanplus", validator=attr.validators.instance_of(str))
    cipher_suite: int = attr.ib(default=3, validator=attr.validators.instance_of(int))

    def bmc(self, host: str) -> BMC:
        # A relative password_file is the lab file's neighbour, as `xenhil lab check` has it.
        lab_dir = Path(self.target.env.config.base) if self.target.env else Path.cwd()
        return BMC(
            host=host,
            address=self.address,
            port=self.port,
            username=self.username,
            password_file=(lab_file_path(self.password_file, lab_dir) if self.password_file
                           else None),
            password_env=self.password_env,
            interface=self.interface,
            cipher_suite=self.cipher_suite,
            password_file_as_written=self.password_file,
        )


@target_factory.reg_driver
@attr.s(eq=False)
class IPMIPowerDriver(Driver, PowerResetMixin, PowerProtocol):
    """Chassis power through the host's BMC; every action waits until the BMC
    reports the new state, so the next step starts from a known one."""

    bindings: ClassVar[dict[str, Any]] = {"port": "IPMIPowerPort"}
    state_timeout: float = attr.ib(default=30.0, validator=attr.validators.instance_of(float))
    # BMCs drop UDP packets under load: each ipmitool call is tried this often
    retries: int = attr.ib(default=3, validator=attr.validators.instance_of(int))
    retry_delay: float = attr.ib(default=4.0, validator=attr.validators.instance_of(float))

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.ipmi: IPMITool | None = None

    def on_activate(self) -> None:
        self.ipmi = IPMITool(self.port.bmc(self.target.name), retries=self.retries,
                             retry_delay=self.retry_delay)

    def on_deactivate(self) -> None:
        self.ipmi = None

    def _tool(self) -> IPMITool:
        assert self.ipmi is not None, "driver not active"
        return self.ipmi

    @Driver.check_active
    @step()
    def on(self) -> None:
        self._tool().power_on()
        self._tool().wait_power(True, self.state_timeout)

    @Driver.check_active
    @step()
    def off(self) -> None:
        self._tool().power_off()
        self._tool().wait_power(False, self.state_timeout)

    @Driver.check_active
    @step()
    def cycle(self) -> None:
        self._tool().power_cycle(off_timeout=self.state_timeout)
        self._tool().wait_power(True, self.state_timeout)

    @Driver.check_active
    @step()
    def get(self) -> bool:
        return self._tool().power_status()

    @Driver.check_active
    def poll(self) -> bool:
        """The power state, for a monitor thread: not a step, because labgrid's step
        log is one stack per process, owned by the thread that runs the steps."""
        return self._tool().power_status()

    @Driver.check_active
    def mc_info(self) -> str:
        """`ipmitool mc info` (the BMC's firmware revision, for the results database):
        a read, not a step, like poll."""
        return self._tool().mc_info()
