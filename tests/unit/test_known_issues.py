"""The known-issues file: what an entry matches, and every bad field refused with one
error naming file, entry index and field."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from harness.errors import ConfigError
from harness.results.known import KnownIssue, load_known_issues
from harness.results.records import ResultRecord

REPOSITORY = Path(__file__).resolve().parents[2]
TODAY = date(2026, 8, 1)
FAILED = ResultRecord("testsuites/networking/test_bridged.py::test_bridged[pv]", "failed",
                      hosts=("xen-r640-01", "xen-r640-02"),
                      message="HotplugError: /etc/xen/scripts/vif-bridge failed; exit 1")


def issue(**fields: Any) -> KnownIssue:
    fields.setdefault("test", "testsuites/networking/*")
    return KnownIssue(bug="bsc#1234567", reason="hotplug script", **fields)


@pytest.mark.parametrize(("entry", "today", "matches"), [
    (issue(), TODAY, True),
    (issue(test="testsuites/networking/test_bridged.py::test_bridged[pv]"), TODAY, True),
    (issue(test="testsuites/guests/*"), TODAY, False),
    (issue(test="*::test_bridged[?v]"), TODAY, True),
    (issue(test="*::test_bridged[pv"), TODAY, False),  # whole ids only
    (issue(test="*::test_bridged[hvm]"), TODAY, False),  # brackets are literal
    (issue(message=re.compile(r"vif-bridge.*exit 1")), TODAY, True),
    (issue(message=re.compile(r"^vif-bridge")), TODAY, False),  # searched, anchored: no
    (issue(message=re.compile(r"vif-route")), TODAY, False),
    (issue(expires=date(2026, 8, 2)), TODAY, True),
    (issue(expires=TODAY), TODAY, False),  # stops matching on the day
    (issue(expires=date(2026, 7, 1)), TODAY, False),
    (issue(hosts=("xen-r640-02",)), TODAY, True),  # any host the test used
    (issue(hosts=("xen-r640-0*",)), TODAY, True),
    (issue(hosts=("xen-r750-01",)), TODAY, False),
], ids=lambda value: "" if not isinstance(value, bool) else str(value))
def test_an_entry_matches(entry: KnownIssue, today: date, matches: bool) -> None:
    assert entry.matches(FAILED, today) is matches


def test_a_host_filter_does_not_match_a_result_without_hosts() -> None:
    assert not issue(hosts=("xen-r640-01",)).matches(
        ResultRecord(FAILED.test_id, "failed"), TODAY)


def test_an_expired_entry_still_applies_but_no_longer_matches() -> None:
    entry = issue(expires=date(2026, 1, 31))
    assert entry.applies_to(FAILED) and entry.expired(TODAY)
    assert not entry.matches(FAILED, TODAY)


@pytest.mark.parametrize(("bug", "url"), [
    ("bsc#1234567", "https://bugzilla.suse.com/show_bug.cgi?id=1234567"),
    ("boo#1200001", "https://bugzilla.opensuse.org/show_bug.cgi?id=1200001"),
    ("https://gitlab.com/xen-project/xen/-/issues/200",
     "https://gitlab.com/xen-project/xen/-/issues/200"),
])
def test_bug_url(bug: str, url: str) -> None:
    assert KnownIssue(test="*", bug=bug, reason="r").bug_url == url


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "known-issues.yaml"
    path.write_text(text)
    return path


def test_a_full_entry_loads(tmp_path: Path) -> None:
    path = write(tmp_path, """\
known_issues:
  - test: "testsuites/networking/*"
    message: "vif-bridge.*failed"
    bug: bsc#1234567
    reason: hotplug script breaks on the new bridge naming
    expires: 2026-09-01
    hosts: [xen-r640-01]
  - test: "*::test_save_restore*"
    bug: "https://gitlab.com/xen-project/xen/-/issues/200"
    reason: checkpoint loses the last page
    expires: "2026-10-01"
