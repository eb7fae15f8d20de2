"""Pure logic of the test guest: xl config, MACs and addresses, image recipe pieces.
Inputs are recorded from the virtual lab's Debian 12 packages and hosts."""

from __future__ import annotations

import gzip
import ipaddress
import json
import lzma
import shutil
import struct
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.build_cache import VlabBuildError
from harness.errors import InfrastructureError
from harness.guests.config import (
    MAC_PREFIX,
    GuestAddresses,
    GuestConfig,
    bridge_network,
    guest_address,
    guest_mac,
)
from harness.guests.guest import (
    Guest,
    GuestFactory,
    GuestFailed,
    console_failure,
    gone_command,
)
from harness.guests.image import (
    READY_MARKER,
    GuestImage,
    compact_elf,
    elf_of_bzimage,
    installed_kernel,
    loaded_libraries,
    metapackage_kernel,
    module_closure,
    module_name,
)
from harness.guests.initramfs import Initramfs
from harness.health import HostBroken, HostHealth
from harness.timeouts import Timeouts

from .shell import stand_in

DATA = Path(__file__).parent.parent / "data" / "guests"
NETWORK = ipaddress.IPv4Network("198.51.100.0/24")


def config(**changes: object) -> GuestConfig:
    fields: dict[str, object] = {
        "name": "pv-guest-comes-up-1",
        "kernel": "/var/lib/xen/images/xenhil/vmlinuz-6.1.0-50-amd64",
        "ramdisk": "/var/lib/xen/images/xenhil/initrd-75856d31c362.gz",
        "address": "198.51.100.101/24",
        "mac": "00:16:3e:12:34:56",
    }
    fields.update(changes)
    return GuestConfig(**fields)  # type: ignore[arg-type]


def test_xl_config_of_a_pv_guest() -> None:
    lines = config().render().splitlines()
    assert 'name = "pv-guest-comes-up-1"' in lines
    assert 'type = "pv"' in lines
    assert 'kernel = "/var/lib/xen/images/xenhil/vmlinuz-6.1.0-50-amd64"' in lines
    assert 'ramdisk = "/var/lib/xen/images/xenhil/initrd-75856d31c362.gz"' in lines
    assert ('extra = "console=hvc0 xenhil.name=pv-guest-comes-up-1 '
            'xenhil.ip=198.51.100.101/24"') in lines
    assert "memory = 128" in lines
    assert "vcpus = 1" in lines
    assert 'vif = [ "mac=00:16:3e:12:34:56,bridge=xenbr0" ]' in lines
    assert 'on_crash = "preserve"' in lines


def test_xl_config_of_an_hvm_guest_puts_its_serial_port_in_a_file() -> None:
    guest = config(name="hvm-guest-1", type="hvm")
    lines = guest.render().splitlines()
    assert 'type = "hvm"' in lines
    # the same kernel, loaded by the firmware; the console is the emulated UART
    assert 'kernel = "/var/lib/xen/images/xenhil/vmlinuz-6.1.0-50-amd64"' in lines
    assert ('extra = "console=ttyS0 loglevel=4 pci=noearly xenhil.name=hvm-guest-1 '
            'xenhil.ip=198.51.100.101/24"') in lines
    assert guest.console_log == "/var/log/xen/console/hvm-hvm-guest-1.log"
    assert 'serial = "file:/var/log/xen/console/hvm-hvm-guest-1.log"' in lines
    assert 'vga = "none"' in lines and "vnc = 0" in lines
    # PV and PVH keep xenconsoled's log and have no device model lines
    pvh = config(type="pvh")
    assert pvh.console_log == "/var/log/xen/console/guest-pv-guest-comes-up-1.log"
    assert not [line for line in pvh.render().splitlines()
                if line.startswith(("serial", "vga", "vnc"))]


def test_xl_config_sizes_and_address() -> None:
    guest = config(memory_mb=256, vcpus=2)
    assert "memory = 256" in guest.render().splitlines()
    assert "vcpus = 2" in guest.render().splitlines()
    assert guest.ip == "198.51.100.101"


@pytest.mark.parametrize("name", ["", "a b", 'x"y', "-lead", "x" * 64, "a/b"])
def test_guest_names_that_xl_or_the_config_would_choke_on(name: str) -> None:
    with pytest.raises(ValueError, match="bad guest name"):
        config(name=name)


