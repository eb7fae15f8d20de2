"""Power control through a BMC, with ipmitool over IPMI-over-LAN.

The password never appears on ipmitool's command line: it is passed with `-f FILE`
(a file the lab file names) or `-E` (the IPMI_PASSWORD environment variable, filled
from the environment variable the lab file names). Like openQA's IPMI backend, each
call is retried a few times, because BMCs drop UDP packets under load.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, InfrastructureError

log = logging.getLogger(__name__)


def bmc_secrets(bmc: BMC) -> tuple[str, ...]:
    """The BMC's password if it can be read here: what a host's transcripts must not
    show (RemoteHost's `secrets`)."""
    if bmc.password_env is not None:
        password = os.environ.get(bmc.password_env, "")
    elif bmc.password_file is not None:
        try:
            password = bmc.password_file.read_text().strip()
        except (OSError, UnicodeDecodeError):
            password = ""
    else:
        password = ""
    return (password,) if password else ()


class BMCError(InfrastructureError):
    """The BMC did not answer, refused us, or did not reach the requested state."""


@dataclass(frozen=True)
class BMC:
    """How to reach one host's BMC."""

    host: str
    address: str
    port: int = 623
    username: str = "admin"
    password_file: Path | None = None
    password_env: str | None = None
    interface: str = "lanplus"
    cipher_suite: int = 3
    # password_file as the lab file writes it, for messages: its ${VARIABLE}s expanded
    # may show a secret.
    password_file_as_written: str | None = None

    def __post_init__(self) -> None:
        if (self.password_file is None) == (self.password_env is None):
            raise ConfigError(
                f"host {self.host}: BMC needs exactly one of password_file or password_env"
            )


class IPMITool:
    """One BMC, driven by ipmitool; every call retried `retries` times."""

    def __init__(
        self,
        bmc: BMC,
        *,
        retries: int = 3,
        retry_delay: float = 4.0,
        call_timeout: float = 30.0,
    ) -> None:
        self.bmc = bmc
        self.retries = retries
        self.retry_delay = retry_delay
        self.call_timeout = call_timeout

    def command(self, args: list[str]) -> tuple[list[str], dict[str, str]]:
        """ipmitool's argv and environment for `args` against this BMC (the password in
        the environment or a file, never on argv)."""
        ipmitool = shutil.which("ipmitool")
        if ipmitool is None:
            raise ConfigError("ipmitool is not installed (Debian: apt-get install ipmitool)")
        bmc = self.bmc
        argv = [ipmitool, "-I", bmc.interface, "-H", bmc.address, "-p", str(bmc.port),
                "-U", bmc.username, "-R", "2", "-N", "2"]
        if bmc.interface == "lanplus":
            argv += ["-C", str(bmc.cipher_suite)]
        env = dict(os.environ)
        if bmc.password_file is not None:
            if not bmc.password_file.is_file():
                raise ConfigError(
                    f"host {bmc.host}: BMC password_file "
                    f"{bmc.password_file_as_written or bmc.password_file} does not exist")
            argv += ["-f", str(bmc.password_file)]
        else:
            assert bmc.password_env is not None
            password = os.environ.get(bmc.password_env)
            if password is None:
                raise ConfigError(
                    f"host {bmc.host}: BMC password_env {bmc.password_env} is not set"
                )
            env["IPMI_PASSWORD"] = password
            argv.append("-E")
        return argv + args, env

    def run(self, *args: str) -> str:
        """Run one ipmitool command against this BMC, with retries; return its stdout."""
        argv, env = self.command(list(args))
        last_problem = ""
        for attempt in range(1, self.retries + 1):
            try:
                done = subprocess.run(argv, env=env, capture_output=True, text=True,
                                      timeout=self.call_timeout, check=False)
            except subprocess.TimeoutExpired:
                last_problem = f"no answer within {self.call_timeout:.0f} s"
            else:
                if done.returncode == 0:
                    return done.stdout
                last_problem = (done.stderr.strip() or done.stdout.strip()
                                or f"exit code {done.returncode}")
            log.debug("%s: ipmitool %s failed (attempt %d/%d): %s", self.bmc.host,
                      " ".join(args), attempt, self.retries, last_problem)
            if attempt < self.retries:
                time.sleep(self.retry_delay)
        hint = ""
        if "RMCP+ session" in last_problem or "password" in last_problem.lower():
            hint = " (is the BMC up, and are the username and password right?)"
        raise BMCError(
            f"host {self.bmc.host}: BMC {self.bmc.address}:{self.bmc.port} "
            f"'ipmitool {' '.join(args)}' failed after {self.retries} attempts: "
            f"{last_problem}{hint}"
        )

    def power_status(self) -> bool:
        """True when the chassis reports power on."""
        out = self.run("chassis", "power", "status")
        if "is on" in out:
            return True
        if "is off" in out:
            return False
        raise BMCError(f"host {self.bmc.host}: unexpected power status answer: {out.strip()!r}")

    def power_on(self) -> None:
        self.run("chassis", "power", "on")

    def power_off(self) -> None:
        self.run("chassis", "power", "off")

    def mc_info(self) -> str:
        """`ipmitool mc info`: the BMC's device id, firmware revision, IPMI version."""
        return self.run("mc", "info")

    def power_cycle(self, off_timeout: float = 30.0) -> None:
        """Off, wait until the BMC reports off, then on: a new power-on every time.
        (ipmi_sim answers `chassis power cycle` of a machine that just reset itself,
        e.g. Xen rebooting after a dom0 crash, without restarting it.)"""
        if self.power_status():
            self.power_off()
            self.wait_power(False, off_timeout)
        self.power_on()

    def wait_power(self, on: bool, timeout: float, poll: float = 1.0) -> float:
        """Poll until the chassis reports `on`; return the seconds it took."""
        start = time.monotonic()
        while True:
            if self.power_status() == on:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise BMCError(
                    f"host {self.bmc.host}: power still {'off' if on else 'on'} "
                    f"{timeout:.0f} s after asking for {'on' if on else 'off'}"
                )
            time.sleep(poll)
