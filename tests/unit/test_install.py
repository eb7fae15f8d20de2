"""Installing a build regenerates grub.cfg once and boots the Xen entry by saved_entry.

The host is a directory standing for its root: every command runs in a real bash with
the host's paths moved there. apt-get, zypper, dpkg-query, rpm and the regenerating
commands are stand-ins; apt-get's runs the postinst line of Debian's two Xen hypervisor
packages (`command -v update-grub ... && update-grub`), and each regeneration installs
a grub.cfg that Debian 12's update-grub generated with Xen 4.17 (tests/data/grub).
grub-editenv is the real one, on the stand-in root's grubenv.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest

from harness import install
from harness.build import Package, XenBuild
from harness.distro import DEBIAN, SUSE, Distro
from harness.grubcfg import GrubEntry
from harness.install import (
    SHIM_DIR,
    STAGING_DIR,
    boot_settings,
    grub_shims,
    install_build,
    install_command,
    installed_entry,
)
from harness.lab import DEFAULT_LAB, HostSpec, load_lab
from harness.remote import CommandFailed, CommandResult, RemoteHost

from .shell import stand_in

GRUB_CFG = Path(__file__).parent.parent / "data/grub/debian12-xen-4.17.cfg"
UUID = "10210e26-d78a-41a2-a854-14d8bcf9d052"
XEN_ENTRY = f"xen-gnulinux-simple-{UUID}"  # the first entry booting /boot/xen-4.17-amd64.gz
POSTINST = "if command -v update-grub > /dev/null && [ -d /boot/grub ]; then update-grub || :; fi"
TIMEOUT = 600.0


class FakeHost:
    """What install.py uses of a RemoteHost: run and put, on a root directory."""

    def __init__(self, root: Path) -> None:
        self.name = "vlab1"
        self.root = root
        self.commands: list[str] = []
        self.timeouts: list[float] = []
        state = root / "state"
        state.mkdir(parents=True)
        for directory in ("boot/grub", "boot/grub2", "etc/default/grub.d"):
            (root / directory).mkdir(parents=True)
        (root / "etc/default/grub").write_text("GRUB_TIMEOUT=3\nGRUB_DEFAULT=saved\n")
        (state / "installed").write_text("")
        programs = root / "usr/sbin"
        # Both write the same grub.cfg and count their runs.
        for regenerate, cfg in (("update-grub", "grub"), ("grub2-mkconfig", "grub2")):
            stand_in(programs / regenerate, f"echo {regenerate} >> {state}/regenerations\n"
                     f"cp {GRUB_CFG} {root}/boot/{cfg}/grub.cfg\n")
        postinst = POSTINST.replace("/boot/grub", f"{root}/boot/grub")
        self.path = f"{programs}:/usr/bin:/bin"
        # Each of the two hypervisor packages runs the postinst line, with PATH as apt
        # sets it for dpkg: DPkg::Path, not the caller's.
        stand_in(programs / "apt-get",
                 f"PATH={self.path}\n"
                 'for arg; do case $arg in DPkg::Path=*) PATH=${arg#*=} ;; esac; done\n'
                 f"{postinst}\n{postinst}\n"
                 f"cp {state}/to-install {state}/installed\n")
        stand_in(programs / "zypper", f"cp {state}/to-install {state}/installed\n")
        stand_in(programs / "dpkg-query", f"sed 's/$/ ii/' {state}/installed\n")
        stand_in(programs / "rpm", f"cat {state}/installed\n")
        stand_in(programs / "grub2-editenv", 'exec grub-editenv "$@"\n')
        stand_in(programs / "sync", "")  # not the test machine's disks

    def host_path(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def _moved(self, command: str) -> str:
        for real in (STAGING_DIR, "/etc/default/grub", "/boot/grub"):
            command = command.replace(real, str(self.host_path(real)))
        return command

    def run(self, command: str, *, timeout: float = 60.0, check: bool = True) -> CommandResult:
        self.commands.append(command)
        self.timeouts.append(timeout)
        process = subprocess.run(["bash", "-c", self._moved(command)], capture_output=True,
                                 text=True, timeout=30, check=False, env={"PATH": self.path})
        result = CommandResult(self.name, command, process.returncode, process.stdout,
                               process.stderr, datetime.now(UTC), 0.0)
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def put(self, local: Path, remote: str) -> None:
        shutil.copy(local, self.host_path(remote))

    def will_install(self, build: XenBuild) -> None:
        (self.root / "state/to-install").write_text("".join(
            f"{p.name} {p.version}\n" for p in build.packages))

    def regenerations(self) -> list[str]:
        log = self.root / "state/regenerations"
        return log.read_text().split() if log.exists() else []

    @property
    def remote(self) -> RemoteHost:
        return cast(RemoteHost, self)


@pytest.fixture
def spec() -> HostSpec:
    return load_lab(DEFAULT_LAB, check_files=False).host("vlab1")


def make_deb(directory: Path, name: str, version: str, files: dict[str, bytes]) -> Package:
    tree = directory / f"{name}-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: amd64\n"
        "Maintainer: xen-hil <xenhil@example.org>\nDescription: test package\n")
    for path, content in files.items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_bytes(content)
    deb = directory / f"{name}_{version}_amd64.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree), str(deb)],
                   check=True, capture_output=True)
    return Package(deb, name, version, "amd64", "deb")


@pytest.fixture
def build(tmp_path: Path) -> XenBuild:
    """A hypervisor .deb installing /boot/xen-4.17-amd64.gz, and its tools."""
    return XenBuild(str(tmp_path), (
        make_deb(tmp_path, "xen-hypervisor-4.17-amd64", "4.17.7-1",
                 {"boot/xen-4.17-amd64.gz": b"xen"}),
        make_deb(tmp_path, "xen-utils-4.17", "4.17.7-1", {"usr/sbin/xl": b"xl"})))


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path / "root")


def staged(build: XenBuild) -> list[str]:
    return [f"{STAGING_DIR}/{package.path.name}" for package in build.packages]


def test_debian_install_regenerates_once_and_saves_the_entry(
        host: FakeHost, spec: HostSpec, build: XenBuild) -> None:
    host.will_install(build)
    entry, installed = install_build(host.remote, spec, build, TIMEOUT)
    assert installed and entry.default_path == XEN_ENTRY
    assert host.commands == [
        DEBIAN.installed_versions(["xen-hypervisor-4.17-amd64", "xen-utils-4.17"]),
        f"rm -rf {STAGING_DIR} && mkdir -p {STAGING_DIR}",
        f"mkdir -p {SHIM_DIR} && printf %s '#!/bin/sh\n"
        "echo '\"'\"'update-grub: skipped during the package install; xen-hil regenerates "
        "grub.cfg once afterwards'\"'\"'\nexit 0\n' > /var/tmp/xenhil-build/bin/update-grub"
        " && chmod +x /var/tmp/xenhil-build/bin/update-grub",
        f"cat {DEBIAN.grub_defaults_file}",
        DEBIAN.grub_settings(boot_settings(spec)),
        DEBIAN.install_packages(staged(build), SHIM_DIR),
        "update-grub",
        "cat /boot/grub/grub.cfg",
        f"grub-editenv /boot/grub/grubenv set saved_entry={XEN_ENTRY}",
        f"rm -rf {STAGING_DIR} && sync",
    ]
    assert host.timeouts[5:7] == [TIMEOUT, TIMEOUT]  # the install and the regeneration
    # The packages' two postinst runs found the shim; only the harness regenerated.
    assert host.regenerations() == ["update-grub"]
    assert [c for c in host.commands if f"DPkg::Path={SHIM_DIR}:" in c] == [host.commands[5]]
    assert not host.host_path(STAGING_DIR).exists()
    settings = host.host_path(DEBIAN.grub_defaults_file).read_text().splitlines()
    assert "GRUB_DEFAULT=saved" in settings and "GRUB_SAVEDEFAULT=false" in settings
    grubenv = subprocess.run(["grub-editenv", str(host.host_path("/boot/grub/grubenv")),
                              "list"], capture_output=True, text=True, check=True).stdout
    assert grubenv == f"saved_entry={XEN_ENTRY}\n"


def test_the_shim_answers_the_postinst_during_the_install_only(
        host: FakeHost, build: XenBuild) -> None:
    host.will_install(build)
    shims = grub_shims(DEBIAN)
    assert shims is not None
    host.run(shims)
    during = host.run(install_command(DEBIAN, staged(build)))
    assert during.stdout.splitlines() == [
        "update-grub: skipped during the package install; xen-hil regenerates grub.cfg "
        "once afterwards"] * 2
    assert host.regenerations() == []
    # the shim first on the caller's PATH does nothing: apt resets it for dpkg
    host.run(f"PATH={SHIM_DIR}:$PATH {DEBIAN.install_packages(staged(build))}")
    assert host.regenerations() == ["update-grub"] * 2
    assert grub_shims(SUSE) is None
    assert install_command(SUSE, staged(build)) == SUSE.install_packages(staged(build))


def test_an_installed_build_is_recognised_and_left_alone(
        host: FakeHost, spec: HostSpec, build: XenBuild) -> None:
    host.will_install(build)
    entry, _ = install_build(host.remote, spec, build, TIMEOUT)
    host.commands.clear()
    assert install_build(host.remote, spec, build, TIMEOUT) == (entry, False)
    assert host.commands == [
        DEBIAN.installed_versions(["xen-hypervisor-4.17-amd64", "xen-utils-4.17"]),
        "cat /boot/grub/grub.cfg",
        f"cat {DEBIAN.grub_defaults_file}",
        "grub-editenv /boot/grub/grubenv list",
    ]
    assert host.regenerations() == ["update-grub"]


@pytest.mark.parametrize("grubenv", [
    "saved_entry=gnulinux-simple-" + UUID,  # plain Linux
    f"saved_entry=gnulinux-advanced-{UUID}>{XEN_ENTRY}",  # not the entry's path
    None,  # no saved_entry
], ids=["other-entry", "other-path", "unset"])
def test_another_saved_entry_is_not_installed(host: FakeHost, spec: HostSpec, build: XenBuild,
                                             grubenv: str | None) -> None:
    host.will_install(build)
    install_build(host.remote, spec, build, TIMEOUT)
    edit = ["grub-editenv", str(host.host_path("/boot/grub/grubenv"))]
    if grubenv is None:
        subprocess.run([*edit, "unset", "saved_entry"], check=True)
    else:
        subprocess.run([*edit, "set", grubenv], check=True)
    assert installed_entry(host.remote, spec, build) is None


def test_settings_of_the_old_install_are_not_installed(
        host: FakeHost, spec: HostSpec, build: XenBuild) -> None:
    """An install by the harness before saved_entry: GRUB_DEFAULT named the entry."""
    host.will_install(build)
    install_build(host.remote, spec, build, TIMEOUT)
    settings = host.host_path(DEBIAN.grub_defaults_file)
    settings.write_text(settings.read_text().replace("GRUB_DEFAULT=saved",
                                                     f"GRUB_DEFAULT={XEN_ENTRY}"))
    assert installed_entry(host.remote, spec, build) is None


def test_other_package_versions_are_not_installed(
        host: FakeHost, spec: HostSpec, build: XenBuild) -> None:
    host.will_install(build)
    install_build(host.remote, spec, build, TIMEOUT)
    (host.root / "state/installed").write_text(
        "xen-hypervisor-4.17-amd64 4.17.5-1\nxen-utils-4.17 4.17.7-1\n")
    host.commands.clear()
    assert installed_entry(host.remote, spec, build) is None
    assert len(host.commands) == 1  # nothing else is read


def rebuilt(build: XenBuild, package: Package) -> XenBuild:
    """`build` with `package` in place of the one of its name."""
    return XenBuild(build.source, tuple(package if p.name == package.name else p
                                        for p in build.packages))


def install_then_rebuilt(host: FakeHost, spec: HostSpec, build: XenBuild,
                         package: Package) -> tuple[GrubEntry, bool]:
    """Install `build`, then `build` with `package` rebuilt; host.commands holds the
    second install's commands."""
    host.will_install(build)
    install_build(host.remote, spec, build, TIMEOUT)
    host.will_install(rebuilt(build, package))
    host.commands.clear()
    return install_build(host.remote, spec, rebuilt(build, package), TIMEOUT)


