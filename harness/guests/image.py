"""The test guest's image: a Debian kernel and a small initramfs, from Debian packages.

The kernel is the one the virtual lab's dom0 image has (read from its package list),
else the candidate of linux-image-amd64. PV and PVH guests boot its ELF image
(vmlinux), taken out of the bzImage here: libxenlight then loads it as it is, where
it would decompress the bzImage's xz payload in dom0 on every `xl create` (4 of the
5 s of a create under TCG). Its segments are packed without their trailing zeros
(compact_elf), which halves what is uploaded, read and copied. HVM guests boot the
bzImage through their firmware.

The initramfs holds busybox-static, dropbear (SSH) with exactly the shared libraries
it loads, the kernel modules a PV guest needs (xen-netfront, xen-blkfront and what
modules.dep says they need) and an /init that: mounts proc, sys, dev; loads the
modules; configures eth0 from the kernel command line (`xenhil.ip=ADDR/LEN`,
`xenhil.name=NAME`, optional `xenhil.gw=ADDR`); starts SSH and a counter that counts
seconds into /run/counter; prints READY_MARKER on the console; then hands over to
busybox init, which keeps a shell on the console and powers the guest off
when Xen asks it to (`xl shutdown`).

Root logs in over SSH with the keys given (the lab's SSH keys); the guest's host key
is generated here, so the harness can pin it.

Cached under ``cache/vlab/guest`` with the rules of every cached artifact
(build_cache.py): a stamp with the recipe's hash, built in a temporary directory and
moved into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import lzma
import re
import shutil
import struct
import tempfile
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..build_cache import (
    VlabBuildError,
    cache_lock,
    dom0_dpkg_status,
    publish,
    remove_stale_temps,
    remove_tree,
    require_tools,
    run,
    stage,
    stamp_matches,
    tail,
)
from ..debian_packages import PrivateApt, deb822_fields, deb_fields, unpack
from .initramfs import Initramfs

log = logging.getLogger(__name__)

# Everything in the initramfs but the kernel's modules. dropbear's libraries are
# taken from these (the build fails, naming the library, if one is missing).
PACKAGES = (
    "busybox-static",
    "dropbear-bin",
    "libc6",
    "libcrypt1",
    "libtomcrypt1",
    "libtommath1",
    "libgmp10",
    "zlib1g",
)
KERNEL_METAPACKAGE = "linux-image-amd64"
MODULES = ("xen-netfront", "xen-blkfront")
READY_MARKER = "XENHIL-GUEST-READY"  # then: name, address, seconds since kernel start
ERROR_MARKER = "XENHIL-GUEST-ERROR"  # then: what went wrong in /init
STOP_MARKER = "XENHIL-GUEST-STOPPING"  # busybox init begins the poweroff
BUSYBOX = "bin/busybox"
DROPBEAR = "usr/sbin/dropbear"
DROPBEARKEY = "usr/bin/dropbearkey"
LOADER = "lib64/ld-linux-x86-64.so.2"  # the interpreter of every amd64 binary
HOST_KEY = "etc/dropbear/dropbear_ed25519_host_key"
TOOLS = {"apt-get": "apt", "apt-cache": "apt", "dpkg-deb": "dpkg", "depmod": "kmod"}

INIT = r"""#!/bin/sh
# PID 1 of the xen-hil test guest (built by harness/guests/image.py).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run
failed=
fail() { echo "XENHIL-GUEST-ERROR $*"; failed=1; }