""")
    first, second = load_known_issues(path)
    assert first == KnownIssue(test="testsuites/networking/*", bug="bsc#1234567",
                               reason="hotplug script breaks on the new bridge naming",
                               message=re.compile("vif-bridge.*failed"),
                               expires=date(2026, 9, 1), hosts=("xen-r640-01",))
    assert first.matches(FAILED, TODAY)
    assert second.expires == date(2026, 10, 1) and second.message is None
    assert second.hosts == ()


@pytest.mark.parametrize("text", ["", "# only comments\n", "known_issues: []\n",
                                  "known_issues:\n"])
def test_a_file_without_entries(tmp_path: Path, text: str) -> None:
    assert load_known_issues(write(tmp_path, text)) == []


def test_the_repository_file_loads_and_has_no_entries() -> None:
    assert load_known_issues(REPOSITORY / "known-issues.yaml") == []


GOOD = """\
known_issues:
  - test: "testsuites/guests/*"
    bug: bsc#1
    reason: fine
"""
SECOND = "  - test: \"testsuites/networking/*\"\n    bug: bsc#2\n    reason: r\n"


@pytest.mark.parametrize(("extra", "error"), [
    ("    bugs: bsc#3\n", "known_issues[1].bugs: unknown field (allowed: test, message, "
     "bug, reason, expires, hosts)"),
    ("    message: \"vif-(bridge\"\n", "known_issues[1].message: not a valid regex: "
     "missing ), unterminated subpattern at position 4"),
    ("    message: 42\n", "known_issues[1].message: expected non-empty text, got 42"),
    ("    expires: 2026-13-01\n", "known_issues[1].expires: expected an ISO date "
     "(YYYY-MM-DD), got '2026-13-01'"),
    ("    expires: \"next week\"\n", "known_issues[1].expires: expected an ISO date "
     "(YYYY-MM-DD), got 'next week'"),
    ("    expires: 2026-09-01 10:00:00\n", "known_issues[1].expires: expected an ISO date "
     "(YYYY-MM-DD), got '2026-09-01 10:00:00'"),
    ("    hosts: xen-r640-01\n", "known_issues[1].hosts: expected a non-empty list of "
     "host names, got 'xen-r640-01'"),
    ("    hosts: []\n", "known_issues[1].hosts: expected a non-empty list of host "
     "names, got []"),
    ("    hosts: [xen-r640-01, 7]\n", "known_issues[1].hosts: expected a non-empty list "
     "of host names, got ['xen-r640-01', 7]"),
    ("    bug: bsc#4\n", "line 8: duplicate key 'bug' (first on line 6); YAML would keep "
     "only the last"),
])
def test_a_bad_field_is_named(tmp_path: Path, extra: str, error: str) -> None:
    path = write(tmp_path, GOOD + SECOND + extra)
    with pytest.raises(ConfigError) as raised:
        load_known_issues(path)
    assert str(raised.value) == f"{path}: {error}"


@pytest.mark.parametrize(("second", "error"), [
    ("  - test: \"t*\"\n    reason: r\n", "known_issues[1].bug: missing"),
    ("  - bug: bsc#2\n    reason: r\n", "known_issues[1].test: missing"),
    ("  - test: \"t*\"\n    bug: bsc#2\n", "known_issues[1].reason: missing"),
    ("  - test: \"t*\"\n    bug: \"bsc 2\"\n    reason: r\n",
     "known_issues[1].bug: 'bsc 2' is neither a URL nor a bsc#N / boo#N reference"),
    ("  - test: \"t*\"\n    bug: bsc#2\n    reason: \"  \"\n",
     "known_issues[1].reason: expected non-empty text, got '  '"),
    ("  - test: [a]\n    bug: bsc#2\n    reason: r\n",
     "known_issues[1].test: expected non-empty text, got ['a']"),
    ("  - just a string\n", "known_issues[1]: expected a mapping, got str"),
])
def test_a_missing_or_malformed_field_is_named(tmp_path: Path, second: str,
                                               error: str) -> None:
    path = write(tmp_path, GOOD + second)
    with pytest.raises(ConfigError) as raised:
        load_known_issues(path)
    assert str(raised.value) == f"{path}: {error}"


@pytest.mark.parametrize(("text", "error"), [
    ("entries: []\n", "expected one top-level key, 'known_issues'"),
    ("known_issues: []\nextra: 1\n", "expected one top-level key, 'known_issues'"),
    ("- test: x\n", "expected one top-level key, 'known_issues'"),
    ("known_issues: {test: x}\n", "known_issues: expected a list of entries, got dict"),
    ("known_issues: [\n", "not valid YAML"),
])
def test_a_bad_file_shape_is_named(tmp_path: Path, text: str, error: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {error}")):
        load_known_issues(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="known-issues file not found"):
        load_known_issues(tmp_path / "absent.yaml")
