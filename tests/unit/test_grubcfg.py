"""Finding the Xen entry in a grub.cfg that Debian 12's update-grub generated on a
virtual host after Xen 4.17.7 was installed (tests/data/grub)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.grubcfg import (
    GrubEntryNotFound,
    find_xen_entry,
    parse_grub_cfg,
    parse_saved_entry,
)

CFG = (Path(__file__).parent.parent / "data/grub/debian12-xen-4.17.cfg").read_text()
UUID = "10210e26-d78a-41a2-a854-14d8bcf9d052"


def test_every_entry_in_menu_order() -> None:
    entries = parse_grub_cfg(CFG)
    assert [e.title for e in entries] == [
        "Debian GNU/Linux",
        "Advanced options for Debian GNU/Linux > Debian GNU/Linux, with Linux 6.1.0-50-amd64",
        "Debian GNU/Linux, with Xen hypervisor",
        "Advanced options for Debian GNU/Linux (with Xen hypervisor) > Xen hypervisor, version "
        "4.17-amd64 > Debian GNU/Linux, with Xen 4.17-amd64 and Linux 6.1.0-50-amd64",
        "Advanced options for Debian GNU/Linux (with Xen hypervisor) > Xen hypervisor, version "
        "4.17-amd64.efi > Debian GNU/Linux, with Xen 4.17-amd64.efi and Linux 6.1.0-50-amd64",
    ]
    plain = entries[0]
    assert plain.hypervisor is None
    assert plain.kernel == "/boot/vmlinuz-6.1.0-50-amd64"


def test_the_xen_entry_of_the_build() -> None:
    entry = find_xen_entry(parse_grub_cfg(CFG), "/boot/xen-4.17-amd64.gz")
    assert entry.default_path == f"xen-gnulinux-simple-{UUID}"
    assert entry.kernel == "/boot/vmlinuz-6.1.0-50-amd64"  # the dom0 kernel, not the initrd
    assert "console=com1 com1=115200,8n1" in entry.xen_args


def test_nested_entry_path_joins_submenu_ids() -> None:
    entries = parse_grub_cfg(CFG)
    efi = find_xen_entry(entries, "/boot/xen-4.17-amd64.efi")
    assert efi.ids == (f"gnulinux-advanced-{UUID}",
                       f"xen-hypervisor-4.17-amd64.efi-{UUID}",
                       f"xen-gnulinux-6.1.0-50-amd64-advanced-{UUID}")
    assert efi.default_path == ">".join(efi.ids)


def test_missing_hypervisor_lists_what_the_entries_boot() -> None:
    with pytest.raises(GrubEntryNotFound, match=r"no GRUB entry boots /boot/xen-4.18.gz; "
                       r"entries boot: /boot/xen-4.17-amd64.efi, /boot/xen-4.17-amd64.gz"):
        find_xen_entry(parse_grub_cfg(CFG), "/boot/xen-4.18.gz")


def test_saved_entry_from_grub_editenv_list() -> None:
    listed = "next_entry=\nsaved_entry=a>b>c\nsaved_entry_x=d\n"
    assert parse_saved_entry(listed) == "a>b>c"
    assert parse_saved_entry("next_entry=\n# saved_entry=a\n") is None
