"""An xl command on a host, bounded by a named timeout of the host's timeout table;
its failure is Xen's (a product failure), reported with the end of its output."""

from __future__ import annotations

from .errors import ProductFailure
from .host import Host
from .remote import CommandResult

OUTPUT_TAIL = 3000  # characters of xl's output a failure message keeps, its end


def run_xl(host: Host, command: str, timeout: str, failure: str, *,
           error: type[ProductFailure] = ProductFailure) -> CommandResult:
    """Run `command` on `host` within timeouts[`timeout`]; if it fails or times out,
    raise `error` with "HOST: `failure`: `command`", why, and the output's end."""
    result = host.run(command, timeout=host.timeouts[timeout], check=False)
    if not result.ok:
        why = ("no exit within " + host.timeouts.describe(timeout)
               if result.exit_status is None else f"exit {result.exit_status}")
        raise error(f"{host.name}: {failure}: `{command}` {why}:\n"
                    f"{(result.stderr + result.stdout).strip()[-OUTPUT_TAIL:]}")
    return result
