"""Support bundle checks and indexing, on archives recorded from the virtual lab's
Debian 12 host (tests/data/support/README.md says how each was made)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.support import (
    SKIPPED,
    XEN_SECTION,
    SupportBundleBroken,
    SupportIndex,
    archive_stem,
    archives_in,
    collector_for,
    index_archive,
    read_to_end,
    unpack,
    verify_archive,
    xen_section_script,
)

DATA = Path(__file__).parent.parent / "data" / "support"
SOS_PLAIN = DATA / "sosreport-sup1-plain-debian12.tar.gz"
XEN_PLAIN = DATA / "xen-sup1-plain-debian12.tar.gz"
XEN_DOM0 = DATA / "xen-sup1-xen-4.17.7.tar.gz"


def algorithm_of(archive: Path) -> str:
    """Debian's sos writes an .md5 beside its archive, the harness's Xen section .sha256."""
    return "md5" if archive.name.startswith("sosreport-") else "sha256"


def checksum_of(archive: Path) -> Path:
    return archive.with_name(f"{archive.name}.{algorithm_of(archive)}")


@pytest.mark.parametrize("archive", [SOS_PLAIN, XEN_PLAIN, XEN_DOM0], ids=lambda p: p.name)
def test_recorded_archives_are_whole(archive: Path) -> None:
    assert verify_archive(archive, checksum_of(archive), algorithm_of(archive)) > 0


def truncated_copy(archive: Path, tmp_path: Path) -> Path:
    """The archive cut off halfway, as an interrupted transfer leaves it; its checksum
    file stays the collector's."""
    copy = tmp_path / archive.name
    copy.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    shutil.copy(checksum_of(archive), checksum_of(copy))
    return copy


def test_truncated_archive_is_broken_by_its_checksum(tmp_path: Path) -> None:
    copy = truncated_copy(SOS_PLAIN, tmp_path)
    with pytest.raises(SupportBundleBroken, match=r"md5 \w+ does not match .*collect it again"):
        verify_archive(copy, checksum_of(copy), "md5")


def test_truncated_archive_does_not_read_to_its_end(tmp_path: Path) -> None:
    """Even where no checksum can be trusted (written after the fact, or none)."""
    copy = truncated_copy(SOS_PLAIN, tmp_path)
    with pytest.raises(SupportBundleBroken, match=r"does not read to its end.*truncated"):
        read_to_end(copy)


def test_missing_or_empty_checksum_file_is_broken(tmp_path: Path) -> None:
    copy = tmp_path / XEN_DOM0.name
    shutil.copy(XEN_DOM0, copy)
    with pytest.raises(SupportBundleBroken, match=r"checksum file .* missing"):
        verify_archive(copy, checksum_of(copy), "sha256")
    checksum_of(copy).write_text("")
    with pytest.raises(SupportBundleBroken, match="no checksum in it"):
        verify_archive(copy, checksum_of(copy), "sha256")


def unpacked_index(archive: Path, tmp_path: Path) -> tuple[SupportIndex, Path]:
    index = SupportIndex()
    unpacked = tmp_path / archive_stem(archive.name)
    assert unpack(archive, unpacked) == []
    index_archive(unpacked, index, tmp_path)
    return index, unpacked


def test_sos_archive_sections(tmp_path: Path) -> None:
    index, _ = unpacked_index(SOS_PLAIN, tmp_path)
    assert set(index.sections) == {"sos/grub2", "sos/networking"}
    grub = [item.path for item in index.files("sos/grub2")]
    # a file sos copied (from its manifest) and a command's output
    assert any(path.endswith("/boot/grub/grub.cfg") for path in grub), grub
    assert any("/sos_commands/grub2/ls_-lanR_.boot" in path for path in grub), grub
    networking = [Path(item.path).name for item in index.files("sos/networking")]
    assert "ip_route_show_table_all" in networking
    assert "[sos/grub2] 12 files" in index.render()


def test_xen_section_on_a_host_without_xen_is_skipped(tmp_path: Path) -> None:
    index, _ = unpacked_index(XEN_PLAIN, tmp_path)
    assert index.files(XEN_SECTION) == []
    assert index.not_run[XEN_SECTION].startswith("not a Xen dom0: /proc/xen/capabilities is")
    assert f"[{XEN_SECTION}] not run: not a Xen dom0" in index.render()


def test_xen_section_on_dom0_has_every_item(tmp_path: Path) -> None:
    index, unpacked = unpacked_index(XEN_DOM0, tmp_path)
    files = {Path(item.path).name: item.size for item in index.files(XEN_SECTION)}
    for name in ("xl-info.txt", "xl-list.txt", "xl-list-long.txt", "xl-dmesg.txt",
                 "xenstore-ls.txt", "xen-services.txt", "exit-codes.txt"):
        assert files.get(name), f"{name} missing or empty: {sorted(files)}"
    xl_info = next(unpacked.glob("**/xl-info.txt")).read_text()
    assert "xen_version            : 4.17.7" in xl_info
    assert XEN_SECTION not in index.not_run


def test_xen_section_script_skips_where_no_xen_runs(tmp_path: Path) -> None:
    """The script itself, run here (the machine running the tests is no Xen dom0)."""
    if Path("/proc/xen/capabilities").exists():
        pytest.skip("this machine is a Xen domain: the script would not skip here")
    subprocess.run(["bash", "-c", xen_section_script("t1", str(tmp_path))], check=True)
    archive = tmp_path / "xen-t1.tar.gz"
    assert verify_archive(archive, checksum_of(archive), "sha256") == 2  # dir + SKIPPED
    assert (tmp_path / "xen-t1" / SKIPPED).read_text().startswith("not a Xen dom0")


def test_collectors_per_family() -> None:
    sos = collector_for("debian")
    command = sos.commands("h1-x", "/var/tmp/d")[0]
    assert command.startswith("sos report --batch")
    assert command.endswith("--only-plugins grub2")
    suse = collector_for("suse")
    assert suse.commands("h1-x", "/var/tmp/d") == ["supportconfig -Q -B h1-x -R /var/tmp/d"]
    with pytest.raises(ConfigError, match="no support collector for distro family 'rhel'"):
        collector_for("rhel")


def test_archives_paired_with_their_checksum_files() -> None:
    """File names as Debian's sos and the Xen section left them on the host."""
    sos = "sosreport-vlab1-sup1-20261126-010732-2026-11-26-lzjhfff.tar.gz"
    names = [sos, f"{sos}.md5", "xen-sup1-20261126-010732", "xen-sup1-20261126-010732.tar.gz"]
    first, second = archives_in("/d", names)
    assert (first.path, first.checksum_path, first.algorithm) == (
        f"/d/{sos}", f"/d/{sos}.md5", "md5")
    assert second.checksum_path is None  # no .sha256 written: reported when checked


def test_archive_stem() -> None:
    assert archive_stem("sosreport-h-l-2026-11-26-abc.tar.xz") == "sosreport-h-l-2026-11-26-abc"
    assert archive_stem("scc_h1.txz") == "scc_h1"
