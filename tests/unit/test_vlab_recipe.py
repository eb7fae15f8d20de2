"""Pure logic of the virtual lab's image and build recipes (no root, no network)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness import build_cache
from harness.build_cache import VlabBuildError, cache_lock, publish, stamp_matches
from harness.vlab.builds import binaries_of
from harness.vlab.image import FILES, debian_mirror, recipe_hash

from .locks import held_flock

SOURCES = """\
Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://mirror.example/debian
 http://mirror2.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def test_mirror_is_the_source_of_the_suite() -> None:
    assert debian_mirror(SOURCES, "bookworm") == "http://mirror.example/debian"
    assert debian_mirror(SOURCES, "bookworm-security") == "http://security.example/debian-security"


def test_disabled_or_missing_suite_is_an_error() -> None:
    disabled = SOURCES.replace("Suites: bookworm bookworm-updates", "Suites: bookworm\nEnabled: no")
    with pytest.raises(VlabBuildError, match="no APT source for suite bookworm"):
        debian_mirror(disabled, "bookworm")
    with pytest.raises(VlabBuildError, match="trixie"):
        debian_mirror(SOURCES, "trixie")


def _fake_root(tmp_path: Path, macs: dict[str, str]) -> Path:
    for dev, mac in macs.items():
        (tmp_path / "sys/class/net" / dev).mkdir(parents=True)
        (tmp_path / "sys/class/net" / dev / "address").write_text(mac + "\n")
    (tmp_path / "etc/network/interfaces.d").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    return tmp_path


def _identity(root: Path) -> subprocess.CompletedProcess[str]:
    script = str(FILES / "vlab-identity")
    env = {**os.environ, "VLAB_IDENTITY_WAIT": "0"}  # the fake NICs are all there already
    return subprocess.run(
        ["sh", script, str(root)], capture_output=True, text=True, check=False, env=env
    )


@pytest.mark.parametrize(("nn", "n"), [("01", 1), ("02", 2), ("0a", 10)])
def test_identity_from_mac(tmp_path: Path, nn: str, n: int) -> None:
    root = _fake_root(
        tmp_path,
        {"lo": "00:00:00:00:00:00", "eth0": f"52:54:00:58:01:{nn}", "eth1": f"52:54:00:58:02:{nn}"},
    )
    proc = _identity(root)
    assert proc.returncode == 0, proc.stderr
    assert (root / "etc/hostname").read_text() == f"vlab{n}\n"
    assert (root / "proc/sys/kernel/hostname").read_text() == f"vlab{n}\n"
    config = (root / "etc/network/interfaces.d/vlab").read_text()
    assert "iface eth0 inet static\n    address 192.0.2.15/24\n    gateway 192.0.2.2\n" in config
    assert f"iface xenbr0 inet static\n    address 198.51.100.{10 + n}/24\n" in config
    assert "bridge_ports eth1\n" in config


def test_identity_follows_the_mac_not_the_name(tmp_path: Path) -> None:
    root = _fake_root(tmp_path, {"eth0": "52:54:00:58:02:03", "eth1": "52:54:00:58:01:03"})
    assert _identity(root).returncode == 0
    config = (root / "etc/network/interfaces.d/vlab").read_text()
    assert "iface eth1 inet static" in config
    assert "bridge_ports eth0\n" in config


def test_identity_without_link_nic_keeps_an_empty_bridge(tmp_path: Path) -> None:
    root = _fake_root(tmp_path, {"eth0": "52:54:00:58:01:01"})
    assert _identity(root).returncode == 0
    assert "bridge_ports none\n" in (root / "etc/network/interfaces.d/vlab").read_text()


@pytest.mark.parametrize("mac", ["52:54:00:12:34:56", "52:54:00:58:01:00"])
def test_identity_fails_on_unknown_host(tmp_path: Path, mac: str) -> None:
    root = _fake_root(tmp_path, {"eth0": mac})
    proc = _identity(root)
    assert proc.returncode == 1
    assert "vlab-identity:" in proc.stderr
    assert not (root / "etc/hostname").exists()


PACKAGES_INDEX = """\
Package: libxencall1
Source: xen
Version: 4.17.5+72-g01140da4e8-1
Architecture: amd64

Package: xen-hypervisor-4.17-amd64
Source: xen
Version: 4.17.7+13-g2445b30a44-0+deb12u1
Architecture: amd64

Package: xen-utils-common
Source: xen (4.17.5+72-g01140da4e8-1)
Version: 4.17.5+72-g01140da4e8-1
Architecture: all

Package: xenstore-utils
Source: xen-other
Version: 4.17.5+72-g01140da4e8-1

Package: xen-tools
Version: 4.17.5+72-g01140da4e8-1
Description: multiline
 Source: xen
"""


def test_binaries_of_source_at_version() -> None:
    assert binaries_of(PACKAGES_INDEX, "xen", "4.17.5+72-g01140da4e8-1") == {
        "libxencall1",
        "xen-utils-common",
    }
    assert binaries_of(PACKAGES_INDEX, "xen", "4.17.7+13-g2445b30a44-0+deb12u1") == {
        "xen-hypervisor-4.17-amd64"
    }


def test_recipe_hash_covers_the_files() -> None:
    # reads every file the image installs: a file missing from the package fails here
    assert len(recipe_hash()) == 64


def test_publish_then_stamp(tmp_path: Path) -> None:
    dest, stamp = tmp_path / "out", tmp_path / ".out.stamp"
    dest.mkdir()
    (dest / "old.deb").write_text("old")
    staged = tmp_path / "tmp"
    staged.mkdir()
    (staged / "new.deb").write_text("new")

    publish({staged: dest}, stamp, "r1", {"version": "1"})

    assert [p.name for p in dest.iterdir()] == ["new.deb"]
    assert not staged.exists()
    assert stamp_matches(stamp, "r1", (dest,))
    assert not stamp_matches(stamp, "r2", (dest,))
    assert not stamp_matches(stamp, "r1", (dest / "missing",))
    assert not stamp_matches(tmp_path / "no-stamp", "r1", (dest,))


def test_a_build_waits_for_another_in_the_same_cache_but_not_forever(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_cache, "BUILD_LOCK_TIMEOUT", 0.5)
    with held_flock(tmp_path / ".lock"), pytest.raises(
            VlabBuildError, match=r"\.lock: still locked after 0 s by another build in "), \
            cache_lock(tmp_path):
        pass
    with cache_lock(tmp_path):  # free again
        pass