def test_macs_are_xen_macs_unique_within_a_run() -> None:
    macs = [guest_mac(0xABCDEF, index) for index in range(1000)]
    assert macs[0] == "00:16:3e:ab:cd:ef"
    assert macs[1] == "00:16:3e:ab:cd:f0"
    assert len(set(macs)) == len(macs)
    for mac in macs:
        assert mac.startswith(MAC_PREFIX + ":")
        assert len(mac) == 17 and mac == mac.lower()
    # the tail wraps around inside Xen's range
    assert guest_mac(0xFFFFFF, 1) == "00:16:3e:00:00:00"


def test_addresses_cycle_through_the_guest_range() -> None:
    assert str(guest_address(NETWORK, 0)) == "198.51.100.101/24"
    assert str(guest_address(NETWORK, 149)) == "198.51.100.250/24"
    assert str(guest_address(NETWORK, 150)) == "198.51.100.101/24"
    # a network of the guests alone (routed, NAT): from its first host number
    routed = ipaddress.IPv4Network("203.0.113.16/28")
    assert str(guest_address(routed, 0)) == "203.0.113.17/28"
    assert str(guest_address(routed, 13)) == "203.0.113.30/28"
    assert str(guest_address(routed, 14)) == "203.0.113.17/28"
    with pytest.raises(InfrastructureError, match="too small"):
        guest_address(ipaddress.IPv4Network("198.51.100.0/31"), 0)


def test_a_run_hands_out_distinct_macs_and_addresses() -> None:
    addresses = GuestAddresses(base=7)
    first, second = addresses.next(NETWORK), addresses.next(NETWORK)
    assert first == ("00:16:3e:00:00:07", "198.51.100.101/24")
    assert second == ("00:16:3e:00:00:08", "198.51.100.102/24")


def test_sessions_side_by_side_share_no_guest_address() -> None:
    sessions = [GuestAddresses(base=7, slot=slot, slots=3) for slot in range(3)]
    handed = [session.next(NETWORK) for _ in range(50) for session in sessions]
    assert len({address for _, address in handed}) == 150  # the whole pool, once each
    assert len({mac for mac, _ in handed}) == 150
    assert sessions[1].next(NETWORK)[1] == "198.51.100.102/24"  # wrapped: its own again
    with pytest.raises(ValueError, match=r"slot 3 is not one of 0\.\.2"):
        GuestAddresses(slot=3, slots=3)


def test_guest_network_from_the_bridge_address() -> None:
    output = (DATA / "ip-addr-xenbr0-dev1.txt").read_text()
    assert bridge_network(output) == NETWORK
    assert bridge_network("") is None


def test_console_of_a_guest_that_came_up() -> None:
    console = (DATA / "console-guest-up.log").read_text()
    assert console_failure(console) is None
    assert READY_MARKER in console


def test_console_failures_are_recognised() -> None:
    console = (DATA / "console-guest-up.log").read_text()
    error = "[2026-11-25 23:00:00] XENHIL-GUEST-ERROR no eth0 (xen-netfront found no vif)"
    failed = f"{console}{error}\n"
    assert console_failure(failed) == error
    panic = console + "[    3.1] Kernel panic - not syncing: VFS: Unable to mount root fs\n"
    assert console_failure(panic) is not None


def test_kernel_of_the_dom0_image() -> None:
    status = (DATA / "dpkg-status-dom0-excerpt").read_text()
    assert installed_kernel(status) == ("linux-image-6.1.0-50-amd64", "6.1.176-1")
    assert installed_kernel("Package: linux-image-amd64\nStatus: install ok installed\n") \
        is None


def bzimage(payload: bytes, *, setup_sects: int = 3, version: int = 0x20F) -> bytes:
    """A bzImage as the boot protocol lays it out: setup sectors with the header, then
    protected-mode code, the compressed payload and a tail."""
    setup = bytearray(((setup_sects or 4) + 1) * 512)  # 0 means 4
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, version)
    head = b"\x90" * 700  # decompressor code before the payload
    struct.pack_into("<II", setup, 0x248, len(head), len(payload))
    return bytes(setup) + head + payload + b"\x00" * 64


