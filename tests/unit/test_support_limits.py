"""Support archives are the host's: crafted ones (traversal, bombs, huge members, bad
manifests) are refused or confined, made here in tmp_path and kept small on disk."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

import harness.support
from harness.errors import ConfigError
from harness.support import (
    BUNDLE_NAME,
    SupportBundleBroken,
    SupportIndex,
    archive_stem,
    archives_in,
    bundle_name,
    check_bundle_name,
    index_sos,
    read_to_end,
    unpack,
)


def member(name: str, data: bytes = b"", **fields: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]],
             mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def test_members_outside_the_destination_are_left_out(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "evil.tar.gz", [
        member("top/ok.txt", b"fine"),
        member("../evil"),
        member("/abs-evil"),
        member("top/../../evil2"),
        member("top/passwd", type=tarfile.SYMTYPE, linkname="/etc/passwd"),
        member("top/up", type=tarfile.SYMTYPE, linkname="../../outside"),
        member("top/hard", type=tarfile.LNKTYPE, linkname="../../outside"),
    ])
    destination = tmp_path / "bundle" / "evil"
    left_out = unpack(archive, destination)
    assert len(left_out) == 6, left_out
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "bundle", "bundle/evil", "bundle/evil/top", "bundle/evil/top/ok.txt", "evil.tar.gz"]


@pytest.mark.parametrize("name", ["...tar", "..tar.gz", ".tgz", "-x.tar", ".hidden.tar"])
def test_archive_names_that_would_unpack_outside_the_bundle(name: str) -> None:
    with pytest.raises(SupportBundleBroken, match="not a plain file name"):
        archive_stem(name)
    with pytest.raises(SupportBundleBroken):
        archives_in("/d", [name])


def test_too_many_members(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness.support, "MAX_MEMBERS", 10)
    archive = make_tar(tmp_path / "many.tar.gz", [member(f"f{n}") for n in range(11)])
    with pytest.raises(SupportBundleBroken, match="more than 10 members"):
        read_to_end(archive)
    with pytest.raises(SupportBundleBroken, match="more than 10 members"):
        unpack(archive, tmp_path / "out")


def test_a_header_claiming_terabytes_is_refused_unread(tmp_path: Path) -> None:
    """A bomb with the default limits: 10 GiB declared, a few KiB on disk."""
    archive = tmp_path / "bomb.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("huge")
        info.size = 10 * 2**30
        tar.addfile(info)  # the header only
    assert archive.stat().st_size < 64 * 1024
    with pytest.raises(SupportBundleBroken, match="'huge' has 10737418240 bytes"):
        read_to_end(archive)
    with pytest.raises(SupportBundleBroken, match="'huge' has"):
        unpack(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "huge").exists()


def test_a_huge_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness.support, "MAX_MEMBER_BYTES", 2**20)
    archive = make_tar(tmp_path / "big.tar.gz", [member("zeros", bytes(2**20 + 1))])
    with pytest.raises(SupportBundleBroken, match="'zeros' has 1048577 bytes"):
        read_to_end(archive)


def test_too_much_unpacked_in_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness.support, "MAX_UNPACKED_BYTES", 2000)
    archive = make_tar(tmp_path / "sum.tar.gz", [member(f"f{n}", bytes(900)) for n in range(3)])
    with pytest.raises(SupportBundleBroken, match="more than 2000 bytes unpacked"):
        read_to_end(archive)


def test_an_archive_too_big_to_take(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = make_tar(tmp_path / "a.tar.gz", [member("f", b"x")])
    monkeypatch.setattr(harness.support, "MAX_ARCHIVE_BYTES", archive.stat().st_size - 1)
    with pytest.raises(SupportBundleBroken, match="more than a support archive may have"):
        read_to_end(archive)


def sos_tree(tmp_path: Path, manifest: str) -> Path:
    top = tmp_path / "bundle" / "sosreport-h" / "sosreport-h"
    (top / "sos_reports").mkdir(parents=True)
    (top / "sos_reports" / "manifest.json").write_text(manifest)
    return top


@pytest.mark.parametrize("manifest", ["{not json", "[1, 2]", '{"components": 3}',
                                      '{"components": {"report": {"plugins": {"p": 1}}}}'])
def test_a_malformed_manifest_is_a_clear_error(tmp_path: Path, manifest: str) -> None:
    top = sos_tree(tmp_path, manifest)
    with pytest.raises(SupportBundleBroken, match=r"manifest\.json: not a sos manifest"):
        index_sos(top, SupportIndex(), tmp_path / "bundle")


def test_manifest_paths_outside_the_bundle_are_not_looked_at(tmp_path: Path) -> None:
    copied = ["/etc/hostname", "../../../secret", "/../../../../secret", "/etc/../../../secret"]
    manifest = {"components": {"report": {"plugins": {"host": {
        "files": [{"files_copied": copied}]}}}}}
    top = sos_tree(tmp_path, json.dumps(manifest))
    (tmp_path / "secret").write_text("outside")
    (top / "etc").mkdir()
    (top / "etc" / "hostname").write_text("h\n")
    index = SupportIndex()
    index_sos(top, index, tmp_path / "bundle")
    assert [item.path for item in index.files("sos/host")] == [
        "sosreport-h/sosreport-h/etc/hostname"]


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "-rf", "x y", "x\n"])
def test_bundle_names_are_one_plain_component(name: str) -> None:
    with pytest.raises(ConfigError, match="not a plain file name"):
        check_bundle_name(name)


def test_bundle_name_of_a_hostile_host_name() -> None:
    name = bundle_name("vlab1;touch /tmp/pwned/../x")
    assert BUNDLE_NAME.fullmatch(name) and "/" not in name and check_bundle_name(name)
