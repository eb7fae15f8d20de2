"""libxl's hotplug script timeout, and SUSE's per-device key that replaces it."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from .errors import InfrastructureError

if TYPE_CHECKING:
    from .host import Host

# SUSE's libxl reads this xenstore key (libxl.LIBXL_HOTPLUG_TIMEOUT.patch, bsc#1120095):
# seconds per disk (and NIC) that replace libxl's fixed 40 s hotplug script timeout.
HOTPLUG_TIMEOUT_KEY = "/libxl/suse/per-device-LIBXL_HOTPLUG_TIMEOUT"
LIBXL_HOTPLUG_TIMEOUT = 40  # seconds: libxl's own limit for one hotplug script
# What libxl logs when it kills a hotplug script at that limit (libxl_aoutils.c).
HOTPLUG_TIMEOUT_MESSAGE = "because of timeout"


def hotplug_timeout_key_support(host: Host) -> tuple[bool, str]:
    """Whether the build's libxl reads HOTPLUG_TIMEOUT_KEY: the key's path is a string
    constant in SUSE's libxenlight. Returns (supported, the evidence)."""
    libraries = host.run(
        "{ ldconfig -p | awk '/libxenlight\\.so/ {print $NF}'; "
        "find /usr/lib /usr/lib64 -name 'libxenlight.so*' -type f 2>/dev/null; } "
        "| xargs -r readlink -f | sort -u").stdout.split()
    if not libraries:
        raise InfrastructureError(f"{host.name}: no libxenlight found (ldconfig, /usr/lib*): "
                                  "is the Xen build installed?")
    quoted = " ".join(shlex.quote(library) for library in libraries)

    def containing(text: str) -> list[str]:
        found = host.run(f"grep -l -a -F {shlex.quote(text)} {quoted}", check=False)
        return found.stdout.split()

    # The search must find what every libxl has, or its "not found" means nothing.
    if not containing(HOTPLUG_TIMEOUT_MESSAGE):
        raise InfrastructureError(f"{host.name}: {HOTPLUG_TIMEOUT_MESSAGE!r} not found in "
                                  f"{', '.join(libraries)}: cannot tell what this libxl reads")
    with_key = containing(HOTPLUG_TIMEOUT_KEY)
    if with_key:
        return True, f"{', '.join(with_key)} contains {HOTPLUG_TIMEOUT_KEY}"
    return False, (f"this build's libxl does not read {HOTPLUG_TIMEOUT_KEY}: the string is "
                   f"not in {', '.join(libraries)}, which has libxl's own "
                   f"{HOTPLUG_TIMEOUT_MESSAGE!r} (SUSE's libxl.LIBXL_HOTPLUG_TIMEOUT.patch, "
                   "bsc#1120095, adds the key)")