def test_vmlinux_out_of_a_bzimage() -> None:
    elf = b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 64
    assert elf_of_bzimage(bzimage(lzma.compress(elf, format=lzma.FORMAT_XZ)), "k") == elf
    assert elf_of_bzimage(bzimage(gzip.compress(elf), setup_sects=0), "k") == elf
    with pytest.raises(VlabBuildError, match="k: its payload is compressed neither"):
        elf_of_bzimage(bzimage(b"\x28\xb5\x2f\xfd" + elf), "k")
    with pytest.raises(VlabBuildError, match="does not decompress"):
        elf_of_bzimage(bzimage(gzip.compress(elf)[:40] + b"\xff" * 40), "k")
    with pytest.raises(VlabBuildError, match="no ELF"):
        elf_of_bzimage(bzimage(lzma.compress(b"MZ" + elf, format=lzma.FORMAT_XZ)), "k")
    with pytest.raises(VlabBuildError, match=r"boot protocol 2\.08"):
        elf_of_bzimage(bzimage(gzip.compress(elf), version=0x207), "k")


PT_LOAD, PT_NOTE = 1, 4


def elf_file(segments: list[tuple[int, int, bytes, int]]) -> bytes:
    """An ELF64 file laid out as vmlinux is: each segment (type, address, file bytes,
    memory size) at a 2 MiB-aligned offset, then section headers."""
    body = bytearray(0x200000)
    headers: list[tuple[int, ...]] = []
    for kind, address, data, memsz in segments:
        if kind == PT_NOTE:  # inside the segment before it, as in vmlinux
            offset = headers[-1][2] + address - headers[-1][3]
        else:
            body += bytes(-len(body) % 0x200000)
            offset = len(body)
            body += data
        headers.append((kind, 5, offset, address, address, len(data), memsz, 0x200000))
    shoff = len(body)
    body += b"\x5a" * 3 * 64
    header = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01".ljust(16, b"\0"), 2,
                         62, 1, 0x1000000, 64, shoff, 0, 64, 56, len(headers), 64, 3, 2)
    body[:64] = header
    for index, fields in enumerate(headers):
        struct.pack_into("<IIQQQQQQ", body, 64 + 56 * index, *fields)
    return bytes(body)


def loaded(elf: bytes) -> tuple[dict[int, bytes], list[bytes]]:
    """What a loader makes of `elf`: memory from each segment's address (its file
    bytes, zero-filled to its memory size), and the notes' bytes."""
    phoff, phnum = struct.unpack_from("<Q", elf, 0x20)[0], struct.unpack_from("<H", elf, 0x38)[0]
    memory: dict[int, bytes] = {}
    notes: list[bytes] = []
    for index in range(phnum):
        kind, _, offset, address, _, filesz, memsz, _ = struct.unpack_from(
            "<IIQQQQQQ", elf, phoff + 56 * index)
        data = elf[offset:offset + filesz]
        if kind == PT_LOAD:
            memory[address] = data + bytes(memsz - filesz)
        else:
            notes.append(data)
    return memory, notes


def test_compact_vmlinux_loads_the_same_memory_from_fewer_bytes() -> None:
    text = bytes(range(1, 256)) * 40 + b"\0\0"
    data = b"\x07" * 5000 + bytes(3000)
    bss_after_init = b"\x09" * 100 + bytes(300000)
    elf = elf_file([(PT_LOAD, 0x1000000, text, len(text)),
                    (PT_NOTE, 0x1000100, text[0x100:0x140], 0x40),
                    (PT_LOAD, 0x2a00000, data, len(data) + 4096),
                    (PT_LOAD, 0x3077000, bss_after_init, len(bss_after_init))])
    compact = compact_elf(elf, "vmlinux")
    assert loaded(compact) == loaded(elf)
    assert len(compact) < len(text) + 5000 + 100 + 3 * 4096
    assert struct.unpack_from("<QQ", compact, 0x20)[1] == 0  # no section headers
    assert struct.unpack_from("<HH", compact, 0x3C) == (0, 0)
    for index in range(4):
        _, _, offset, address = struct.unpack_from("<IIQQ", compact, 64 + 56 * index)
        assert offset % 4096 == address % 4096 or index == 1  # the note is not loaded


def test_compact_elf_refuses_what_it_cannot_move() -> None:
    text = b"\x01" * 1000 + bytes(1000)
    outside = elf_file([(PT_LOAD, 0x1000000, text, len(text)),
                        (PT_NOTE, 0x1000500, bytes(16), 16)])  # in the zeros that go
    with pytest.raises(VlabBuildError, match="vmlinux: a segment of type 0x4 lies outside"):
        compact_elf(outside, "vmlinux")
    big_endian = bytearray(outside)
    big_endian[5] = 2
    with pytest.raises(VlabBuildError, match="vmlinux: not a little-endian ELF64"):
        compact_elf(bytes(big_endian), "vmlinux")


