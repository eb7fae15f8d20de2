"""`xenhil vlab up | down | status`: the virtual lab's processes.

`up` starts one ipmi_sim BMC per host; the hosts stay off until someone powers them on
through IPMI, when the BMC runs the host's power-on script (which execs QEMU). Every
process is recorded by PID under the host's run directory, and `down` stops them by
those PIDs, QEMU first (even if the BMC is already gone), then the BMC.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InfrastructureError
from ..ipmi import BMCError, IPMITool
from ..lab import Lab
from ..paths import cache_dir
from .machine import BMC_COMMANDS, VirtualHost

log = logging.getLogger(__name__)

BMC_START_TIMEOUT = 10.0


class VlabError(InfrastructureError):
    """The virtual lab could not be started, stopped or inspected."""


def vlab_dir() -> Path:
    return cache_dir() / "vlab"


def bmc_password_file() -> Path:
    return vlab_dir() / "bmc-password"


def lab_run_dir(lab: Lab) -> Path:
    """What a running virtual lab keeps: one directory per host and the owner file.
    Per lab, so that two virtual labs (other machine indexes) run side by side."""
    return vlab_dir() / "run" / lab.name


def owner_file(lab: Lab) -> Path:
    """Which `xenhil run` started the running lab: {"pid", "run_id", "keep_up"}."""
    return lab_run_dir(lab) / "owner.json"


def read_owner(lab: Lab) -> dict[str, Any] | None:
    try:
        owner = json.loads(owner_file(lab).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return owner if isinstance(owner, dict) else None


def write_owner(lab: Lab, run_id: str, keep_up: bool) -> None:
    path = owner_file(lab)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": os.getpid(), "run_id": run_id, "keep_up": keep_up}))


def clear_owner(lab: Lab) -> None:
    owner_file(lab).unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def virtual_hosts(lab: Lab) -> list[VirtualHost]:
    """The lab's hosts as virtual machines; the lab file must have a `xenhil.vlab` section."""
    section = lab.options.get("vlab")
    if not isinstance(section, dict):
        raise ConfigError(f"{lab.path}: not a virtual lab (no xenhil.vlab section)")
    # load_lab checked the section: every host has an index of its own, from 1 to 254.
    hosts = [(name, spec, int(section["hosts"][name]["index"]))
             for name, spec in lab.hosts.items()]
    addresses = [spec.bmc.address for _, spec, _ in hosts]
    result = []
    for name, spec, index in hosts:
        peers = [address for address in addresses if address != spec.bmc.address]
        result.append(VirtualHost(
            spec=spec,
            index=index,
            memory_mb=int(section.get("memory_mb", 2048)),
            vcpus=int(section.get("vcpus", 1)),
            run_dir=lab_run_dir(lab) / name,
            # A point-to-point link: only a lab of exactly two hosts gets one.
            peer_address=peers[0] if len(peers) == 1 else None,
        ))
    return result


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def process_alive(pid: int, expected: str) -> bool:
    """True if `pid` runs and is the program we started (PIDs get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and expected.encode() in cmdline


def _stop(pid_file: Path, expected: str, what: str) -> int | None:
    """Stop the process of `pid_file` by its PID; returns the PID if it ran."""
    pid = _read_pid(pid_file)
    if pid is not None and process_alive(pid, expected):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while process_alive(pid, expected) and time.monotonic() < deadline:
            time.sleep(0.1)
        if process_alive(pid, expected):
            log.warning("%s (PID %d) ignored SIGTERM; killing it", what, pid)
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while process_alive(pid, expected) and time.monotonic() < deadline:
                time.sleep(0.05)
        _reap(pid)
        log.info("stopped %s (PID %d)", what, pid)
        pid_file.unlink(missing_ok=True)
        return pid
    pid_file.unlink(missing_ok=True)
    return None


def _await_power_off_line(host: VirtualHost, pid: int) -> None:
    """Until the BMC log has the power-off line of machine `pid`: its watcher polls
    (`tail -s 0.2`), and a run that gives its hosts back right after stopping the lab
    must find the line inside its window."""
    line = f"power off: machine PID {pid} ended"
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if host.bmc_log.exists() and line in host.bmc_log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    log.warning("%s: no power-off line for machine PID %d in %s", host.name, pid,
                host.bmc_log)


def _reap(pid: int) -> None:
    """Collect the exit status if the process was our child (started by `up` here)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def port_in_use(address: str, port: int, protocol: str) -> bool:
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as probe:
        # REUSEADDR: a TIME_WAIT left by a closed client is not a listener.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return True
    return False


def _identity(image: Path) -> str:
    """Which base image, exactly: a rebuild replaces the file (new inode, new mtime)."""
    stat = image.stat()
    return f"{image} {stat.st_ino} {stat.st_mtime_ns}\n"


def _base_of(host: VirtualHost) -> str:
    try:
        return (host.run_dir / "base-image").read_text()
    except FileNotFoundError:
        return ""


def _ensure_bmc_password() -> str:
    path = bmc_password_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(12) + "\n")
    return path.read_text().strip()


@dataclass(frozen=True)
class HostStatus:
    name: str
    bmc_pid: int | None
    qemu_pid: int | None
    power: str  # "on", "off", or why it is unknown
    ports: list[tuple[str, int, str]]

    @property
    def bmc_running(self) -> bool:
        return self.bmc_pid is not None


def machine_pid(host: VirtualHost) -> int | None:
    """The PID of the host's QEMU while it runs (the machine is powered on)."""
    pid = _read_pid(host.qemu_pid_file)
    return pid if pid is not None and process_alive(pid, "qemu-system") else None


