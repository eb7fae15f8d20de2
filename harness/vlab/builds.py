"""The default Xen builds under test, as directories of .deb files.

Each directory holds every package that turns the base image (image.py) into a Xen
host of one version: the Xen packages, all pinned to that version, and each of their
dependencies that the image lacks. The harness reads name and version from the
packages themselves, so a build directory holds nothing but .deb files.

Same cache rules as the image: a stamp per build (beside its directory) records the
recipe, which includes the image's package set; builds go to a temporary directory
first and are moved into place at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from pathlib import Path

from ..build_cache import (
    VlabBuildError,
    cache_lock,
    publish,
    remove_stale_temps,
    remove_tree,
    require_tools,
    run,
    stage,
    stamp_matches,
)
from ..debian_packages import PrivateApt, deb822_fields, deb_fields
from .image import Image

log = logging.getLogger(__name__)

# directory name -> version of Debian's xen source package (bookworm, bookworm-security)
BUILDS = {
    "xen-4.17.5": "4.17.5+72-g01140da4e8-1",
    "xen-4.17.7": "4.17.7+13-g2445b30a44-0+deb12u1",
}
SOURCE = "xen"
HYPERVISOR = "xen-hypervisor-4.17-amd64"
# xen-system-amd64's set (xen-hypervisor-common is a Recommends: dpkg -i would skip
# it) plus xen-utils-common, and the device model HVM guests need (Debian builds it
# from qemu, not from xen); the resolver adds libxen* and the rest.
XEN_PACKAGES = (HYPERVISOR, "xen-hypervisor-common", "xen-utils-4.17", "xen-utils-common")
DEVICE_MODEL = "qemu-system-xen"  # at the version the APT sources offer
REQUEST = (*XEN_PACKAGES, DEVICE_MODEL)
APT_HELPER = "/usr/lib/apt/apt-helper"
TOOLS = {"apt-get": "apt", APT_HELPER: "apt", "dpkg-deb": "dpkg"}


def fetch_builds(cache: Path, image: Image, *, force: bool = False) -> list[Path]:
    """Fetches the default Xen builds into `cache`/vlab/builds/NAME; returns their
    directories in the order of BUILDS. Up-to-date builds are not fetched again."""
    if not image.dpkg_status.exists():
        raise VlabBuildError(f"no {image.dpkg_status}: build the image first (build_image)")
    root = cache / "vlab"
    builds = root / "builds"
    builds.mkdir(parents=True, exist_ok=True)
    base = hashlib.sha256(image.dpkg_status.read_bytes()).hexdigest()
    done = []
    with cache_lock(root):
        apt: _Apt | None = None
        for name, version in BUILDS.items():
            dest = builds / name
            stamp = builds / f".{name}.stamp"
            recipe = _recipe(version, base)
            if not force and stamp_matches(stamp, recipe, (dest,)):
                log.info("%s up to date: %s", name, dest)
                done.append(dest)
                continue
            if apt is None:
                require_tools(TOOLS)
                apt = _Apt(root / "apt", image.dpkg_status)
                with stage("apt-get update", log):
                    apt.update()
            remove_stale_temps(builds, f".{name}-")
            started = time.monotonic()
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=builds))
            try:
                with stage(f"{name} download", log):
                    debs = _fetch(apt, version, tmp)
                count = _check(debs, version)
                publish({debs: dest}, stamp, recipe, {"version": version, "packages": count})
            finally:
                remove_tree(tmp)
            size = sum(p.stat().st_size for p in dest.iterdir())
            log.info("%s fetched in %.0f s: %d packages, %.0f MB, %s",
                     name, time.monotonic() - started, count, size / 1e6, dest)
            done.append(dest)
    return done


def _recipe(version: str, base: str) -> str:
    recipe = {"source": SOURCE, "version": version, "request": REQUEST, "base": base}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


class _Apt(PrivateApt):
    """PrivateApt with the image's dpkg status as the installed set, and pins of its
    own: the controller's are not used."""

    def __init__(self, state: Path, dpkg_status: Path) -> None:
        super().__init__(state, dpkg_status)
        (state / "preferences.d").mkdir(exist_ok=True)
        self.preferences = state / "preferences"
        self.options += [
            "-o", f"Dir::Etc::Preferences={self.preferences}",
            "-o", f"Dir::Etc::PreferencesParts={state / 'preferences.d'}",
        ]
        self.preferences.write_text("")

    def binaries(self, source: str, version: str) -> set[str]:
        """Names of the binary packages built from `source` at `version`."""
        indexes = run(
            ["apt-get", *self.options, "indextargets", "--format", "$(FILENAME)",
             "Identifier: Packages"],
            what="apt-get indextargets",
        ).split()
        names: set[str] = set()
        for index in indexes:
            text = run([APT_HELPER, "cat-file", index], what=f"apt-helper cat-file {index}")
            names |= binaries_of(text, source, version)
        return names

    def download_resolved(self, packages: list[str], archives: Path) -> None:
        """These packages and the dependencies the image lacks, into `archives`."""
        (archives / "partial").mkdir(parents=True)
        run(
            ["apt-get", *self.options, "-o", f"Dir::Cache::archives={archives}",
             "-y", "--no-install-recommends", "--download-only", "install", *packages],
            what="apt-get install --download-only",
        )


def binaries_of(packages: str, source: str, version: str) -> set[str]:
    """Names of the binary packages of `source` at `version` in a Packages index."""
    names = set()
    for stanza in packages.split("\n\n"):
        if f"Source: {source}" not in stanza:  # cheap filter: indexes are large
            continue
        fields = deb822_fields(stanza)
        # without a Source field, the source is named like the binary
        name = fields.get("source", fields["package"]).split()[0]
        if name == source and fields.get("version") == version:
            names.add(fields["package"])
    return names


def _fetch(apt: _Apt, version: str, tmp: Path) -> Path:
    binaries = apt.binaries(SOURCE, version)
    if missing := [p for p in XEN_PACKAGES if p not in binaries]:
        raise VlabBuildError(
            f"the APT sources have no {', '.join(missing)} at version {version}: "
            "check /etc/apt/sources.list.d (the bookworm-security suite gives the newer one)"
        )
    # Pin every binary of this Xen version, so the resolver cannot mix in another
    # version's libraries.
    apt.preferences.write_text(
        f"Package: {' '.join(sorted(binaries))}\nPin: version {version}\nPin-Priority: 1001\n"
    )
    try:
        apt.download_resolved([*(f"{p}={version}" for p in XEN_PACKAGES), DEVICE_MODEL],
                              tmp / "archives")
    finally:
        apt.preferences.write_text("")
    debs = tmp / "debs"
    debs.mkdir()
    for deb in (tmp / "archives").glob("*.deb"):
        deb.rename(debs / deb.name)
    return debs


def _check(debs: Path, version: str) -> int:
    """Checks the downloaded set: one version of Xen, the expected one. Returns the
    number of packages."""
    found = {}
    for deb in sorted(debs.glob("*.deb")):
        fields = deb_fields(deb, "Package", "Version", "Source")
        name = fields["package"]
        found[name] = fields["version"]
        source = fields.get("source", name).split()[0]
        if source == SOURCE and fields["version"] != version:
            raise VlabBuildError(f"{deb.name} is Xen {fields['version']}, expected {version}")
    if found.get(HYPERVISOR) != version:
        raise VlabBuildError(
            f"{HYPERVISOR} {version} missing from {debs} (have {found.get(HYPERVISOR)})"
        )
    return len(found)
