"""Builds derived from a default build by repacking some of its packages, for the
harness's self-tests: one with a deliberate product defect (a vif-bridge hotplug script
that refuses to bring a vif up, so bridged guests fail to start while routed and NAT
guests still do), for the results comparison; and a short series ordered by version,
two good builds then two defective ones, for bisection.

Only what changes is repacked (dpkg-deb -R, edit, dpkg-deb --build); the other
packages are hard links to the base build's files. Same cache rules as the base
builds: a stamp per build (in builds/) whose recipe includes the base build's, a
temporary directory, published at the end. builds/series/ holds nothing but the
series' build directories, so it can be handed to a bisection as it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from ..build_cache import (
    VlabBuildError,
    cache_lock,
    publish,
    remove_stale_temps,
    remove_tree,
    stage,
    stamp_matches,
)
from ..debian_packages import (
    PINNING_FIELDS,
    Edit,
    compare_versions,
    contents,
    deb_fields,
    exact_pins,
    repack,
)

log = logging.getLogger(__name__)

BASE = "xen-4.17.7"
SOURCE = "xen"
HYPERVISOR = "xen-hypervisor-4.17-amd64"  # its version orders the series
VIF_BRIDGE = "etc/xen/scripts/vif-bridge"
# vif-common.sh parses the arguments: after it, $command and $dev are known.
_ANCHOR = b'. "$dir/vif-common.sh"\n'
DEFECT = b"""
# xen-hil: deliberate defect, for the harness's self-tests: bridged guests fail to start.
case "$command" in
    add|online)
        echo "vif-bridge: xen-hil deliberate defect: refusing $command of $dev" >&2
        fatal "vif-bridge: xen-hil deliberate defect: refusing $command of $dev"
        ;;