def image_dir(directory: Path) -> Path:
    manifest = {"kernel": "vmlinuz-6.1.0-50-amd64", "elf_kernel": "vmlinux-6.1.0-50-amd64",
                "initrd": "initrd-0123456789ab.gz", "host_key": "key.pub",
                "kernel_release": "6.1.0-50-amd64", "packages": {}}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def test_pv_and_pvh_boot_the_elf_kernel_hvm_the_bzimage(tmp_path: Path) -> None:
    image = GuestImage.load(image_dir(tmp_path))
    assert image.kernel_for("pv").name == image.kernel_for("pvh").name \
        == "vmlinux-6.1.0-50-amd64"
    assert image.kernel_for("hvm").name == "vmlinuz-6.1.0-50-amd64"
    assert [path.name for path in image.files_for("pvh")] == [
        "vmlinux-6.1.0-50-amd64", "initrd-0123456789ab.gz"]
    assert [path.name for path in image.files_for("hvm")] == [
        "vmlinuz-6.1.0-50-amd64", "initrd-0123456789ab.gz"]


class SilentHost:
    """A dom0 whose guest never gets up: records how long the boot was waited for."""

    name = "vlab1"
    timeouts = Timeouts(factor=3.0)
    spec = SimpleNamespace(ssh=SimpleNamespace(key_file=None))

    def __init__(self) -> None:
        self.waited: list[float] = []
        self.remote = self
        self.health = HostHealth(self.name)

    def wait_for(self, what: str, condition: object, timeout: float,
                 interval: float = 1.0) -> float:
        self.waited.append(timeout)
        raise TimeoutError(what)

    def read(self, path: str, **options: object) -> bytes:
        return b"SeaBIOS (version 1.16.2-debian-1.16.2-1)\n"

    def run(self, command: str, check: bool = True) -> object:
        return type("Result", (), {"ok": False})()


@pytest.mark.parametrize("guest_type, waited", [("pv", 120), ("pvh", 120), ("hvm", 360)])
def test_an_hvm_guest_gets_longer_to_boot_through_its_firmware(
        tmp_path: Path, guest_type: str, waited: float) -> None:
    host = SilentHost()
    guest = Guest(config(type=guest_type), host, GuestImage.load(image_dir(tmp_path)))  # type: ignore[arg-type]
    with pytest.raises(GuestFailed, match=rf"not up within {waited} s \(no ready marker\)"):
        guest.wait_until_up(0.0)
    assert host.waited == [waited]


def test_kernel_of_the_metapackage() -> None:
    show = (DATA / "apt-cache-show-linux-image-amd64.txt").read_text()
    assert metapackage_kernel(show) == "linux-image-6.1.0-56-amd64=6.1.192-2"


def test_module_names_as_the_kernel_spells_them() -> None:
    assert module_name("kernel/drivers/net/xen-netfront.ko") == "xen_netfront"
    assert module_name("kernel/drivers/net/virtio_net.ko.xz") == "virtio_net"


def test_modules_with_what_they_need_first() -> None:
    dep = (DATA / "modules.dep-6.1.0-50-amd64-excerpt").read_text()
    builtin = (DATA / "modules.builtin-6.1.0-50-amd64-xen").read_text()
    assert module_closure(dep, builtin, ["xen-netfront", "xen-blkfront"]) == [
        "kernel/drivers/net/xen-netfront.ko", "kernel/drivers/block/xen-blkfront.ko"]
    order = module_closure(dep, builtin, ["snd-xen-front", "virtio_net"])
    assert order.index("kernel/sound/soundcore.ko") < order.index("kernel/sound/core/snd.ko")
    assert order.index("kernel/sound/core/snd-pcm.ko") < \
        order.index("kernel/sound/xen/snd_xen_front.ko")
    assert order.index("kernel/net/core/failover.ko") < \
        order.index("kernel/drivers/net/net_failover.ko") < \
        order.index("kernel/drivers/net/virtio_net.ko")
    assert len(order) == len(set(order)) == 11
    # built into the kernel: nothing to load
    assert module_closure(dep, builtin, ["xen-kbdfront"]) == []
    with pytest.raises(VlabBuildError, match="no-such-module"):
        module_closure(dep, builtin, ["no-such-module"])


