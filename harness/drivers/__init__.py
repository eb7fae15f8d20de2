"""labgrid drivers, resources and the boot strategy of the harness; importing this
package registers them with labgrid (a lab file names them)."""

from harness.drivers.com1console import (
    Com1ConsoleDriver,
    Com1Port,
    IPMISOLPort,
    PlaceSerialPort,
)
from harness.drivers.ipmipower import IPMIPowerDriver, IPMIPowerPort
from harness.drivers.xenssh import XenSSHDriver
from harness.strategy import XenBootStrategy

__all__ = ["Com1ConsoleDriver", "Com1Port", "IPMIPowerDriver", "IPMIPowerPort", "IPMISOLPort",
           "PlaceSerialPort", "XenBootStrategy", "XenSSHDriver"]
