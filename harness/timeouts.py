"""The one timeout table. Every wait in the harness has a name here and a default.

Defaults follow what osstest and openQA use on real hosts (named per entry). A lab
file may override a default (`xenhil.timeouts`), and the lab's and the host's
`timeout_factor` scale it: the virtual lab under TCG sets 3.0.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

# name: (seconds, what is being waited for)
TIMEOUTS: dict[str, tuple[float, str]] = {
    "bmc_power_state": (30, "the BMC to report the requested power state"),
    "firmware": (60, "the first com1 output after power-on (firmware)"),
    "bootloader": (180, "GRUB on com1 after power-on (openQA: 180 s, then reset)"),
    "xen_banner": (120, "the Xen banner on com1 after GRUB"),
    "dom0_kernel": (120, "the dom0 Linux kernel on com1 after the Xen banner"),
    "login_prompt": (300, "dom0's login prompt on com1 after its kernel started"),
    "ssh_after_power_cycle": (600, "sshd answering after a power cycle (osstest: 600 s)"),
    "command": (60, "an ordinary command on a host"),
    "host_hang": (60, "a host that is up to answer SSH again before it counts as hung "
                  "(com1 silent too; three times this if com1 still prints)"),
    "package_install": (600, "installing a build's packages on a host"),
    "console_crash_dump": (5, "the rest of a crash dump after a panic is seen"),
    "debug_keys": (20, "Xen's output after debug keys are sent"),
    "xl_create": (100, "`xl create` of a guest to return (osstest: 100 s)"),
    "guest_boot": (40, "a created guest to be up: ready on its console, SSH (osstest: 40 s)"),
    "hvm_guest_boot": (120, "a created HVM guest to be up: its firmware first loads kernel "
                       "and initrd through the device model's emulated I/O"),
    "xl_shutdown": (200, "`xl shutdown -w` of a guest to return (osstest: 200 s)"),
    "xl_destroy": (40, "`xl destroy` of a guest to return (osstest: 40 s)"),
    "leak_settle": (20, "a destroyed guest's devices and xenstore paths to go"),
    "tcp_transfer": (120, "a test's TCP transfer between guest and host to finish"),
    "npiv_vport": (60, "a vport to show up in fc_vports and log in to the fabric (Active)"),
    "npiv_lun": (60, "a LUN to appear behind the target port on a new vport"),
    "npiv_vport_gone": (30, "a deleted vport to leave fc_vports (block-npiv waits 4 s)"),
    "support_collect": (600, "a support bundle from one host: collector, fetch, checks "
                        "(openQA: 600 s for supportconfig)"),
    "support_after_failure": (600, "the support bundles after a failed test, all the "
                              "hosts it used together"),
    "xl_save": (200, "`xl save` of a guest to return (osstest: 200 s)"),
    "xl_restore": (200, "`xl restore` of a guest to return (osstest: 200 s)"),
    "xl_migrate": (400, "`xl migrate` of a guest to return (osstest: 400 s)"),
    "guest_counter": (10, "a running guest's seconds counter to count on"),
    "host_session": (1800, "a host's session of one-host scenarios, beside the first "
                     "host's, to end once that one has (harness.sessions)"),
    "session_stop": (120, "a host's session to clean up and end after SIGTERM"),
    "results_db": (30, "the results database: a connection, another writer's lock, "
                   "one statement"),
}


@dataclass(frozen=True)
class Timeouts:
    """The table for one host: overrides applied, scaled by lab and host factors."""

    factor: float = 1.0
    overrides: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        unknown = [name for name, _ in self.overrides if name not in TIMEOUTS]
        if unknown:
            raise ConfigError(f"unknown timeout name(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(TIMEOUTS))}")

    def __getitem__(self, name: str) -> float:
        """Seconds to wait for `name`, scaled."""
        try:
            base = dict(self.overrides).get(name, TIMEOUTS[name][0])
        except KeyError:
            raise KeyError(f"no timeout named {name!r} in harness.timeouts") from None
        return base * self.factor

    def describe(self, name: str) -> str:
        return f"{name} ({self[name]:.0f} s: {TIMEOUTS[name][1]})"