esac
"""


def break_vif_bridge(script: bytes) -> bytes:
    """vif-bridge with DEFECT right after it sources vif-common.sh: `add` and `online`
    fail (hotplug-error in xenstore, stderr in the hotplug log, exit 1), `remove` and
    `offline` work, so a failed guest is still cleaned up."""
    if script.count(_ANCHOR) != 1:
        raise VlabBuildError(f"vif-bridge does not source vif-common.sh once: "
                             f"cannot place the defect after {_ANCHOR!r}")
    return script.replace(_ANCHOR, _ANCHOR + DEFECT)


@dataclass(frozen=True)
class Derived:
    name: str  # directory under builds/
    suffix: str  # appended to the version of every repacked package
    whole_source: bool  # every package of SOURCE gets the suffix, not only changed ones
    vif_bridge_broken: bool


DERIVED = (
    Derived(f"{BASE}-vifbroken", "+xenhil.vifbroken1", whole_source=False,
            vif_bridge_broken=True),
    *(Derived(f"series/{BASE}+xenhil.{n}", f"+xenhil.{n}", whole_source=True,
              vif_bridge_broken=n >= 3) for n in (1, 2, 3, 4)),
)


def derive_build(base: Path, dest: Path, suffix: str, *, edits: Mapping[str, Edit] | None = None,
                 whole_source: str | None = None) -> dict[str, str]:
    """Writes into `dest` the packages of build `base`, those that change repacked with
    `suffix` added to their version: the packages shipping a path of `edits` (edited),
    every package of source `whole_source`, and any package pinning one of those to its
    exact version (moved to the new one, so the set stays installable). The others are
    hard links. Returns package name -> version of the new set."""
    edits = edits or {}
    debs = sorted(base.glob("*.deb"))
    fields = {deb: deb_fields(deb, "Package", "Version", "Source", *PINNING_FIELDS) for deb in debs}
    changed: dict[Path, dict[str, Edit]] = {}
    for path, edit in edits.items():
        shipping = [deb for deb in debs if path in contents(deb)]
        if len(shipping) != 1:
            raise VlabBuildError(f"{base}: {len(shipping)} packages ship /{path}, expected one")
        changed.setdefault(shipping[0], {})[path] = edit
    for deb, control in fields.items():
        if whole_source and control.get("source", control["package"]).split()[0] == whole_source:
            changed.setdefault(deb, {})
    _add_pinning(fields, changed)
    repins = {fields[deb]["package"]: (fields[deb]["version"], fields[deb]["version"] + suffix)
              for deb in changed}
    dest.mkdir()
    versions = {}
    for deb, control in fields.items():
        name = control["package"]
        if deb in changed:
            versions[name] = repins[name][1]
            new = repack(deb, dest, versions[name], edits=changed[deb], repins=repins)
            log.debug("%s repacked as %s", deb.name, new.name)
        else:
            versions[name] = control["version"]
            _link_or_copy(deb, dest / deb.name)
    return versions


def _add_pinning(fields: Mapping[Path, Mapping[str, str]], changed: dict[Path, dict[str, Edit]]
                 ) -> None:
    """Adds to `changed` every package that pins a changed one at its exact version,
    until none is left: those must move to the new versions too."""
    while True:
        moved = {(fields[deb]["package"], fields[deb]["version"]) for deb in changed}
        pinning = [deb for deb, control in fields.items()
                   if deb not in changed and exact_pins(control) & moved]
        if not pinning:
            return
        for deb in pinning:
            changed[deb] = {}


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:  # another file system
        shutil.copy2(src, dest)


def make_derived_builds(cache: Path, *, force: bool = False) -> list[Path]:
    """Makes the DERIVED builds from `cache`/vlab/builds/BASE (fetch_builds first);
    returns their directories in the order of DERIVED. Up-to-date builds are kept."""
    builds = cache / "vlab" / "builds"
    base = builds / BASE
    try:
        base_recipe = json.loads((builds / f".{BASE}.stamp").read_text())["recipe"]
    except (OSError, ValueError, KeyError) as error:
        raise VlabBuildError(f"no valid {BASE} build in {builds} ({error}): "
                             "fetch it first (fetch_builds)") from error
    done = []
    with cache_lock(cache / "vlab"):
        for derived in DERIVED:
            flat = derived.name.replace("/", "-")
            dest = builds / derived.name
            stamp = builds / f".{flat}.stamp"
            recipe = _recipe(derived, base_recipe)
            if not force and stamp_matches(stamp, recipe, (dest,)):
                log.info("%s up to date: %s", derived.name, dest)
                done.append(dest)
                continue
            remove_stale_temps(builds, f".derived-{flat}-")
            tmp = Path(tempfile.mkdtemp(prefix=f".derived-{flat}-", dir=builds))
            try:
                with stage(f"{derived.name} repack", log):
                    versions = derive_build(
                        base, tmp / "debs", derived.suffix,
                        edits={VIF_BRIDGE: break_vif_bridge} if derived.vif_bridge_broken else {},
                        whole_source=SOURCE if derived.whole_source else None)
                dest.parent.mkdir(exist_ok=True)
                publish({tmp / "debs": dest}, stamp, recipe,
                        {"suffix": derived.suffix, "packages": versions})
            finally:
                remove_tree(tmp)
            log.info("%s: %s", derived.name, dest)
            done.append(dest)
    _check_series_order([builds / d.name for d in DERIVED if d.name.startswith("series/")])
    return done


def _recipe(derived: Derived, base_recipe: str) -> str:
    recipe = {"base": base_recipe, "suffix": derived.suffix, "whole_source": derived.whole_source,
              "defect": DEFECT.decode() if derived.vif_bridge_broken else None}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def _check_series_order(directories: list[Path]) -> None:
    """The series is listed in build order; bisection orders it by version: both must
    agree."""
    versions = [deb_fields(next(d.glob(f"{HYPERVISOR}_*.deb")), "Version")["version"]
                for d in directories]
    for older, newer in pairwise(versions):
        if compare_versions(older, newer) >= 0:
            raise VlabBuildError(f"the series does not sort by version: {older} >= {newer}")
