"""Builds derived by repacking: the defective vif-bridge build and the bisection series,
on small .deb files this test builds itself with dpkg-deb."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from harness.build import load_build
from harness.build_cache import VlabBuildError
from harness.debian_packages import compare_versions, deb_fields, repack
from harness.vlab.derived_builds import (
    BASE,
    DEFECT,
    HYPERVISOR,
    VIF_BRIDGE,
    break_vif_bridge,
    derive_build,
    make_derived_builds,
)

VERSION = "4.17.7+13-g2445b30a44-0+deb12u1"
VIF_BRIDGE_SCRIPT = b"""#!/bin/bash
dir=$(dirname "$0")
. "$dir/vif-common.sh"
echo "bridged $command $dev"
"""
# Stands in for Xen's vif-common.sh and xen-hotplug-common.sh: the arguments and
# `fatal` as the scripts the defect relies on define them, minus xenstore.
VIF_COMMON = b"""command=$1
dev=vif1.0
fatal() { echo "fatal: $*" >&2; exit 1; }
"""


def _deb(out: Path, name: str, version: str, files: dict[str, tuple[bytes, int]],
         extra: str = "", source: str = "xen") -> Path:
    tree = out / f"tree-{name}"
    for path, (content, mode) in files.items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_bytes(content)
        (tree / path).chmod(mode)
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: {name}\nSource: {source}\nVersion: {version}\nArchitecture: amd64\n"
        f"Maintainer: nobody <nobody@example.org>\n{extra}Description: test package\n")
    # as debhelper does: files under /etc are conffiles, and md5sums leaves them out
    conffiles = [path for path in files if path.startswith("etc/")]
    if conffiles:
        (tree / "DEBIAN/conffiles").write_text("".join(f"/{path}\n" for path in conffiles))
    (tree / "DEBIAN/md5sums").write_text("".join(
        f"{hashlib.md5(content).hexdigest()}  {path}\n"
        for path, (content, _) in files.items() if path not in conffiles))
    deb = out / f"{name}_{version}_amd64.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree), str(deb)],
                   check=True, capture_output=True)
    return deb


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small 4.17.7 set: hypervisor, utils pinning utils-common exactly, utils-common
    with vif-bridge, and a library of another source."""
    root = tmp_path_factory.mktemp("base")
    debs = root / "debs"
    debs.mkdir()
    _deb(debs, HYPERVISOR, VERSION, {"boot/xen-4.17-amd64.gz": (b"xen", 0o644)})
    _deb(debs, "xen-utils-common", VERSION, {
        VIF_BRIDGE: (VIF_BRIDGE_SCRIPT, 0o755),
        "etc/xen/scripts/vif-route": (b"#!/bin/sh\n", 0o755),
        "etc/xen/xl.conf": (b"# xl\n", 0o640),
    }, extra="Depends: libyajl2 (>= 2.0.4)\n")
    _deb(debs, "xen-utils-4.17", VERSION, {"usr/sbin/xl": (b"xl", 0o4755)},
         extra=f"Depends: libc6, xen-utils-common (= {VERSION}), xen-hypervisor-common\n")
    _deb(debs, "libyajl2", "2.1.0-3+deb12u2", {"usr/lib/libyajl.so.2": (b"so", 0o644)},
         source="yajl")
    for tree in root.glob("debs/tree-*"):
        subprocess.run(["rm", "-rf", str(tree)], check=True)
    return debs


def _listing(deb: Path) -> dict[str, tuple[str, str]]:
    out = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[5]: (line.split()[0], line.split()[1]) for line in out.splitlines()}


def _one(directory: Path, name: str) -> Path:
    (deb,) = directory.glob(f"{name}_*.deb")
    return deb


def test_defective_build(base: Path, tmp_path: Path) -> None:
    versions = derive_build(base, tmp_path / "broken", "+xenhil.vifbroken1",
                            edits={VIF_BRIDGE: break_vif_bridge})
    broken = VERSION + "+xenhil.vifbroken1"
    # utils pins utils-common exactly: it moves with it, so the set stays installable
    assert versions == {HYPERVISOR: VERSION, "xen-utils-common": broken,
                        "xen-utils-4.17": broken, "libyajl2": "2.1.0-3+deb12u2"}
    build = load_build(tmp_path / "broken")
    assert {p.name: p.version for p in build.packages} == versions
    assert build.xen_version == "4.17.7"
    utils = deb_fields(_one(tmp_path / "broken", "xen-utils-4.17"), "Depends")["depends"]
    assert utils == f"libc6, xen-utils-common (= {broken}), xen-hypervisor-common"
    # unchanged packages are the same files
    for name in (HYPERVISOR, "libyajl2"):
        assert _one(tmp_path / "broken", name).stat().st_ino == _one(base, name).stat().st_ino
    for name in ("xen-utils-common", "xen-utils-4.17"):
        assert _listing(_one(tmp_path / "broken", name)) == _listing(_one(base, name))
    assert _listing(_one(tmp_path / "broken", "xen-utils-4.17"))["./usr/sbin/xl"] == \
        ("-rwsr-xr-x", "root/root")

    tree = tmp_path / "tree"
    subprocess.run(["dpkg-deb", "-R", str(_one(tmp_path / "broken", "xen-utils-common")),
                    str(tree)], check=True)
    script = tree / VIF_BRIDGE
    assert DEFECT in script.read_bytes()
    assert os.stat(script).st_mode & 0o777 == 0o755
    assert f"/{VIF_BRIDGE}\n" in (tree / "DEBIAN/conffiles").read_text()
    (script.parent / "vif-common.sh").write_bytes(VIF_COMMON)
    for command in ("online", "add"):
        run = subprocess.run(["bash", str(script), command], capture_output=True, text=True,
                             check=False)
        assert run.returncode == 1
        assert f"xen-hil deliberate defect: refusing {command} of vif1.0" in run.stderr
        assert "bridged" not in run.stdout
    # taking a vif down still works, so a failed guest is cleaned up
    offline = subprocess.run(["bash", str(script), "offline"], capture_output=True, text=True,
                             check=False)
    assert (offline.returncode, offline.stdout) == (0, "bridged offline vif1.0\n")