def host_status(host: VirtualHost) -> HostStatus:
    bmc_pid = _read_pid(host.bmc_pid_file)
    if bmc_pid is not None and not process_alive(bmc_pid, "ipmi_sim"):
        bmc_pid = None
    qemu_pid = machine_pid(host)
    power = "BMC not running"
    if bmc_pid is not None:
        try:
            power = "on" if IPMITool(host.spec.bmc, retries=1).power_status() else "off"
        except (BMCError, ConfigError) as error:
            power = f"unknown ({error})"
    return HostStatus(host.name, bmc_pid, qemu_pid, power, host.listening_ports())


def up(lab: Lab, image: Path) -> list[HostStatus]:
    """Start a BMC for every host (hosts stay powered off). Idempotent."""
    for tool in ("ipmi_sim", "ipmitool", "qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None:
            raise ConfigError(f"{tool} is not installed: run `make setup` (or apt-get install "
                              "openipmi ipmitool qemu-system-x86 qemu-utils)")
    password = _ensure_bmc_password()
    statuses = []
    for host in virtual_hosts(lab):
        status = host_status(host)
        if status.bmc_running and _base_of(host) != _identity(image):
            # An overlay on a rebuilt base image would show the guest a corrupt disk.
            raise VlabError(f"{host.name} runs on an overlay of an older base image than "
                            f"{image}: run `xenhil vlab down`, then start it again")
        if status.bmc_running:
            log.info("%s: BMC already running (PID %s), power %s", host.name,
                     status.bmc_pid, status.power)
            statuses.append(status)
            continue
        _start_host(host, password, image)
        statuses.append(host_status(host))
    return statuses


def _start_host(host: VirtualHost, password: str, image: Path) -> None:
    # A QEMU left over from a BMC that died: stop it before reusing its ports.
    _stop(host.qemu_pid_file, "qemu-system", f"{host.name} QEMU")
    busy = [f"{address}:{port}/{protocol}" for address, port, protocol
            in host.listening_ports() if port_in_use(address, port, protocol)]
    if busy:
        raise VlabError(f"{host.name}: cannot start, already in use by another process: "
                        f"{', '.join(busy)}")
    _clear_run_dir(host)
    (host.run_dir / "state").mkdir(parents=True)
    host.run_dir.chmod(0o700)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                    "-b", str(image), str(host.overlay)], check=True)
    (host.run_dir / "base-image").write_text(_identity(image))
    host.start_script.write_text(host.power_on_script())
    host.start_script.chmod(0o700)
    config = host.run_dir / "lan.conf"
    config.write_text(host.bmc_config(password))
    config.chmod(0o600)
    commands = host.run_dir / "bmc.emu"
    commands.write_text(BMC_COMMANDS)
    with open(host.bmc_log, "ab") as bmc_log:
        bmc = subprocess.Popen(
            ["ipmi_sim", "-n", "-c", str(config), "-f", str(commands),
             "-s", str(host.run_dir / "state")],
            stdin=subprocess.DEVNULL, stdout=bmc_log, stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the shell must not kill the lab
        )
    host.bmc_pid_file.write_text(f"{bmc.pid}\n")
    deadline = time.monotonic() + BMC_START_TIMEOUT
    ipmi = IPMITool(host.spec.bmc, retries=1)
    while True:
        if bmc.poll() is not None:
            raise VlabError(f"{host.name}: ipmi_sim exited with {bmc.returncode}; see "
                            f"{host.bmc_log}")
        try:
            ipmi.power_status()
            break
        except BMCError as error:
            if time.monotonic() > deadline:
                _stop(host.bmc_pid_file, "ipmi_sim", f"{host.name} BMC")
                raise VlabError(f"{host.name}: BMC did not answer within "
                                f"{BMC_START_TIMEOUT:.0f} s: {error}") from None
            time.sleep(0.3)
    log.info("%s: BMC up on %s:%d (PID %d), host powered off", host.name,
             host.spec.bmc.address, host.spec.bmc.port, bmc.pid)


def _clear_run_dir(host: VirtualHost) -> None:
    """Everything an earlier start left (disk overlay, BMC state, logs) but the BMC's
    log, which goes on."""
    if not host.run_dir.exists():
        return
    for path in host.run_dir.iterdir():
        if path == host.bmc_log:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def down(lab: Lab) -> None:
    """Stop every process the virtual lab started, by PID; then check nothing listens."""
    hosts = virtual_hosts(lab)
    for host in hosts:
        # The BMC first: it starts QEMU (power on, power cycle), so with it still there
        # a QEMU could start after the one of the PID file was stopped.
        _stop(host.bmc_pid_file, "ipmi_sim", f"{host.name} BMC")
        machine = _stop(host.qemu_pid_file, "qemu-system", f"{host.name} QEMU")
        if machine is not None:
            _await_power_off_line(host, machine)
        # Stopped, the host is on no kept disk: `vlab up` gives it a new overlay.
        host.kept_disk_marker.unlink(missing_ok=True)
    # A killed process's sockets can take a moment to be released.
    deadline = time.monotonic() + 5
    while True:
        left = [f"{host.name} {address}:{port}/{protocol}" for host in hosts
                for address, port, protocol in host.listening_ports()
                if port_in_use(address, port, protocol)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if left:
        raise VlabError("after stopping the virtual lab these ports are still in use: "
                        + ", ".join(left))