name=guest
ip=
gw=
for arg in $(cat /proc/cmdline); do
    case $arg in
        xenhil.name=*) name=${arg#*=} ;;
        xenhil.ip=*) ip=${arg#*=} ;;
        xenhil.gw=*) gw=${arg#*=} ;;
    esac
done
hostname "$name"

while read -r module; do
    insmod "/lib/modules/$module" || fail "cannot load $module"
done < /etc/xenhil/modules

ip link set lo up
# netfront registers eth0 once it has met its backend in dom0
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
if [ -z "$ip" ]; then
    fail "no xenhil.ip= on the kernel command line"
elif [ ! -e /sys/class/net/eth0 ]; then
    fail "no eth0 (xen-netfront found no vif)"
elif ! ip addr add "$ip" dev eth0 || ! ip link set eth0 up; then
    fail "cannot configure eth0 with $ip"
elif [ -n "$gw" ] && ! { ip route add "$gw" dev eth0 && ip route add default via "$gw"; }; then
    # routed and NAT guests: the gateway is dom0's end of the vif, outside our network
    fail "cannot route through $gw"
else
    # Announce our MAC: dom0 may still cache an earlier guest's MAC for this address,
    # and would send it our packets for seconds.
    arping -q -U -c 3 -I eth0 "${ip%/*}" &
fi

# dropbear needs the kernel's random generator: wait for it here, so that SSH answers
# at once when the marker says ready (reading /dev/random blocks until it is seeded).
head -c 1 /dev/random > /dev/null
/usr/sbin/dropbear -F -E -s -p 22 -r /etc/dropbear/dropbear_ed25519_host_key \
    -P /run/dropbear.pid &
listening() { grep -q ':0016 [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null; }
n=0
while ! listening && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
listening || fail "dropbear does not listen on port 22"

# Counts seconds from here on: a migrated guest keeps counting, a rebooted one restarts.
(n=0; while :; do n=$((n + 1)); echo $n > /run/counter.new; mv /run/counter.new /run/counter;
    sleep 1; done) &

[ -z "$failed" ] && echo "XENHIL-GUEST-READY $name $ip $(cut -d' ' -f1 /proc/uptime)"
exec /sbin/init
"""
INITTAB = """\
# busybox init, after /init: a shell on the console; Xen's shutdown request comes
# as the kernel running /sbin/poweroff, which signals init to run this and power off.
hvc0::respawn:-/bin/sh
::shutdown:/bin/echo XENHIL-GUEST-STOPPING
"""
FILES = {
    "init": (INIT, 0o755),
    "etc/inittab": (INITTAB, 0o644),
    "etc/passwd": ("root:x:0:0:root:/root:/bin/sh\n", 0o644),
    "etc/group": ("root:x:0:\n", 0o644),
    "etc/shells": ("/bin/sh\n", 0o644),
    "etc/nsswitch.conf": ("passwd: files\ngroup: files\nshadow: files\nhosts: files\n", 0o644),
    "etc/hosts": ("127.0.0.1 localhost\n", 0o644),
}
DIRECTORIES = {"proc": 0o555, "sys": 0o555, "dev": 0o755, "run": 0o755, "tmp": 0o1777,
               "root": 0o700, "root/.ssh": 0o700, "var/log": 0o755, "mnt": 0o755}


@dataclass(frozen=True)
class GuestImage:
    """A built guest image: what a guest's xl config names as kernel and ramdisk."""

    directory: Path
    kernel: Path  # the bzImage, as the kernel package has it: HVM guests boot it
    elf_kernel: Path  # its vmlinux: PV and PVH guests boot it
    initrd: Path
    host_key: Path  # the guest's SSH host public key (OpenSSH format), for pinning
    kernel_release: str  # uname -r of the guest kernel
    packages: dict[str, str]  # Debian package -> version, kernel included

    @classmethod
    def load(cls, directory: Path) -> GuestImage:
        manifest = json.loads((directory / "manifest.json").read_text())
        return cls(
            directory=directory,
            kernel=directory / manifest["kernel"],
            elf_kernel=directory / manifest["elf_kernel"],
            initrd=directory / manifest["initrd"],
            host_key=directory / manifest["host_key"],
            kernel_release=manifest["kernel_release"],
            packages=manifest["packages"],
        )

    def kernel_for(self, guest_type: str) -> Path:
        """The kernel file a guest of `guest_type` (pv, pvh, hvm) boots."""
        return self.kernel if guest_type == "hvm" else self.elf_kernel

    def files_for(self, guest_type: str) -> tuple[Path, Path]:
        """What dom0 needs for a guest of `guest_type`: its kernel and the initramfs."""
        return self.kernel_for(guest_type), self.initrd


def build_guest_image(cache: Path, authorized_keys: Sequence[str], *,
                      force: bool = False) -> GuestImage:
    """Builds the guest image under `cache`/vlab/guest, or returns the cached one if
    its recipe is unchanged. `authorized_keys`: OpenSSH public key lines for root."""
    root = cache / "vlab"
    directory = root / "guest"
    stamp = root / ".guest.stamp"
    kernel = _kernel_wanted(cache)
    recipe = recipe_hash(kernel, authorized_keys)
    root.mkdir(parents=True, exist_ok=True)
    with cache_lock(root):
        if not force and stamp_matches(stamp, recipe, (directory / "manifest.json",)):
            log.info("guest image up to date: %s", directory)
            return GuestImage.load(directory)
        require_tools(TOOLS)
        remove_stale_temps(root, ".guest-")
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=".guest-", dir=root))
        try:
            out = tmp / "guest"
            out.mkdir()
            _build(tmp, out, kernel, authorized_keys)
            publish({out: directory}, stamp, recipe,
                    {"seconds": round(time.monotonic() - started)})
        finally:
            remove_tree(tmp)
    image = GuestImage.load(directory)
    log.info("guest image built in %.0f s: kernel %s, %s (%.1f MB)",
             time.monotonic() - started, image.kernel_release, image.initrd.name,
             image.initrd.stat().st_size / 1e6)
    return image


