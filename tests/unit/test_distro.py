"""Per-family commands, pinned byte for byte: they were moved here from install.py,
support.py, guests/guest.py and the boot scenario and must run on hosts as before."""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
from pathlib import Path

import pytest

from harness.distro import DEBIAN, SUSE, Distro, distro
from harness.errors import ConfigError
from harness.grubcfg import parse_saved_entry
from harness.support import COLLECTORS

HOSTILE = "/var/tmp/xenhil-build/a b;rm -rf x.deb"
PLAIN = "/var/tmp/xenhil-build/xen-utils-4.17_4.17.7-1_amd64.deb"
HOSTILE_QUOTED = "'/var/tmp/xenhil-build/a b;rm -rf x.deb'"
# A value with everything a shell or sed would trip over, short of sed's own | and &.
NASTY_VALUE = "console=com1 a='b c'; $(touch pwned) \"d\" >x"


def test_lookup() -> None:
    assert distro("debian") is DEBIAN
    assert distro("suse") is SUSE
    with pytest.raises(ConfigError, match=r"unknown distro family 'rhel'; known: debian, suse"):
        distro("rhel")


def test_debian_install_packages() -> None:
    assert DEBIAN.install_packages([PLAIN, HOSTILE]) == (
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-downgrades "
        "--no-install-recommends -o DPkg::Lock::Timeout=120 "
        "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "
        f"{PLAIN} {HOSTILE_QUOTED}")


def test_suse_install_packages() -> None:
    assert SUSE.install_packages([PLAIN, HOSTILE]) == (
        f"zypper --non-interactive install --oldpackage --allow-unsigned-rpm "
        f"{PLAIN} {HOSTILE_QUOTED}")


@pytest.mark.parametrize("dist", [DEBIAN, SUSE], ids=["debian", "suse"])
def test_hostile_file_name_stays_one_word(dist: Distro) -> None:
    words = shlex.split(dist.install_packages([HOSTILE, "/v/it's.rpm"]))
    assert words[-2:] == [HOSTILE, "/v/it's.rpm"]
    assert "rm" not in words


def test_installed_versions() -> None:
    assert DEBIAN.installed_versions(["xen-utils-4.17", "a b;rm -rf x"]) == (
        "dpkg-query -W -f='${Package} ${Version} ${db:Status-Abbrev}\\n' "
        "xen-utils-4.17 'a b;rm -rf x' 2>/dev/null | awk '$3 == \"ii\" {print $1, $2}'")
    assert SUSE.installed_versions(["xen-tools", "a b;rm -rf x"]) == (
        "rpm -q --qf '%{NAME} %{VERSION}-%{RELEASE}\\n' xen-tools 'a b;rm -rf x' 2>/dev/null")


def test_grub_paths_and_regeneration() -> None:
    assert (DEBIAN.grub_cfg, DEBIAN.regenerate_grub, DEBIAN.grub_defaults_file) == (
        "/boot/grub/grub.cfg", "update-grub", "/etc/default/grub.d/zz-xenhil.cfg")
    assert (SUSE.grub_cfg, SUSE.regenerate_grub, SUSE.grub_defaults_file) == (
        "/boot/grub2/grub.cfg", "grub2-mkconfig -o /boot/grub2/grub.cfg", "/etc/default/grub")
    assert DEBIAN.grub_regenerators_on_path == ("update-grub",)
    assert SUSE.grub_regenerators_on_path == ()  # its %post uses absolute paths


# A submenu entry's path, as GrubEntry.default_path gives it.
NESTED = "gnulinux-advanced-x>xen-hypervisor-4.17-amd64-x>xen-gnulinux-6.1.0-50-amd64-advanced-x"


def test_saved_entry_commands() -> None:
    assert DEBIAN.set_saved_entry(NESTED) == (
        f"grub-editenv /boot/grub/grubenv set 'saved_entry={NESTED}'")
    assert SUSE.set_saved_entry(NESTED) == (
        f"grub2-editenv /boot/grub2/grubenv set 'saved_entry={NESTED}'")
    assert (DEBIAN.list_grubenv, SUSE.list_grubenv) == (
        "grub-editenv /boot/grub/grubenv list", "grub2-editenv /boot/grub2/grubenv list")


def test_saved_entry_round_trip_through_grub_editenv(tmp_path: Path) -> None:
    grubenv = tmp_path / "grubenv"
    debian = dataclasses.replace(DEBIAN, grub_editenv=f"grub-editenv {grubenv}")
    subprocess.run(["bash", "-c", debian.set_saved_entry(NESTED)], cwd=tmp_path, check=True)
    listed = subprocess.run(["bash", "-c", debian.list_grubenv], capture_output=True,
                            text=True, check=True).stdout
    assert parse_saved_entry(listed) == NESTED
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grubenv"]  # no file named by `>`


