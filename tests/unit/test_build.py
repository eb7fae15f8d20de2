"""Reading a build from real packages: Debian's Xen 4.17.5 and 4.17.7 sets that
`xenhil vlab build` fetches (make test builds them before the tests)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.build import BuildError, load_build
from harness.install import hypervisor_image
from harness.migration_hosts import unmigratable_guest_types
from harness.paths import cache_dir
from harness.vlab.builds import fetch_builds
from harness.vlab.image import build_image


@pytest.fixture(scope="module")
def builds() -> dict[str, Path]:
    paths = fetch_builds(cache_dir(), build_image(cache_dir()))
    return {path.name.removeprefix("xen-"): path for path in paths}


@pytest.mark.parametrize(("version", "full"), [
    ("4.17.5", "4.17.5+72-g01140da4e8-1"),
    ("4.17.7", "4.17.7+13-g2445b30a44-0+deb12u1"),
])
def test_version_comes_from_the_hypervisor_package(builds: dict[str, Path], version: str,
                                                   full: str) -> None:
    build = load_build(builds[version])
    assert build.format == "deb"
    assert build.hypervisor.name == "xen-hypervisor-4.17-amd64"
    assert build.hypervisor.version == full
    assert build.xen_version == version
    assert hypervisor_image(build) == "/boot/xen-4.17-amd64.gz"
    assert {"xen-utils-4.17", "xen-utils-common"} <= {p.name for p in build.packages}


def test_file_names_do_not_matter(builds: dict[str, Path], tmp_path: Path) -> None:
    hypervisor = next(builds["4.17.5"].glob("xen-hypervisor-4.17-amd64_*.deb"))
    shutil.copy(hypervisor, tmp_path / "renamed.deb")
    assert load_build(tmp_path).xen_version == "4.17.5"


def test_a_build_without_hypervisor(builds: dict[str, Path], tmp_path: Path) -> None:
    for deb in builds["4.17.7"].glob("xen-utils-*.deb"):
        shutil.copy(deb, tmp_path)
    with pytest.raises(BuildError, match=r"no hypervisor package \(xen-hypervisor-\*\) among"):
        load_build(tmp_path)


def test_missing_empty_and_broken_builds(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"no such directory"):
        load_build(tmp_path / "nope")
    with pytest.raises(BuildError, match=r"no .deb or .rpm files in it"):
        load_build(tmp_path)
    (tmp_path / "broken.deb").write_bytes(b"!<arch>\nnot really\n")
    with pytest.raises(BuildError, match=r"broken.deb: not a readable .deb"):
        load_build(tmp_path)


def test_mixed_formats(tmp_path: Path) -> None:
    (tmp_path / "a.deb").write_bytes(b"")
    (tmp_path / "b.rpm").write_bytes(b"")
    with pytest.raises(BuildError, match=r"mixes .deb and .rpm"):
        load_build(tmp_path)


def test_hypervisor_kconfig_says_which_guests_can_live_migrate(
        builds: dict[str, Path]) -> None:
    """Debian's 4.17.7 is built without shadow paging, its 4.17.5 with it: PV guests of
    4.17.7 cannot be live-migrated, and that is known before any host boots."""
    newer, older = load_build(builds["4.17.7"]), load_build(builds["4.17.5"])
    newer_config, older_config = newer.hypervisor_config(), older.hypervisor_config()
    assert newer_config is not None and older_config is not None
    assert newer_config["CONFIG_SHADOW_PAGING"] == "n"
    assert older_config["CONFIG_SHADOW_PAGING"] == "y"
    assert newer_config["CONFIG_HVM"] == "y"
    assert list(unmigratable_guest_types(newer)) == ["pv"]
    assert "without CONFIG_SHADOW_PAGING" in unmigratable_guest_types(newer)["pv"]
    assert unmigratable_guest_types(older) == {}


def test_a_hypervisor_package_without_kconfig(builds: dict[str, Path], tmp_path: Path) -> None:
    """Nothing is decided before boot then: the booted host's `xl info` decides."""
    tree = tmp_path / "tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        "Package: xen-hypervisor-4.17-amd64\nVersion: 4.17.7-1\nArchitecture: amd64\n"
        "Maintainer: nobody <nobody@example.org>\nDescription: no Kconfig\n")
    (tree / "boot").mkdir()
    (tree / "boot" / "xen-4.17-amd64.gz").write_bytes(b"not a hypervisor")
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree),
                    str(build_dir / "xen.deb")], check=True, capture_output=True)
    build = load_build(build_dir)
    assert build.hypervisor_config() is None
    assert unmigratable_guest_types(build) == {}