def recipe_hash(kernel: str, authorized_keys: Sequence[str]) -> str:
    """Hash of everything that decides the guest image's content."""
    recipe = {
        "kernel": kernel,
        "kernel_files": ("bzImage", "vmlinux compacted"),
        "packages": PACKAGES,
        "modules": MODULES,
        "files": FILES,
        "directories": DIRECTORIES,
        "authorized_keys": sorted(authorized_keys),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def _kernel_wanted(cache: Path) -> str:
    """`name=version` of the dom0 image's kernel package, else the metapackage's name
    (its candidate is resolved when building)."""
    status = dom0_dpkg_status(cache)
    if status.exists():
        found = installed_kernel(status.read_text())
        if found is not None:
            return f"{found[0]}={found[1]}"
    return KERNEL_METAPACKAGE


def installed_kernel(dpkg_status: str) -> tuple[str, str] | None:
    """(package, version) of the installed Debian kernel image in a dpkg status file."""
    for stanza in dpkg_status.split("\n\n"):
        fields = deb822_fields(stanza)
        if (re.fullmatch(r"linux-image-\d.*-amd64", fields.get("package", ""))
                and fields.get("status") == "install ok installed"):
            return fields["package"], fields["version"]
    return None


def metapackage_kernel(apt_cache_show: str) -> str:
    """`name=version` of the kernel package a linux-image-amd64 stanza depends on."""
    depends = deb822_fields(apt_cache_show.split("\n\n")[0]).get("depends", "")
    match = re.search(r"(linux-image-[^\s,(]+)\s*\(=\s*([^)\s]+)\)", depends)
    if match is None:
        raise VlabBuildError(f"{KERNEL_METAPACKAGE} depends on no exact kernel: {depends!r}")
    return f"{match.group(1)}={match.group(2)}"


def _build(tmp: Path, out: Path, kernel: str, authorized_keys: Sequence[str]) -> None:
    debs, tree = tmp / "debs", tmp / "root"
    debs.mkdir()
    apt = PrivateApt(tmp / "apt")
    with stage("apt-get update (guest packages)", log):
        apt.update()
    if "=" not in kernel:
        kernel = metapackage_kernel(apt.show(kernel))
    with stage(f"download {kernel} and {len(PACKAGES)} packages", log):
        downloaded = apt.download([kernel, *PACKAGES], debs)
    packages: dict[str, str] = {}
    with stage("unpack", log):
        for deb in downloaded:
            fields = deb_fields(deb, "Package", "Version")
            packages[fields["package"]] = fields["version"]
            unpack(deb, tree)
    releases = sorted(p.name for p in (tree / "lib/modules").iterdir())
    if len(releases) != 1:
        raise VlabBuildError(f"expected one kernel in {kernel}, found {releases}")
    release = releases[0]
    initramfs = Initramfs()
    with stage("initramfs", log):
        _add_base(initramfs, tree)
        modules = _add_modules(initramfs, tree, release)
        _add_ssh(initramfs, tree, authorized_keys, out / "ssh_host_ed25519_key.pub")
        staged_initrd = out / "initrd.gz"
        size = initramfs.write(staged_initrd)
    digest = hashlib.sha256(staged_initrd.read_bytes()).hexdigest()[:12]
    initrd = staged_initrd.rename(out / f"initrd-{digest}.gz")
    vmlinuz = out / f"vmlinuz-{release}"
    shutil.copyfile(tree / "boot" / f"vmlinuz-{release}", vmlinuz)
    vmlinux = out / f"vmlinux-{release}"
    with stage(f"vmlinux out of {vmlinuz.name}", log):
        vmlinux.write_bytes(compact_elf(elf_of_bzimage(vmlinuz.read_bytes(), vmlinuz.name),
                                        vmlinux.name))
    manifest = {
        "kernel": vmlinuz.name,
        "elf_kernel": vmlinux.name,
        "initrd": initrd.name,
        "host_key": "ssh_host_ed25519_key.pub",
        "kernel_release": release,
        "packages": packages,
        "modules": modules,
        "initrd_bytes": size,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


# The x86 boot protocol's setup header (Documentation/arch/x86/boot.rst): setup_sects,
# the "HdrS" magic and version, and (from 2.08) where the compressed kernel is.
SETUP_SECTS, HEADER_MAGIC, HEADER_VERSION, PAYLOAD = 0x1F1, 0x202, 0x206, 0x248


def elf_of_bzimage(bzimage: bytes, name: str) -> bytes:
    """The vmlinux (ELF) inside a bzImage: its payload, decompressed. Debian's kernels
    are xz; gzip is read too. `name` is for errors."""
    if bzimage[HEADER_MAGIC:HEADER_MAGIC + 4] != b"HdrS" \
            or struct.unpack_from("<H", bzimage, HEADER_VERSION)[0] < 0x208:
        raise VlabBuildError(f"{name}: not a bzImage of boot protocol 2.08 or later")
    offset, length = struct.unpack_from("<II", bzimage, PAYLOAD)
    start = ((bzimage[SETUP_SECTS] or 4) + 1) * 512 + offset
    payload = bzimage[start:start + length]
    try:
        if payload.startswith(b"\xfd7zXZ\x00"):
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
        elif payload.startswith(b"\x1f\x8b"):
            elf = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(payload)
        else:
            raise VlabBuildError(f"{name}: its payload is compressed neither with xz nor "
                                 f"gzip (starts {payload[:6].hex()})")
    except (lzma.LZMAError, zlib.error) as error:
        raise VlabBuildError(f"{name}: its payload does not decompress: {error}") from None
    if not elf.startswith(b"\x7fELF"):
        raise VlabBuildError(f"{name}: its payload decompresses to no ELF file")
    return elf


# ELF64, little-endian (gABI): the file header and a program header.
ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")
PT_LOAD = 1
PAGE = 4096


def compact_elf(elf: bytes, name: str) -> bytes:
    """`elf` with its loadable segments packed one after the other, each without its
    trailing zeros, and no section headers. A loader zero-fills a segment from its
    file size to its memory size, so the guest's memory is the same: Debian's vmlinux
    stores its .bss and .brk as 21 MB of zeros. libxenlight finds the Xen notes
    through the PT_NOTE segment, which is moved with the segment that holds it."""
    fields = list(ELF_HEADER.unpack_from(elf))
    ident, phoff, phentsize, phnum = fields[0], fields[5], fields[9], fields[10]
    if ident[4:6] != b"\x02\x01" or phentsize != PROGRAM_HEADER.size:
        raise VlabBuildError(f"{name}: not a little-endian ELF64 file")
    headers = [list(PROGRAM_HEADER.unpack_from(elf, phoff + index * phentsize))
               for index in range(phnum)]
    out = bytearray(ELF_HEADER.size + phnum * PROGRAM_HEADER.size)
    moves = []  # (old offset, kept bytes, new offset) of each loadable segment
    for header in headers:
        if header[0] != PT_LOAD:
            continue
        offset, vaddr, filesz = header[2], header[3], header[5]
        data = elf[offset:offset + filesz].rstrip(b"\0")
        # A loadable segment's offset and address agree modulo its alignment (gABI).
        out += bytes(-(len(out) - vaddr) % PAGE)
        moves.append((offset, len(data), len(out)))
        header[2], header[5], header[7] = len(out), len(data), PAGE
        out += data
    for header in headers:
        if header[0] == PT_LOAD:
            continue
        offset, filesz = header[2], header[5]
        holder = next(((new + offset - old) for old, kept, new in moves
                       if old <= offset and offset + filesz <= old + kept), None)
        if holder is None and filesz:
            raise VlabBuildError(f"{name}: a segment of type {header[0]:#x} lies outside "
                                 "the loadable ones")
        header[2] = holder or 0
    for index, header in enumerate(headers):
        PROGRAM_HEADER.pack_into(out, ELF_HEADER.size + index * PROGRAM_HEADER.size, *header)
    # e_phoff; no section headers: e_shoff, e_shnum, e_shstrndx
    fields[5], fields[6], fields[12], fields[13] = ELF_HEADER.size, 0, 0, 0
    ELF_HEADER.pack_into(out, 0, *fields)
    return bytes(out)


def _add_base(initramfs: Initramfs, tree: Path) -> None:
    for path, mode in DIRECTORIES.items():
        initramfs.directory(path, mode)
    # The kernel opens /dev/console for /init before anything is mounted.
    initramfs.char_device("dev/console", 5, 1)
    for path, (text, mode) in FILES.items():
        initramfs.file(path, text.encode(), mode)
    initramfs.copy(BUSYBOX, tree / BUSYBOX, 0o755)
    applets = run([str(tree / BUSYBOX), "--list-full"], what="busybox --list-full").split()
    for applet in applets:
        if applet not in initramfs:
            initramfs.symlink(applet, "/" + BUSYBOX)


def _add_modules(initramfs: Initramfs, tree: Path, release: str) -> list[str]:
    """The modules a PV guest needs, in load order (listed in /etc/xenhil/modules)."""
    modules = tree / "lib/modules" / release
    run(["depmod", "-b", str(tree), release], what="depmod")
    builtin = (modules / "modules.builtin").read_text()
    order = module_closure((modules / "modules.dep").read_text(), builtin, MODULES)
    for path in order:
        initramfs.copy(f"lib/modules/{release}/{path}", modules / path, 0o644)
    listed = "".join(f"{release}/{path}\n" for path in order)
    initramfs.file("etc/xenhil/modules", listed.encode())
    return order


def module_closure(modules_dep: str, builtin: str, wanted: Iterable[str]) -> list[str]:
    """Paths from modules.dep of the `wanted` modules and of everything they need,
    each after what it needs. Modules built into the kernel need nothing."""
    needs: dict[str, list[str]] = {}
    for line in modules_dep.splitlines():
        path, sep, rest = line.partition(":")
        if sep:
            needs[path.strip()] = rest.split()
    by_name = {module_name(path): path for path in needs}
    built_in = {module_name(path) for path in builtin.split()}
    order: list[str] = []

    def visit(path: str, chain: tuple[str, ...]) -> None:
        if path in chain:
            raise VlabBuildError(f"module dependency loop: {' -> '.join((*chain, path))}")
        if path in order:
            return
        for dependency in needs.get(path, []):
            visit(dependency, (*chain, path))
        order.append(path)

    for name in wanted:
        key = name.replace("-", "_")
        if key in by_name:
            visit(by_name[key], ())
        elif key not in built_in:
            raise VlabBuildError(f"kernel module {name} is neither in modules.dep "
                                 "nor built in")
    return order


def module_name(path: str) -> str:
    """`kernel/drivers/net/xen-netfront.ko` -> `xen_netfront` (the kernel's spelling)."""
    base = path.rsplit("/", 1)[-1]
    return base.split(".ko", 1)[0].replace("-", "_")


def _add_ssh(initramfs: Initramfs, tree: Path, authorized_keys: Sequence[str],
             host_pubkey: Path) -> None:
    if not authorized_keys:
        raise VlabBuildError("no SSH key to authorize for the guest's root")
    loader = _resolve(tree, LOADER)
    library_path = ":".join(str(tree / d) for d in ("lib/x86_64-linux-gnu",
                                                    "usr/lib/x86_64-linux-gnu"))
    listing = run([str(loader), "--library-path", library_path, "--list", str(tree / DROPBEAR)],
                  what="ld.so --list dropbear")
    for guest_path, source in loaded_libraries(listing, tree):
        initramfs.copy(guest_path, source, 0o755)
    initramfs.copy(DROPBEAR, tree / DROPBEAR, 0o755)
    initramfs.file("root/.ssh/authorized_keys",
                   "".join(key.strip() + "\n" for key in authorized_keys).encode(), 0o600)
    key = tree.parent / "host_key"
    output = run([str(loader), "--library-path", library_path, str(tree / DROPBEARKEY),
                  "-t", "ed25519", "-f", str(key)], what="dropbearkey")
    public = next((line for line in output.splitlines() if line.startswith("ssh-ed25519 ")), None)
    if public is None:
        raise VlabBuildError(f"dropbearkey printed no public key: {tail(output)}")
    initramfs.copy(HOST_KEY, key, 0o600)
    host_pubkey.write_text(" ".join([*public.split()[:2], "xenhil-guest"]) + "\n")


def loaded_libraries(listing: str, tree: Path) -> list[tuple[str, Path]]:
    """(path in the guest, file in `tree`) of every shared object in the output of
    `ld.so --list BINARY` run with the libraries of `tree`. The interpreter keeps its
    absolute name; a library keeps its directory. A library found outside `tree` means
    PACKAGES lacks the package that provides it (one found nowhere makes ld.so fail)."""
    found = []
    base = tree.absolute()
    for line in listing.splitlines():
        name, arrow, rest = line.strip().partition(" => ")
        if not arrow:
            continue  # linux-vdso.so.1: the kernel's, not a file
        source = Path(rest.rsplit(" (", 1)[0])
        try:
            relative = source.absolute().relative_to(base)
        except ValueError:
            raise VlabBuildError(f"dropbear needs {name}, found only at {source}, outside "
                                 f"the guest's packages ({', '.join(PACKAGES)})") from None
        found.append((name.lstrip("/") if name.startswith("/") else str(relative), source))
    return found


def _resolve(tree: Path, path: str) -> Path:
    """`path` inside `tree`, following symlinks as if `tree` were /."""
    current = tree / path
    for _ in range(40):
        if not current.is_symlink():
            return current
        target = current.readlink()
        current = tree / str(target).lstrip("/") if target.is_absolute() \
            else current.parent / target
    raise VlabBuildError(f"symlink loop at {tree / path}")