def test_dropbear_libraries_from_the_guest_packages() -> None:
    tree = Path("/tmp/devlab/pkgs/root")  # where the listing was recorded
    found = dict(loaded_libraries((DATA / "ld.so-list-dropbear.txt").read_text(), tree))
    assert found["lib64/ld-linux-x86-64.so.2"] == \
        tree / "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    assert found["usr/lib/x86_64-linux-gnu/libtomcrypt.so.1"] == \
        tree / "usr/lib/x86_64-linux-gnu/libtomcrypt.so.1"
    assert found["lib/x86_64-linux-gnu/libc.so.6"] == tree / "lib/x86_64-linux-gnu/libc.so.6"
    assert len(found) == 7  # six libraries and the interpreter; no vdso


def test_a_library_from_outside_the_guest_packages_is_refused() -> None:
    listing = (DATA / "ld.so-list-dropbear-libs-outside.txt").read_text()
    with pytest.raises(VlabBuildError, match=r"libz\.so\.1, found only at /lib/"):
        loaded_libraries(listing, Path("/tmp/devlab/pkgs/root"))


@pytest.mark.skipif(shutil.which("cpio") is None, reason="needs cpio (Debian package cpio)")
def test_initramfs_archive_as_cpio_reads_it(tmp_path: Path) -> None:
    initramfs = Initramfs()
    initramfs.file("init", b"#!/bin/sh\necho hi\n", 0o755)
    initramfs.symlink("bin/sh", "/bin/busybox")
    initramfs.char_device("dev/console", 5, 1)
    initramfs.directory("root/.ssh", 0o700)
    initramfs.file("root/.ssh/authorized_keys", b"ssh-ed25519 AAAA\n", 0o600)
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=initramfs.cpio(),
                             capture_output=True, check=True).stdout.decode().splitlines()
    names = [line.split()[-1] if "->" not in line else line.split()[-3] for line in listing]
    assert names == ["bin", "bin/sh", "dev", "dev/console", "init", "root", "root/.ssh",
                     "root/.ssh/authorized_keys"]
    by_name = dict(zip(names, listing, strict=True))
    assert by_name["init"].startswith("-rwxr-xr-x")
    assert by_name["dev/console"].startswith("crw-------")
    assert "5,   1" in by_name["dev/console"]
    assert by_name["root/.ssh"].startswith("drwx------")
    assert by_name["bin/sh"].endswith("bin/sh -> /bin/busybox")
    assert all(" root     root " in line for line in listing)
    out = tmp_path / "extract"
    out.mkdir()
    subprocess.run(["cpio", "-id", "--quiet", "--no-absolute-filenames"], cwd=out,
                   input=initramfs.cpio(), check=True)
    assert (out / "init").read_bytes() == b"#!/bin/sh\necho hi\n"


def test_initramfs_refuses_paths_out_of_its_tree() -> None:
    initramfs = Initramfs()
    with pytest.raises(ValueError):
        initramfs.file("../etc/passwd", b"")
    initramfs.file("etc/passwd", b"")
    with pytest.raises(ValueError, match="twice"):
        initramfs.file("etc/passwd", b"")


