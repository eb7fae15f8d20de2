"""What one virtual host is made of: its BMC configuration and its QEMU command line.

Each host N lives on its own loopback address 127.0.1.N, so every host uses the same
port numbers. The lab file names the ports that clients use (BMC, com1, SSH); the ports
used only between the BMC and its QEMU are fixed here.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from ..console_transport import RawTCPPort, RFC2217Port, SOLPort
from ..lab import HostSpec

# com1's chardev when the lab file reaches the console another way than QEMU's socket
# (ser2net in front of it, or Serial-over-LAN on com2).
COM1_PORT = 6231
SOL_PORT = 6232  # com2, wired to the BMC's Serial-over-LAN
BMC_VM_PORT = 6233  # QEMU's ipmi-bmc-extern connects here (power/reset of the VM)
LINK_PORT = 6240  # host-to-host network: UDP between the two hosts' loopback addresses


@dataclass(frozen=True)
class VirtualHost:
    """A host of the lab file, plus what only the virtual lab needs to know."""

    spec: HostSpec
    index: int
    memory_mb: int
    vcpus: int
    run_dir: Path
    peer_address: str | None  # the other end of the host-to-host link

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def address(self) -> str:
        return self.spec.bmc.address

    @property
    def overlay(self) -> Path:
        return self.run_dir / "disk.qcow2"

    @property
    def kept_disk_marker(self) -> Path:
        """Names the kept disk the host's overlay is on (harness/vlab/installed.py)."""
        return self.run_dir / "kept-disk"

    @property
    def qemu_pid_file(self) -> Path:
        return self.run_dir / "qemu.pid"

    @property
    def bmc_pid_file(self) -> Path:
        return self.run_dir / "ipmi_sim.pid"

    @property
    def bmc_log(self) -> Path:
        """ipmi_sim's output, and a timestamped line per power on and off of the machine;
        kept across restarts of the lab, so the runs that shared it can be told apart."""
        return self.run_dir / "ipmi_sim.log"

    @property
    def qemu_com1_log(self) -> Path:
        """QEMU's own copy of every com1 byte: the ground truth for our recorder."""
        return self.run_dir / "com1-qemu.log"

    @property
    def qemu_com2_log(self) -> Path:
        """QEMU's own copy of every com2 byte (what the BMC's Serial-over-LAN carries)."""
        return self.run_dir / "com2-qemu.log"

    @property
    def com1_server(self) -> tuple[str, int]:
        """Where QEMU serves com1: the lab file's raw TCP console, or COM1_PORT."""
        console = self.spec.console
        if isinstance(console, RawTCPPort):
            return console.host, console.port
        return self.address, COM1_PORT

    @property
    def com1_read(self) -> bool:
        """Whether the lab reads com1 (directly, or through a ser2net in front of it)."""
        return isinstance(self.spec.console, RawTCPPort | RFC2217Port)

    @property
    def com2_read(self) -> bool:
        """Whether the lab reads com2: through the BMC's Serial-over-LAN."""
        return isinstance(self.spec.console, SOLPort)

    @property
    def start_script(self) -> Path:
        return self.run_dir / "power-on.sh"

    def mac(self, nic: int) -> str:
        # The image derives hostname and addresses from these (see image.py).
        return f"52:54:00:58:{nic:02x}:{self.index:02x}"

    def listening_ports(self) -> list[tuple[str, int, str]]:
        """(address, port, protocol) of everything this host listens on while up."""
        spec = self.spec
        return [
            (spec.bmc.address, spec.bmc.port, "udp"),
            (self.address, BMC_VM_PORT, "tcp"),
            (*self.com1_server, "tcp"),
            (self.address, SOL_PORT, "tcp"),
            (spec.ssh.address, spec.ssh.port, "tcp"),
        ]

    def qemu_argv(self, qemu: str = "qemu-system-x86_64") -> list[str]:
        spec = self.spec
        com1_host, com1_port = self.com1_server
        argv = [
            qemu, "-name", f"xenhil-{self.name}",
            # TCG: no usable KVM here. graphics=off puts SeaBIOS's own output on the
            # serial port. qemu64 because plain `max` makes Xen fault dom0 on SMAP; it
            # has AMD SVM, and +npt adds nested paging, which Xen needs for PVH and HVM
            # guests when it has no shadow paging (Debian's 4.17 has none). +rdrand seeds
            # the kernels' RNG at once: a guest kernel waited 3 s for it under TCG.
            "-machine", "q35,accel=tcg,graphics=off",
            "-cpu", "qemu64,+npt,+rdrand",
            "-m", str(self.memory_mb), "-smp", str(self.vcpus),
            "-nodefaults", "-no-user-config", "-display", "none",
            # wait=on: the machine does not start until the com1 recorder is connected,
            # so the first byte is never lost (but nothing connects to a com1 nobody
            # reads). logfile: QEMU's own copy, for comparison.
            "-chardev", f"socket,id=com1,host={com1_host},port={com1_port},server=on,"
                        f"wait={'on' if self.com1_read else 'off'},"
                        f"logfile={self.qemu_com1_log},logappend=on",
            "-serial", "chardev:com1",
            # The same for com2 when SOL carries the console: the BMC connects to it
            # (again 10 s after a power cycle), and SOL misses nothing.
            "-chardev", f"socket,id=com2,host={self.address},port={SOL_PORT},server=on,"
                        f"wait={'on' if self.com2_read else 'off'},"
                        f"logfile={self.qemu_com2_log},logappend=on",
            "-serial", "chardev:com2",
            "-chardev", f"socket,id=ipmi0,host={self.address},port={BMC_VM_PORT},reconnect=2",
            "-device", "ipmi-bmc-extern,chardev=ipmi0,id=bmc0",
            "-device", "isa-ipmi-kcs,bmc=bmc0",
            # Management NIC: QEMU user network on documentation addresses, nothing
            # outside reachable (restrict=on), SSH forwarded from loopback. No option
            # ROMs (romfile=): no iPXE, the disk is the only boot device.
            "-netdev", f"user,id=mgmt,net=192.0.2.0/24,restrict=on,"
                       f"hostfwd=tcp:{spec.ssh.address}:{spec.ssh.port}-:22",
            "-device", f"virtio-net-pci,netdev=mgmt,mac={self.mac(1)},romfile=",
            "-drive", f"file={self.overlay},if=virtio,format=qcow2,cache=unsafe",
        ]
        if self.peer_address is not None:
            # UDP needs no listener, so either host can power on first.
            argv += [
                "-netdev", f"socket,id=link,udp={self.peer_address}:{LINK_PORT},"
                           f"localaddr={self.address}:{LINK_PORT}",
                "-device", f"virtio-net-pci,netdev=link,mac={self.mac(2)},romfile=",
            ]
        return argv

    def power_on_script(self) -> str:
        """What the BMC runs on power-on. It records its PID (exec keeps it) so that
        `xenhil vlab down` can stop QEMU by PID even if the BMC is gone, and writes
        `<UTC time> power on|off: machine PID <pid> ...` lines to the BMC's log: ipmi_sim
        logs no power action itself."""
        qemu_log = shlex.quote(str(self.run_dir / "qemu.log"))
        bmc_log = shlex.quote(str(self.bmc_log))
        now = "$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)"
        return (
            "#!/bin/sh\n"
            "# Run by ipmi_sim on 'chassis power on'; the process is the powered machine.\n"
            f"echo $$ > {shlex.quote(str(self.qemu_pid_file))}\n"
            f'echo "{now} power on: machine PID $$ started" >>{bmc_log}\n'
            "# Powered off however (BMC, vlab down, the machine itself): the PID is gone.\n"
            f'(tail -s 0.2 --pid=$$ -f /dev/null; echo "{now} power off: machine PID $$ '
            f'ended" >>{bmc_log}) </dev/null >/dev/null 2>&1 &\n'
            f"exec {shlex.join(self.qemu_argv())} >>{qemu_log} 2>&1\n"
        )

    def bmc_config(self, password: str) -> str:
        """ipmi_sim's lan.conf: IPMI over LAN on loopback, power = the QEMU process."""
        spec = self.spec
        return "\n".join([
            f'name "xenhil-{self.name}"',
            "set_working_mc 0x20",
            "  startlan 1",
            f"    addr {spec.bmc.address} {spec.bmc.port}",
            "    priv_limit admin",
            "    allowed_auths_admin md5",
            f"    guid {self.index:032x}",
            "  endlan",
            f"  serial 15 {self.address} {BMC_VM_PORT} codec VM ipmb 0x20",
            f'  sol "tcp:{self.address}:{SOL_PORT}" 115200',
            f'  startcmd "{self.start_script}"',
            "  startnow false",
            # QEMU has no guest agent to shut down gracefully: a short wait, then SIGTERM.
            "  poweroff_wait 2",
            "  kill_wait 5",
            f'  user 2 true "{spec.bmc.username}" "{password}" admin 10 md5',
            "",
        ])


BMC_COMMANDS = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
"""