def test_only_the_packages_that_differ_are_copied_and_installed(
        host: FakeHost, spec: HostSpec, build: XenBuild, tmp_path: Path) -> None:
    """A rebuilt tools package: only it is copied and installed. It ships nothing that
    GRUB's scripts read, so grub.cfg is not regenerated; the entry is saved again."""
    tools = make_deb(tmp_path / "next", "xen-utils-4.17", "4.17.7-1+fix1",
                     {"usr/sbin/xl": b"xl, fixed"})
    entry, installed = install_then_rebuilt(host, spec, build, tools)
    assert installed and entry.default_path == XEN_ENTRY
    assert [c for c in host.commands if "apt-get" in c] == [
        DEBIAN.install_packages([f"{STAGING_DIR}/{tools.path.name}"], SHIM_DIR)]
    assert host.regenerations() == ["update-grub"]  # the first install's, no other
    assert f"grub-editenv /boot/grub/grubenv set saved_entry={XEN_ENTRY}" in host.commands
    assert installed_entry(host.remote, spec, rebuilt(build, tools)) == entry


def test_a_changed_package_shipping_what_grub_reads_regenerates(
        host: FakeHost, spec: HostSpec, build: XenBuild, tmp_path: Path) -> None:
    hypervisor = make_deb(tmp_path / "next", "xen-hypervisor-4.17-amd64", "4.17.7-2",
                          {"boot/xen-4.17-amd64.gz": b"xen, fixed"})
    install_then_rebuilt(host, spec, build, hypervisor)
    assert [c for c in host.commands if "apt-get" in c] == [
        DEBIAN.install_packages([f"{STAGING_DIR}/{hypervisor.path.name}"], SHIM_DIR)]
    assert host.regenerations() == ["update-grub"] * 2