class BootingGuests:
    """GuestFactory with its dom0 work stood in for: `_prepare_guest` makes the Guest,
    `Guest.create` waits until every guest's creation is under way, then takes
    `seconds` or raises the guest's error."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, count: int,
                 errors: dict[str, BaseException] | None = None,
                 seconds: dict[str, float] | None = None) -> None:
        image = GuestImage.load(image_dir(tmp_path))
        self.factory = GuestFactory(image, GuestAddresses(), prefix="two-hosts")
        self.started = threading.Barrier(count)
        self.up: list[str] = []
        factory, booting = self.factory, self

        def prepare(on: SilentHost, **options: object) -> Guest:
            guest = Guest(config(name=f"two-hosts-{len(factory.guests) + 1}",
                                 type=options.get("type", "pv")), on, image)  # type: ignore[arg-type]
            factory.guests.append(guest)
            return guest

        def create(guest: Guest) -> None:
            booting.started.wait(timeout=5)  # every creation is under way at once
            time.sleep((seconds or {}).get(guest.name, 0.0))
            if guest.name in (errors or {}):
                raise (errors or {})[guest.name]
            booting.up.append(guest.name)

        monkeypatch.setattr(factory, "_prepare_guest", prepare)
        monkeypatch.setattr(Guest, "create", create)


def test_guests_on_two_hosts_are_created_side_by_side(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    booting = BootingGuests(monkeypatch, tmp_path, count=2)
    here, there = SilentHost(), SilentHost()
    there.name = "vlab2"
    local, remote = booting.factory.on_each(here, there)  # type: ignore[arg-type]
    assert (local.host, remote.host) == (here, there)
    assert not booting.started.broken  # one after the other, the first waited in vain
    assert sorted(booting.up) == ["two-hosts-1", "two-hosts-2"]


def test_a_failed_creation_is_raised_after_the_other_guest_is_up(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    failure = GuestFailed("vlab1: guest two-hosts-1 failed to boot: Kernel panic")
    booting = BootingGuests(monkeypatch, tmp_path, count=2, errors={"two-hosts-1": failure})
    host = SilentHost()
    with pytest.raises(GuestFailed) as raised:
        booting.factory.on_each(host, host)  # type: ignore[arg-type]
    assert raised.value is failure
    assert booting.up == ["two-hosts-2"]
    assert len(booting.factory.guests) == 2  # both are destroyed after the test


def test_a_creation_that_never_ends_leaves_its_host_broken(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    booting = BootingGuests(monkeypatch, tmp_path, count=2, seconds={"two-hosts-2": 30})
    monkeypatch.setattr(Guest, "creation_deadline", 1.0)
    here, there = SilentHost(), SilentHost()
    there.name = "vlab2"
    begun = time.monotonic()
    with pytest.raises(HostBroken, match="vlab2: creating guest two-hosts-2 did not end "
                                         "within 1 s"):
        booting.factory.on_each(here, there)  # type: ignore[arg-type]
    assert time.monotonic() - begun < 5
    assert isinstance(there.health.broken, HostBroken) and here.health.broken is None


def test_every_creation_that_never_ends_leaves_its_host_broken(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    booting = BootingGuests(monkeypatch, tmp_path, count=2,
                            seconds={"two-hosts-1": 30, "two-hosts-2": 30})
    monkeypatch.setattr(Guest, "creation_deadline", 1.0)
    here, there = SilentHost(), SilentHost()
    there.name = "vlab2"
    with pytest.raises(HostBroken, match="vlab1: creating guest two-hosts-1"):
        booting.factory.on_each(here, there)  # type: ignore[arg-type]
    assert isinstance(here.health.broken, HostBroken)
    assert isinstance(there.health.broken, HostBroken)


def run_gone_wait(tmp_path: Path, name: str, seconds: float, *, listed_looks: int,
                  watch: str | None) -> tuple[int, list[str], float]:
    """gone_command through sh with stand-ins: an `xl` that lists the domain for its
    first `listed_looks` runs, and a `xenstore-watch` running `watch` (None: missing).
    Returns the exit status, the argv of each xl run, and the seconds taken."""
    bin_dir = tmp_path / "bin"
    looks = tmp_path / "looks"
    stand_in(bin_dir / "xl", f"printf '%s\\n' \"$*\" >> {looks}\n"
                             f"[ $(wc -l < {looks}) -le {listed_looks} ]\n")
    if watch is not None:
        stand_in(bin_dir / "xenstore-watch", f"{watch}\n")
    started = time.monotonic()
    exit_status = subprocess.run(["sh", "-c", gone_command(name, seconds)],
                                 env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
                                 check=False, timeout=30).returncode
    return exit_status, looks.read_text().splitlines(), time.monotonic() - started


def test_the_wait_for_a_guest_to_go_wakes_on_each_release(tmp_path: Path) -> None:
    name = "xenhil-x'$(touch PWNED)"
    exit_status, looks, took = run_gone_wait(tmp_path, name, 20, listed_looks=3,
                                             watch="sleep 0.1")
    assert exit_status == 0
    assert looks == [f"list {name}"] * 4  # the name verbatim, once per release
    assert took < 5
    assert not (tmp_path / "PWNED").exists()


def test_the_wait_for_a_guest_to_go_ends_at_its_deadline(tmp_path: Path) -> None:
    # without xenstore-watch it still looks about once a second, not in a busy loop
    exit_status, looks, took = run_gone_wait(tmp_path, "xenhil-stuck", 3,
                                             listed_looks=1000, watch=None)
    assert exit_status == 124
    assert 2 <= len(looks) <= 5
    assert 2.5 < took < 10
    # a watch that sees no release is cut at 2 s, and the domain looked at again
    exit_status, looks, took = run_gone_wait(tmp_path / "quiet", "xenhil-stuck", 5,
                                             listed_looks=1000, watch="sleep 60")
    assert exit_status == 124
    assert 2 <= len(looks) <= 4
