"""labgrid drivers and resources of the harness; importing this package registers them."""

from harness.drivers.com1console import Com1ConsoleDriver, Com1Port
from harness.drivers.ipmipower import IPMIPowerDriver, IPMIPowerPort

__all__ = ["Com1ConsoleDriver", "Com1Port", "IPMIPowerDriver", "IPMIPowerPort"]