def test_repack_edits_a_file_and_its_md5sum(base: Path, tmp_path: Path) -> None:
    original = _one(base, "xen-utils-4.17")
    new = repack(original, tmp_path, "9.9-1", edits={"usr/sbin/xl": lambda old: old + b"!"})
    assert new == tmp_path / "xen-utils-4.17_9.9-1_amd64.deb"
    assert deb_fields(new, "Version") == {"version": "9.9-1"}
    assert _listing(new) == _listing(original)
    tree = tmp_path / "tree"
    subprocess.run(["dpkg-deb", "-R", str(new), str(tree)], check=True)
    assert (tree / "usr/sbin/xl").read_bytes() == b"xl!"
    assert (tree / "DEBIAN/md5sums").read_text() == \
        f"{hashlib.md5(b'xl!').hexdigest()}  usr/sbin/xl\n"
    assert {p.name for p in tmp_path.iterdir()} == {new.name, "tree"}  # work dir removed


def test_vif_bridge_without_the_anchor_is_refused() -> None:
    with pytest.raises(VlabBuildError, match=r"vif-common\.sh"):
        break_vif_bridge(b"#!/bin/sh\nexit 0\n")


def test_an_edit_of_a_path_no_package_ships_is_refused(base: Path, tmp_path: Path) -> None:
    with pytest.raises(VlabBuildError, match="0 packages ship /etc/xen/scripts/vif-nat"):
        derive_build(base, tmp_path / "x", "+x", edits={"etc/xen/scripts/vif-nat": bytes})


def _cache(base: Path, tmp_path: Path, recipe: str) -> Path:
    builds = tmp_path / "cache/vlab/builds"
    builds.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(base), str(builds / BASE)], check=True)
    (builds / f".{BASE}.stamp").write_text(json.dumps({"recipe": recipe}))
    return tmp_path / "cache"


def test_series_sorts_by_version_and_is_cached(base: Path, tmp_path: Path) -> None:
    cache = _cache(base, tmp_path, "r1")
    made = make_derived_builds(cache)
    builds = cache / "vlab/builds"
    series = sorted((builds / "series").iterdir())
    assert made == [builds / f"{BASE}-vifbroken", *series]
    # the directory holds the series only, ready for a bisection
    assert [p.name for p in series] == [f"{BASE}+xenhil.{n}" for n in (1, 2, 3, 4)]

    def version(build: Path) -> str:
        return load_build(build).hypervisor.version

    by_version = sorted(series, key=functools.cmp_to_key(
        lambda a, b: compare_versions(version(a), version(b))))
    assert by_version == series
    assert compare_versions(VERSION, version(series[0])) == -1
    for n, build in enumerate(series, 1):
        packages = {p.name: p.version for p in load_build(build).packages}
        # every Xen package moves, other sources stay
        assert packages == {HYPERVISOR: f"{VERSION}+xenhil.{n}",
                            "xen-utils-common": f"{VERSION}+xenhil.{n}",
                            "xen-utils-4.17": f"{VERSION}+xenhil.{n}",
                            "libyajl2": "2.1.0-3+deb12u2"}
        listing = subprocess.run(["dpkg-deb", "--fsys-tarfile",
                                  str(_one(build, "xen-utils-common"))],
                                 capture_output=True, check=True).stdout
        assert (DEFECT in listing) == (n >= 3)

    # up to date: nothing is rebuilt; a new base build rebuilds everything
    inode = _one(series[0], HYPERVISOR).stat().st_ino
    assert make_derived_builds(cache) == made
    assert _one(series[0], HYPERVISOR).stat().st_ino == inode
    (builds / f".{BASE}.stamp").write_text(json.dumps({"recipe": "r2"}))
    make_derived_builds(cache)
    assert _one(series[0], HYPERVISOR).stat().st_ino != inode
    assert not [p for p in builds.iterdir() if p.name.startswith(".derived-")]


def test_no_base_build_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VlabBuildError, match="fetch it first"):
        make_derived_builds(tmp_path)
