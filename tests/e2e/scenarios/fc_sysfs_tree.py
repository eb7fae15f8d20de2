"""FC transport sysfs trees, made on a real host under a directory of their own, laid out
as the kernel lays them out (Documentation/scsi/scsi_fc_transport.rst, "Device Trees
and Vport Objects"; attribute formats of drivers/scsi/scsi_transport_fc.c):

  devices/<pci>/hostN/fc_host/hostN/            physical port attributes
  devices/<pci>/hostN/vport-N:0-K/fc_vports/vport-N:0-K/   the vport's attributes
  devices/<pci>/hostN/vport-N:0-K/hostM/        the vport's scsi_host, with its
      fc_host/hostM/, rport-M:0-T/targetM:0:T/fc_transport/targetM:0:T/ (target port)
      and rport-M:0-T/targetM:0:T/M:0:T:L/{block/sdX, scsi_device/M:0:T:L}
  class/{fc_host,fc_vports,scsi_device,fc_transport,fc_remote_ports}/*  -> devices/...
  (each class device has a `device` link to the device it belongs to)

WWNs are written as the kernel prints them ("0x%llx": no leading zeros), numbers as
"%u". The kernel's write-only files (vport_create, vport_delete) are plain files here:
what the harness writes to them stays there to be read back.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

PCI = "pci0000:00/0000:00:03.0"
NPORT = "NPort (fabric via point-to-point)"


def kernel_wwn(wwn: str) -> str:
    return f"0x{int(wwn, 16):x}"


@dataclass
class FCTree:
    root: str  # the directory standing in for /
    directories: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)  # files and links, in order

    def _dir(self, path: str) -> None:
        self.directories.append(shlex.quote(self.root + path))

    def _file(self, path: str, value: str) -> None:
        self.commands.append(f"printf '%s\\n' {shlex.quote(value)} > "
                             f"{shlex.quote(self.root + path)}")

    def _link(self, path: str, target: str) -> None:
        self.commands.append(f"ln -sfn {shlex.quote(target)} {shlex.quote(self.root + path)}")

    def _class_device(self, cls: str, name: str, device_path: str) -> str:
        """devices/.../<device>/<cls>/<name>, linked from class/<cls>/<name>."""
        path = f"{device_path}/{cls}/{name}"
        self._dir(path)
        self._link(f"{path}/device", "../../../" + device_path.rsplit("/", 1)[1])
        self._dir(f"/sys/class/{cls}")
        self._link(f"/sys/class/{cls}/{name}", "../.." + path.removeprefix("/sys"))
        return path

    def port(self, host_no: int, *, port_name: str, node_name: str, fabric_name: str,
             port_state: str = "Online", port_type: str = NPORT, max_npiv_vports: int = 255,
             npiv_vports_inuse: int = 0, pci_function: int = 0) -> str:
        """A physical FC port (an HBA's fc_host) that can create vports."""
        device = f"/sys/devices/{PCI}/0000:05:00.{pci_function}/host{host_no}"
        self._dir(device)
        fc_host = self._class_device("fc_host", f"host{host_no}", device)
        self._attributes(fc_host, port_name=kernel_wwn(port_name),
                         node_name=kernel_wwn(node_name), fabric_name=kernel_wwn(fabric_name),
                         port_state=port_state, port_type=port_type,
                         max_npiv_vports=str(max_npiv_vports),
                         npiv_vports_inuse=str(npiv_vports_inuse),
                         vport_create="", vport_delete="")
        return device

    def vport(self, port_device: str, number: int, scsi_host_no: int, *, wwpn: str,
              wwnn: str, fabric_name: str, vport_state: str = "Active") -> str:
        """A vport on a port (what vport_create makes), with its own scsi_host."""
        parent_no = port_device.rsplit("host", 1)[1]
        name = f"vport-{parent_no}:0-{number}"
        device = f"{port_device}/{name}"
        self._dir(device)
        fc_vport = self._class_device("fc_vports", name, device)
        self._attributes(fc_vport, port_name=kernel_wwn(wwpn), node_name=kernel_wwn(wwnn),
                         vport_state=vport_state, vport_last_state="Unknown",
                         vport_type="NPIV VPORT", roles="FCP Initiator",
                         symbolic_name="", vport_delete="", vport_disable="")
        scsi_host = f"{device}/host{scsi_host_no}"
        self._dir(scsi_host)
        fc_host = self._class_device("fc_host", f"host{scsi_host_no}", scsi_host)
        self._attributes(fc_host, port_name=kernel_wwn(wwpn), node_name=kernel_wwn(wwnn),
                         fabric_name=kernel_wwn(fabric_name), port_state="Online",
                         port_type="NPIV VPORT")
        return scsi_host

    def lun(self, scsi_host: str, target_no: int, lun: int, *, target_wwpn: str,
            block: str) -> None:
        """A LUN of a target port seen through a SCSI host (a vport's)."""
        host_no = scsi_host.rsplit("host", 1)[1]
        rport = f"{scsi_host}/rport-{host_no}:0-{target_no}"
        target = f"{rport}/target{host_no}:0:{target_no}"
        self._dir(target)
        remote = self._class_device("fc_remote_ports", f"rport-{host_no}:0-{target_no}", rport)
        self._attributes(remote, port_name=kernel_wwn(target_wwpn), port_state="Online",
                         roles="FCP Target")
        transport = self._class_device("fc_transport", f"target{host_no}:0:{target_no}",
                                       target)
        self._attributes(transport, port_name=kernel_wwn(target_wwpn),
                         node_name=kernel_wwn(target_wwpn[:6] + "0" + target_wwpn[7:]),
                         port_id="0x010200")
        address = f"{host_no}:0:{target_no}:{lun}"
        sdev = f"{target}/{address}"
        self._dir(f"{sdev}/block/{block}")
        self._class_device("scsi_device", address, sdev)

    def _attributes(self, path: str, **values: str) -> None:
        for name, value in values.items():
            self._file(f"{path}/{name}", value)

    def scripts(self, *names: str, block_npiv: str | None = None) -> None:
        """Files standing in for /etc/xen/scripts/<name>; block-npiv with a text."""
        self._dir("/etc/xen/scripts")
        for name in names:
            self.commands.append(f": > {shlex.quote(self.root + '/etc/xen/scripts/' + name)}")
        if block_npiv is not None:
            self._file("/etc/xen/scripts/block-npiv", block_npiv)

    def script(self) -> str:
        """One command making the tree (one mkdir for every directory: forks are slow
        on a TCG host)."""
        return " && ".join([f"rm -rf {shlex.quote(self.root)}",
                            f"mkdir -p {shlex.quote(self.root + '/sys/class')} "
                            + " ".join(self.directories), *self.commands])