def test_changed_grub_settings_regenerate_with_nothing_to_install(
        host: FakeHost, spec: HostSpec, build: XenBuild) -> None:
    host.will_install(build)
    install_build(host.remote, spec, build, TIMEOUT)
    other_cmdline = dataclasses.replace(spec, xen_cmdline_extra="sched=credit2")
    host.commands.clear()
    _, installed = install_build(host.remote, other_cmdline, build, TIMEOUT)
    assert installed  # the host's disk changed
    assert not [c for c in host.commands if "apt-get" in c]
    assert host.regenerations() == ["update-grub"] * 2
    settings = host.host_path(DEBIAN.grub_defaults_file).read_text()
    assert "sched=credit2" in settings


def test_suse_install_has_no_shim_and_one_regeneration_of_its_own(
        host: FakeHost, spec: HostSpec, build: XenBuild,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # rpm -qlp needs a real .rpm and rpm; which file the package holds is not the point.
    monkeypatch.setattr(install, "hypervisor_image", lambda _build: "/boot/xen-4.17-amd64.gz")
    suse = dataclasses.replace(spec, family="suse")
    host.will_install(build)
    entry, _ = install_build(host.remote, suse, build, TIMEOUT)
    assert host.commands == [
        SUSE.installed_versions(["xen-hypervisor-4.17-amd64", "xen-utils-4.17"]),
        f"rm -rf {STAGING_DIR} && mkdir -p {STAGING_DIR}",
        f"cat {SUSE.grub_defaults_file}",
        SUSE.grub_settings(boot_settings(suse)),
        SUSE.install_packages(staged(build)),
        "grub2-mkconfig -o /boot/grub2/grub.cfg",
        "cat /boot/grub2/grub.cfg",
        f"grub2-editenv /boot/grub2/grubenv set saved_entry={XEN_ENTRY}",
        f"rm -rf {STAGING_DIR} && sync",
    ]
    assert host.regenerations() == ["grub2-mkconfig"]
    assert host.host_path("/etc/default/grub").read_text().splitlines()[:2] == [
        "GRUB_TIMEOUT=3", "GRUB_DEFAULT=saved"]
    host.commands.clear()
    assert installed_entry(host.remote, suse, build) == entry


@pytest.mark.parametrize("dist", [DEBIAN, SUSE], ids=["debian", "suse"])
def test_settings_never_save_the_booted_entry(spec: HostSpec, dist: Distro) -> None:
    settings = boot_settings(dataclasses.replace(spec, family=dist.family))
    assert (settings["GRUB_DEFAULT"], settings["GRUB_SAVEDEFAULT"]) == ("saved", "false")
