"""The virtual lab's base disk image.

Debian 12 minbase with GRUB 2 in the MBR, SSH with a generated key, and serial
logins. Each host gets its identity at boot from its NIC MAC addresses
(files/vlab-identity), so one image serves every host; hosts run on copy-on-write
overlays of it. No Xen inside: installing a Xen build is the harness's job.

The build is cached under ``cache/vlab``: a stamp records the hash of the recipe,
and everything is built in a temporary directory and moved into place at the end,
the stamp last, so an interrupted build never leaves an image that looks valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..build_cache import (
    VlabBuildError,
    cache_lock,
    dom0_dpkg_status,
    mounts_below,
    publish,
    remove_stale_temps,
    remove_tree,
    require_tools,
    run,
    stage,
    stamp_matches,
    tail,
)
from ..debian_packages import deb822_fields

log = logging.getLogger(__name__)
FILES = resources.files("harness.vlab") / "files"

SUITE = "bookworm"
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
PACKAGES = (
    "openssh-server",
    "openssh-sftp-server",
    "iproute2",
    "bridge-utils",
    "ifupdown",
    "systemd-sysv",
    "udev",
    "kmod",
    "procps",
    "iputils-ping",
    "linux-image-amd64",
    "grub-pc",
    "initramfs-tools",
    "netbase",
    # Not Xen, but every Xen build's tools need it, and installing it with the build
    # (byte-compiling the standard library under TCG) took minutes per host.
    "python3",
    # What the scenarios use on a host besides the build: sos collects support bundles,
    # NBD gives two hosts one disk for migration; vif-nat guests need iptables; Xen's
    # vif-route and vif-nat call ifconfig, which no Debian Xen package depends on.
    "sosreport",
    "nbd-client",
    "nbd-server",
    "iptables",
    "net-tools",
)
DISK_SIZE = 6 * 1024**3
PART_OFFSET = 1024**2  # the partition starts at 1 MiB; GRUB's core image sits before it
# files/NAME -> path in the image, mode
INSTALL: tuple[tuple[str, str, int], ...] = (
    ("grub", "/etc/default/grub", 0o644),
    ("interfaces", "/etc/network/interfaces", 0o644),
    ("hosts", "/etc/hosts", 0o644),
    ("sshd-vlab.conf", "/etc/ssh/sshd_config.d/vlab.conf", 0o644),
    ("vlab-identity", "/usr/local/sbin/vlab-identity", 0o755),
    ("vlab-identity.service", "/etc/systemd/system/vlab-identity.service", 0o644),
    ("system-timeouts.conf", "/etc/systemd/system.conf.d/vlab.conf", 0o644),
    ("serial-getty-ttyS1.conf", "/etc/systemd/system/serial-getty@ttyS1.service.d/vlab.conf",
     0o644),
    ("locale", "/etc/default/locale", 0o644),
    ("firstboot.sh", "/root/firstboot.sh", 0o755),
)
ENABLE = ("vlab-identity.service", "serial-getty@ttyS1.service")  # ttyS1: the BMC's SOL
# Hosts under test run no background maintenance that could disturb timings, and
# nothing that slows the boot under TCG for no use here (gettys on VTs 2-6, LVM
# snapshot cleanup). Masked: getty-static cannot be disabled (it is static).
MASK = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "e2scrub_reap.service",
    "getty-static.service",
)
FIRSTBOOT_QEMU = ("-machine", "q35", "-accel", "tcg", "-cpu", "qemu64", "-m", "1024", "-smp", "1")
FIRSTBOOT_APPEND = "root=/dev/vda1 rw console=ttyS0,115200 init=/root/firstboot.sh panic=1"
FIRSTBOOT_OK = "vlab-firstboot: GRUB installed"
FIRSTBOOT_TIMEOUT = 600  # seconds; it takes about 30 s under TCG

# Which Debian package provides a host tool, for the error message when it is missing.
TOOLS = {
    "debootstrap": "debootstrap",
    "chroot": "coreutils",
    "sfdisk": "fdisk",
    "mkfs.ext4": "e2fsprogs",
    "ssh-keygen": "openssh-client",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
}


@dataclass(frozen=True)
class Image:
    """The artifacts of the base image build."""

    disk: Path  # base disk, qcow2; hosts run on overlays of it
    dpkg_status: Path  # the image's /var/lib/dpkg/status
    root_password: Path  # root's password (serial console login)
    ssh_key: Path  # private key for root's SSH login
    ssh_pubkey: Path
    ssh_host_key: Path  # the image's SSH host public key, for pinning

    @classmethod
    def under(cls, cache: Path) -> Image:
        """The artifact paths under `cache`, whether they are built or not."""
        image, keys = cache / "vlab" / "image", cache / "vlab" / "keys"
        return cls(
            disk=image / "dom0.qcow2",
            dpkg_status=dom0_dpkg_status(cache),
            root_password=image / "root-password",
            ssh_key=keys / "id_ed25519",
            ssh_pubkey=keys / "id_ed25519.pub",
            ssh_host_key=image / "ssh_host_ed25519_key.pub",
        )

    def paths(self) -> tuple[Path, ...]:
        return (
            self.disk,
            self.dpkg_status,
            self.root_password,
            self.ssh_key,
            self.ssh_pubkey,
            self.ssh_host_key,
        )


def build_image(cache: Path, *, force: bool = False) -> Image:
    """Builds the base image under `cache`/vlab, or returns at once if it is up to date."""
    image = Image.under(cache)
    root = cache / "vlab"
    stamp = root / ".image.stamp"
    recipe = recipe_hash()
    root.mkdir(parents=True, exist_ok=True)
    with cache_lock(root):
        if not force and stamp_matches(stamp, recipe, image.paths()):
            log.info("image up to date: %s", image.disk)
            return image
        require_root("building the image needs root (debootstrap, chroot)")
        require_tools(TOOLS)
        mirror = debian_mirror(SOURCES.read_text(), SUITE)
        remove_stale_temps(root, ".image-")
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=".image-", dir=root))
        try:
            staged = Image.under(tmp)
            _build(tmp, staged, mirror)
            publish(
                {
                    staged.disk.parent: image.disk.parent,
                    staged.ssh_key.parent: image.ssh_key.parent,
                },
                stamp,
                recipe,
                {"mirror": mirror, "seconds": round(time.monotonic() - started)},
            )
        finally:
            remove_tree(tmp)
    log.info("image built in %.0f s: %s", time.monotonic() - started, image.disk)
    return image


def _build(tmp: Path, staged: Image, mirror: str) -> None:
    rootfs = tmp / "rootfs"
    raw = tmp / "disk.raw"
    staged.disk.parent.mkdir(parents=True)
    staged.ssh_key.parent.mkdir(mode=0o700, parents=True)
    fs_uuid = str(uuid.uuid4())
    with stage("debootstrap"):
        _debootstrap(rootfs, mirror)
    with stage("configure"):
        _configure(rootfs, staged, fs_uuid)
    with stage("filesystem"):
        _make_disk(rootfs, raw, fs_uuid)
    with stage("GRUB install (QEMU)"):
        _install_grub(rootfs, raw, tmp / "firstboot-serial.log")
    with stage("qcow2"):
        run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(staged.disk)],
            what="qemu-img convert")
        raw.unlink()
    log.info("image disk %s: %s", _size(staged.disk), staged.disk.name)


def _debootstrap(rootfs: Path, mirror: str) -> None:
    cmd = [
        "debootstrap",
        "--variant=minbase",
        "--include=" + ",".join(PACKAGES),
        SUITE,
        str(rootfs),
        mirror,
    ]
    try:
        run(cmd, what="debootstrap")
    except VlabBuildError as e:
        # debootstrap prints little; its own log has the failing step
        own_log = rootfs / "debootstrap/debootstrap.log"
        if own_log.exists():
            raise VlabBuildError(f"{e}\n{own_log}:\n{tail(own_log.read_text())}") from None
        raise
    # debootstrap mounts /proc and /sys in the target while it works
    if mounted := mounts_below(rootfs):
        raise VlabBuildError(f"debootstrap left mounts in {rootfs}: {', '.join(mounted)}")


def _configure(rootfs: Path, staged: Image, fs_uuid: str) -> None:
    for name, dest, mode in INSTALL:
        path = rootfs / dest.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((FILES / name).read_bytes())
        path.chmod(mode)
    (rootfs / "etc/hostname").write_text("vlab\n")  # vlab-identity sets vlabN at boot
    (rootfs / "etc/fstab").write_text(
        "# <file system> <mount point> <type> <options> <dump> <pass>\n"
        f"UUID={fs_uuid} / ext4 errors=remount-ro 0 1\n"
    )
    run(["chroot", str(rootfs), "systemctl", "enable", "--quiet", *ENABLE], what="systemctl enable")
    run(["chroot", str(rootfs), "systemctl", "mask", "--quiet", *MASK], what="systemctl mask")

    password = secrets.token_urlsafe(18)
    run(["chroot", str(rootfs), "chpasswd"], what="chpasswd", stdin=f"root:{password}\n")
    write_private(staged.root_password, password + "\n")

    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vlab-harness",
         "-f", str(staged.ssh_key)], what="ssh-keygen (harness key)")
    ssh_dir = rootfs / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    write_private(ssh_dir / "authorized_keys", staged.ssh_pubkey.read_text())

    # One fresh host key that clients can pin, instead of the ones the package made
    for old in (rootfs / "etc/ssh").glob("ssh_host_*"):
        old.unlink()
    host_key = rootfs / "etc/ssh/ssh_host_ed25519_key"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vlab-host", "-f", str(host_key)],
        what="ssh-keygen (host key)")
    shutil.copyfile(host_key.with_suffix(".pub"), staged.ssh_host_key)

    # Every host boots the same image: no shared machine id or random seed; an
    # empty machine-id makes systemd generate one at boot.
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "var/lib/systemd/random-seed").unlink(missing_ok=True)
    # Downloaded packages and package lists are not needed in the image.
    for leftover in (*(rootfs / "var/cache/apt/archives").glob("*.deb"),
                     *(p for p in (rootfs / "var/lib/apt/lists").iterdir() if p.is_file())):
        leftover.unlink()
    shutil.copyfile(rootfs / "var/lib/dpkg/status", staged.dpkg_status)


def _make_disk(rootfs: Path, raw: Path, fs_uuid: str) -> None:
    with raw.open("wb") as f:
        f.truncate(DISK_SIZE)  # sparse
    run(["sfdisk", "--quiet", str(raw)], what="sfdisk",
        stdin=f"label: dos\nstart={PART_OFFSET // 512}, type=83, bootable\n")
    # Loop devices have no partition scanning here: make the filesystem straight
    # into the partition's place in the file. No metadata_csum_seed/orphan_file:
    # GRUB 2.06 cannot read them.
    run(
        [
            "mkfs.ext4", "-q", "-F", "-d", str(rootfs), "-U", fs_uuid, "-L", "vlab-root",
            "-O", "^metadata_csum_seed,^orphan_file", "-E", f"offset={PART_OFFSET}",
            str(raw), f"{(DISK_SIZE - PART_OFFSET) // 1024}k",
        ],
        what="mkfs.ext4",
    )


def _install_grub(rootfs: Path, raw: Path, serial_log: Path) -> None:
    """Boots the disk once with direct kernel boot; files/firstboot.sh runs as init."""
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise VlabBuildError(f"expected one kernel in {rootfs}/boot, found {len(kernels)}")
    version = kernels[0].name.removeprefix("vmlinuz-")
    initrd = rootfs / "boot" / f"initrd.img-{version}"
    cmd = [
        "qemu-system-x86_64", *FIRSTBOOT_QEMU,
        "-nographic", "-monitor", "none", "-serial", f"file:{serial_log}",
        "-nic", "none", "-no-reboot",
        "-drive", f"file={raw},format=raw,if=virtio",
        "-kernel", str(kernels[0]), "-initrd", str(initrd), "-append", FIRSTBOOT_APPEND,
    ]
    log.debug("running %s", cmd)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=FIRSTBOOT_TIMEOUT)
        problem = "" if proc.returncode == 0 else f"QEMU exit {proc.returncode}: {output.strip()}"
    except subprocess.TimeoutExpired:
        problem = f"no power-off within {FIRSTBOOT_TIMEOUT} s, killed QEMU pid {proc.pid}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    serial = serial_log.read_text(errors="replace") if serial_log.exists() else ""
    if problem or FIRSTBOOT_OK not in serial:
        raise VlabBuildError(
            f"GRUB install VM failed ({problem or 'no success line on its serial console'}); "
            f"serial log tail:\n{tail(serial) or '(empty)'}"
        )
    with raw.open("rb") as f:
        if b"GRUB" not in f.read(512):
            raise VlabBuildError(f"no GRUB boot code in the MBR of {raw} after grub-install")


def debian_mirror(sources: str, suite: str) -> str:
    """The first URI of the deb822 APT source that serves `suite` (debian.sources text)."""
    for stanza in re.split(r"\n[ \t]*\n", sources):
        fields = deb822_fields(stanza)
        if (
            "deb" in fields.get("types", "").split()
            and suite in fields.get("suites", "").split()
            and fields.get("enabled", "yes").lower() != "no"
            and fields.get("uris")
        ):
            return fields["uris"].split()[0]
    raise VlabBuildError(
        f"no APT source for suite {suite} in {SOURCES}: add a deb822 stanza with "
        f"'Types: deb', 'Suites: {suite}' and the mirror's URIs"
    )


def recipe_hash() -> str:
    """Hash of everything that decides the image's content."""
    recipe = {
        "suite": SUITE,
        "packages": PACKAGES,
        "disk": [DISK_SIZE, PART_OFFSET],
        "install": INSTALL,
        "enable": ENABLE,
        "mask": MASK,
        "firstboot": [FIRSTBOOT_QEMU, FIRSTBOOT_APPEND],
        "files": {name: hashlib.sha256((FILES / name).read_bytes()).hexdigest()
                  for name, _, _ in INSTALL},
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        raise VlabBuildError(f"not root: {why}")


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _size(path: Path) -> str:
    virtual = json.loads(run(["qemu-img", "info", "--output=json", str(path)],
                             what="qemu-img info"))["virtual-size"]
    return f"{path.stat().st_size / 1e6:.0f} MB on disk, {virtual / 1024**3:.1f} GiB virtual"
