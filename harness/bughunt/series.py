"""The builds a bisection searches: ordered by the version of their hypervisor package
(dpkg's rules), from the good build to the bad one."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..build import load_build
from ..debian_packages import compare_versions
from ..errors import ConfigError


@dataclass(frozen=True)
class SeriesBuild:
    path: Path
    version: str  # of the hypervisor package

    @property
    def name(self) -> str:
        return self.path.name


def read_build(path: Path) -> SeriesBuild:
    return SeriesBuild(path.resolve(), load_build(path).hypervisor.version)


def builds_in(directory: Path) -> list[Path]:
    """The build directories in `directory` (each a directory of packages)."""
    if not directory.is_dir():
        raise ConfigError(f"--builds {directory}: no such directory")
    found = sorted(path for path in directory.iterdir() if path.is_dir())
    if not found:
        raise ConfigError(f"--builds {directory}: no build directories in it")
    return found


def order_by_version(builds: Iterable[SeriesBuild]) -> list[SeriesBuild]:
    """Oldest first; two builds of one version cannot be told apart, and are refused."""
    unique = list({build.path: build for build in builds}.values())
    def by_version(a: SeriesBuild, b: SeriesBuild) -> int:
        return compare_versions(a.version, b.version)

    ordered = sorted(unique, key=functools.cmp_to_key(by_version))
    for older, newer in itertools.pairwise(ordered):
        if compare_versions(older.version, newer.version) == 0:
            raise ConfigError(f"builds {older.path} and {newer.path} have the same version "
                              f"{older.version}: a bisection cannot order them")
    return ordered


def bisection_series(good: Path, bad: Path, others: Iterable[Path]) -> list[SeriesBuild]:
    """The good build, the builds between it and the bad one by version, and the bad
    build. Builds older than the good one or newer than the bad one are left out."""
    good_build, bad_build = read_build(good), read_build(bad)
    if good_build.path == bad_build.path:
        raise ConfigError(f"--good and --bad are the same build: {good_build.path}")
    ordered = order_by_version([good_build, bad_build, *(read_build(p) for p in others)])
    first, last = ordered.index(good_build), ordered.index(bad_build)
    if first > last:
        raise ConfigError(f"the good build {good_build.name} ({good_build.version}) is newer "
                          f"than the bad build {bad_build.name} ({bad_build.version}): a "
                          "bisection searches from an older good build to a newer bad one")
    return ordered[first:last + 1]