SETTINGS = {"GRUB_DEFAULT": "gnulinux-advanced-x>xen-y",
            "GRUB_CMDLINE_XEN_DEFAULT": "console=com1 dom0_mem=1024M"}


def test_debian_grub_settings() -> None:
    assert DEBIAN.grub_settings(SETTINGS) == (
        "printf %s '# Written by xen-hil: the Xen build under test boots by default.\n"
        "GRUB_DEFAULT='\"'\"'gnulinux-advanced-x>xen-y'\"'\"'\n"
        "GRUB_CMDLINE_XEN_DEFAULT='\"'\"'console=com1 dom0_mem=1024M'\"'\"'\n"
        "' > /etc/default/grub.d/zz-xenhil.cfg")


def test_suse_grub_settings() -> None:
    assert SUSE.grub_settings(SETTINGS) == (
        "(grep -q '^GRUB_DEFAULT=' /etc/default/grub && "
        "sed -i 's|^GRUB_DEFAULT=.*|''GRUB_DEFAULT='\"'\"'gnulinux-advanced-x>xen-y'\"'\"'''|' "
        "/etc/default/grub || "
        "echo 'GRUB_DEFAULT='\"'\"'gnulinux-advanced-x>xen-y'\"'\"'' >> /etc/default/grub) && "
        "(grep -q '^GRUB_CMDLINE_XEN_DEFAULT=' /etc/default/grub && "
        "sed -i 's|^GRUB_CMDLINE_XEN_DEFAULT=.*|''GRUB_CMDLINE_XEN_DEFAULT='\"'\"'"
        "console=com1 dom0_mem=1024M'\"'\"'''|' /etc/default/grub || "
        "echo 'GRUB_CMDLINE_XEN_DEFAULT='\"'\"'console=com1 dom0_mem=1024M'\"'\"'' "
        ">> /etc/default/grub)")


def test_debian_grub_settings_written_as_given(tmp_path: Path) -> None:
    target = tmp_path / "zz-xenhil.cfg"
    command = dataclasses.replace(DEBIAN, grub_defaults_file=str(target)).grub_settings(
        {"GRUB_CMDLINE_XEN_DEFAULT": NASTY_VALUE})
    subprocess.run(["bash", "-c", command], cwd=tmp_path, check=True)
    assert target.read_text().splitlines()[1:] == [
        DEBIAN.setting_line("GRUB_CMDLINE_XEN_DEFAULT", NASTY_VALUE)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zz-xenhil.cfg"]


def test_suse_grub_settings_replace_or_append(tmp_path: Path) -> None:
    grub = tmp_path / "grub"
    grub.write_text("GRUB_TIMEOUT=8\nGRUB_DEFAULT=saved\n")
    command = SUSE.grub_settings({"GRUB_DEFAULT": "a>b", "GRUB_CMDLINE_XEN_DEFAULT": NASTY_VALUE})
    subprocess.run(["bash", "-c", command.replace("/etc/default/grub", str(grub))],
                   cwd=tmp_path, check=True)
    assert grub.read_text().splitlines() == [
        "GRUB_TIMEOUT=8", "GRUB_DEFAULT='a>b'",
        SUSE.setting_line("GRUB_CMDLINE_XEN_DEFAULT", NASTY_VALUE)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grub"]


def test_services_and_support_collector() -> None:
    assert DEBIAN.xen_services == ("xen", "xendomains")
    assert SUSE.xen_services == ("xencommons", "xendomains")
    assert (DEBIAN.support_collector, SUSE.support_collector) == ("sos", "supportconfig")
    assert {DEBIAN.support_collector, SUSE.support_collector} == set(COLLECTORS)


def test_console_logging() -> None:
    assert DEBIAN.console_logging == (
        "touch /etc/default/xen && sed -i '/^XENCONSOLED_ARGS=/d' /etc/default/xen && "
        "echo 'XENCONSOLED_ARGS=\"--log=guest --timestamp=guest\"' >> /etc/default/xen && "
        "systemctl restart xen")
    assert SUSE.console_logging == (
        "sed -i '/^XENCONSOLED_TRACE=/d' /etc/sysconfig/xencommons && "
        "echo 'XENCONSOLED_TRACE=\"guest\"' >> /etc/sysconfig/xencommons && "
        "systemctl restart xenconsoled")
