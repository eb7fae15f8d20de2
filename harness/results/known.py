"""The reviewed known-issues file: failures a bug already explains, so they do not
block a run (osstest's allow list, with a bug and a reason for every entry).

    known_issues:
      - test: "testsuites/networking/test_bridged.py::*"   # glob over test ids
        message: "vif-bridge.*failed"    # optional: regex searched in the failure message
        bug: bsc#1234567                 # a URL, bsc#N or boo#N
        reason: hotplug script breaks on the new bridge naming
        expires: 2026-09-01              # optional: the entry stops matching on that day
        hosts: [xen-r640-01]             # optional: globs over the hosts the test used

Globs have `*` and `?` as wildcards; brackets are literal, as in parametrized test
ids. An entry matches a result when its test pattern matches the test id, its message
regex (if any) is found in the result's message, one of the result's hosts matches
its hosts (if any), and it has not expired. Every problem of the file is one
ConfigError naming file, entry index and field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..yaml_file import load_yaml
from .records import ResultRecord

TOP_LEVEL_KEY = "known_issues"
FIELDS = ("test", "message", "bug", "reason", "expires", "hosts")
BUG_TRACKERS = {
    "bsc": "https://bugzilla.suse.com/show_bug.cgi?id=",
    "boo": "https://bugzilla.opensuse.org/show_bug.cgi?id=",
}
_BUG_REF = re.compile(r"(bsc|boo)#([0-9]+)")
_URL = re.compile(r"https?://[^\s/]+\S*")
# Makes the error of one field of the entry being read.
_Fail = Callable[[str, str], ConfigError]


@dataclass(frozen=True)
class KnownIssue:
    test: str  # glob over test ids
    bug: str  # as written: a URL, bsc#N or boo#N
    reason: str
    message: re.Pattern[str] | None = None
    expires: date | None = None
    hosts: tuple[str, ...] = ()  # globs over host names; empty: any host

    @property
    def bug_url(self) -> str:
        ref = _BUG_REF.fullmatch(self.bug)
        return BUG_TRACKERS[ref[1]] + ref[2] if ref else self.bug

    def expired(self, today: date) -> bool:
        return self.expires is not None and today >= self.expires

    def applies_to(self, result: ResultRecord) -> bool:
        """Test id, message and hosts fit, whatever the expiry."""
        return (_glob(self.test).fullmatch(result.test_id) is not None
                and (self.message is None or self.message.search(result.message) is not None)
                and (not self.hosts or any(_glob(pattern).fullmatch(host)
                                           for host in result.hosts for pattern in self.hosts)))

    def matches(self, result: ResultRecord, today: date) -> bool:
        return self.applies_to(result) and not self.expired(today)


@cache
def _glob(pattern: str) -> re.Pattern[str]:
    """`*` and `?` are the only wildcards: unlike fnmatch's, brackets are literal, as
    in a parametrized test id (test_bridged[pv])."""
    return re.compile(".*".join(".".join(map(re.escape, part.split("?")))
                                for part in pattern.split("*")), re.DOTALL)


def load_known_issues(path: Path) -> list[KnownIssue]:
    """The entries of a known-issues file, validated; a file with no document (only
    comments) has none."""
    if not path.is_file():
        raise ConfigError(f"{path}: known-issues file not found")
    data = load_yaml(path)
    if data is None:
        return []
    if not isinstance(data, Mapping) or set(data) != {TOP_LEVEL_KEY}:
        raise ConfigError(f"{path}: expected one top-level key, {TOP_LEVEL_KEY!r}")
    entries = data[TOP_LEVEL_KEY]
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: {TOP_LEVEL_KEY}: expected a list of entries, got "
                          f"{type(entries).__name__}")
    return [_entry(path, f"{TOP_LEVEL_KEY}[{index}]", entry)
            for index, entry in enumerate(entries)]


def _entry(path: Path, where: str, entry: object) -> KnownIssue:
    def fail(field: str, problem: str) -> ConfigError:
        return ConfigError(f"{path}: {where}.{field}: {problem}")

    if not isinstance(entry, Mapping):
        raise ConfigError(f"{path}: {where}: expected a mapping, got {type(entry).__name__}")
    for key in entry:
        if key not in FIELDS:
            raise fail(str(key), f"unknown field (allowed: {', '.join(FIELDS)})")

    def optional(field: str) -> str | None:
        value: Any = entry.get(field)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise fail(field, f"expected non-empty text, got {value!r}")
        return value

    def required(field: str) -> str:
        value = optional(field)
        if value is None:
            raise fail(field, "missing")
        return value

    test, bug, reason = required("test"), required("bug"), required("reason")
    if not (_BUG_REF.fullmatch(bug) or _URL.fullmatch(bug)):
        raise fail("bug", f"{bug!r} is neither a URL nor a bsc#N / boo#N reference")
    message = optional("message")
    try:
        pattern = re.compile(message) if message is not None else None
    except re.error as error:
        raise fail("message", f"not a valid regex: {error}") from None
    return KnownIssue(test=test, bug=bug, reason=reason, message=pattern,
                      expires=_expiry(entry.get("expires"), fail),
                      hosts=_hosts(entry.get("hosts"), fail))


def _expiry(value: object, fail: _Fail) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise fail("expires", f"expected an ISO date (YYYY-MM-DD), got {value!r}") from None


def _hosts(value: object, fail: _Fail) -> tuple[str, ...]:
    if value is None:
        return ()
    if (not isinstance(value, list) or not value
            or not all(isinstance(host, str) and host for host in value)):
        raise fail("hosts", f"expected a non-empty list of host names, got {value!r}")
    return tuple(value)
