"""What dom0 needs before it runs test guests: the guest's kernel and initramfs
copied over, xenconsoled logging guest consoles, and what is there for HVM guests.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from ..distro import distro
from ..errors import InfrastructureError
from ..host import Host

log = logging.getLogger(__name__)

GUEST_FILES_DIR = "/var/lib/xen/images/xenhil"  # kernel and initramfs on dom0
CONSOLE_LOG_DIR = "/var/log/xen/console"  # xenconsoled's default --log-dir


def device_models(host: Host) -> dict[str, bool]:
    """The device model paths libxenlight on the host names (what it execs for HVM
    guests) -> whether each exists."""
    found = host.run("grep -aoh '/[[:alnum:]/_.-]*qemu-system-i386' "
                     "/usr/lib*/libxenlight.so.* /usr/lib*/*/libxenlight.so.* "
                     "2>/dev/null | sort -u", check=False).stdout.split()
    return {path: host.run(f"test -x {shlex.quote(path)}", check=False).ok for path in found}


def device_model_missing(host: Host) -> str | None:
    """Why the host cannot run HVM guests for want of a device model, or None."""
    models = device_models(host)
    if not models:
        return f"{host.name}: libxenlight names no qemu-system-i386 device model"
    missing = [path for path, present in models.items() if not present]
    if len(missing) < len(models):
        return None
    return (f"{host.name}: HVM guests need the device model {', '.join(missing)} (named by "
            "libxenlight), which is not installed (Debian: package qemu-system-xen, not "
            "part of this build)")


def upload_guest_files(host: Host, files: Sequence[Path]) -> None:
    """Copy guest files (kernels, initramfs) to dom0 unless there already (their names
    carry their version: the kernel release, the initramfs's hash)."""
    host.run(f"mkdir -p {GUEST_FILES_DIR}")
    for local in files:
        remote = f"{GUEST_FILES_DIR}/{local.name}"
        if remote_size(host, remote) == local.stat().st_size:
            continue
        host.remote.put(local, remote + ".part")
        host.run(f"mv {shlex.quote(remote + '.part')} {shlex.quote(remote)}")



def remote_size(host: Host, path: str) -> int | None:
    """Bytes of the file `path` on dom0, None if there is none."""
    return host.remote.stat_size(path, timeout=host.timeouts["command"])


def ensure_console_logging(host: Host) -> None:
    """xenconsoled must log guest consoles to CONSOLE_LOG_DIR; configure it and
    restart it if it does not."""
    if _logs_guests(host):
        return
    log.info("%s: xenconsoled does not log guest consoles; configuring it", host.name)
    host.run(f"mkdir -p {CONSOLE_LOG_DIR} && {distro(host.spec.family).console_logging}")
    if not _logs_guests(host):
        raise InfrastructureError(f"{host.name}: xenconsoled still does not log guest "
                                  "consoles after its restart")


def _logs_guests(host: Host) -> bool:
    running = host.run("pgrep -a xenconsoled", check=False).stdout
    return re.search(r"--log[= ](guest|all)\b", running) is not None

