"""The Allure 3 report made from real allure-pytest results loads in headless Chromium
with no request leaving the machine, keeps history across runs and sorts failures into
product failures, lab breakage and known issues.

Needs the pinned Allure CLI (`make setup`) and Chromium (`make test` installs both).
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from harness import allure_report
from harness.allure_report import AllureReportError, generate

from .headless import HeadlessChromium, headless_chromium, refusing_proxy

TINY_TESTS = '''
def test_passes():
    assert 1 + 1 == 2

def test_fails():
    assert "xen" == "linux", "(XEN) Panic on CPU 0"

def test_breaks():
    raise ConnectionError("BMC did not answer")
'''
BUG = "https://bugzilla.example/show_bug.cgi?id=1234567"
KNOWN = [("test_tiny::test_fails$", r"Panic on CPU \d", BUG),
         ("test_tiny::test_fails$", "a message nobody prints", "https://bugzilla.example/9")]
ANALYTICS_PAGE = ('<!doctype html><title>leak</title>'
                  '<script async src="https://www.googletagmanager.com/gtag/js?id=G-TEST">'
                  '</script><p>local page</p>')


def run_tiny_tests(run_dir: Path) -> None:
    """Leave allure-pytest's result files in run_dir/allure-results, as a run does."""
    (run_dir / "tests").mkdir(parents=True)
    (run_dir / "tests" / "test_tiny.py").write_text(TINY_TESTS)
    (run_dir / "pytest.ini").write_text("[pytest]\n")
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xenhil",
         "-p", "no:labgrid", "--alluredir", "allure-results", "tests"],
        cwd=run_dir, capture_output=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two runs of the tiny tests with their reports; returns (second run, history)."""
    root = tmp_path_factory.mktemp("lab")
    history = root / "allure-history.jsonl"
    for run_id in ("run-1", "run-2"):
        run_dir = root / run_id
        run_tiny_tests(run_dir)
        generate(run_dir, history=history, title=f"tiny {run_id}", known=KNOWN,
                 variables={"build": "xen-4.20.1", "hosts": "vlab1"}, timeout=120)
    return root / "run-2", history


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def served(directory: Path) -> Iterator[str]:
    """directory over HTTP on loopback: the report's app fetches its data, and Chromium
    refuses fetch() from file:// pages, so the report does not render from a file."""
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[HeadlessChromium]:
    with refusing_proxy() as proxy, headless_chromium(tmp_path / "profile", proxy) as chromium:
        yield chromium


def outside(requests: list[str]) -> list[str]:
    """The requests that would leave the machine (data: and blob: URLs never do)."""
    return [url for url in requests
            if urlsplit(url).scheme not in ("data", "blob")
            and urlsplit(url).hostname != "127.0.0.1"]


def test_report_renders_offline(reports: tuple[Path, Path], browser: HeadlessChromium) -> None:
    run_dir, _ = reports
    with served(run_dir / "allure-report") as base:
        page = browser.load(f"{base}/index.html",
                            until_text=("test_passes", "test_fails", "test_breaks"))
    assert "tiny run-2" in page.text
    assert any("/widgets/" in url for url in page.requests)  # the app fetched its data
    assert outside(page.requests) == []


def test_request_to_outside_is_caught(browser: HeadlessChromium, tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text(ANALYTICS_PAGE)
    with served(tmp_path / "site") as base:
        page = browser.load(f"{base}/index.html", until_text=("local page",))
    assert outside(page.requests) == [
        "https://www.googletagmanager.com/gtag/js?id=G-TEST"]


def test_no_analytics_left(reports: tuple[Path, Path]) -> None:
    run_dir, _ = reports
    files = [path for path in (run_dir / "allure-report").rglob("*") if path.is_file()]
    assert any(path.name == "index.html" for path in files)
    for path in files:
        assert b"googletagmanager" not in path.read_bytes(), path
        assert b"gtag(" not in path.read_bytes(), path


def test_history_holds_both_runs(reports: tuple[Path, Path]) -> None:
    run_dir, history = reports
    runs = [json.loads(line) for line in history.read_text().splitlines()]
    assert [run["name"] for run in runs] == ["tiny run-1", "tiny run-2"]
    fails = [json.loads(path.read_text())
             for path in (run_dir / "allure-report" / "data" / "test-results").glob("*.json")]
    fails = [result for result in fails if result["name"] == "test_fails"]
    assert len(fails) == 1
    assert [past["status"] for past in fails[0]["history"]] == ["failed"]


def test_categories_tell_product_lab_and_known(reports: tuple[Path, Path]) -> None:
    run_dir, _ = reports
    nodes = json.loads(
        (run_dir / "allure-report" / "widgets" / "categories.json").read_text())["nodes"]

    def tests_in(category: str) -> set[str]:
        [node] = [n for n in nodes.values() if n["type"] == "category" and n["name"] == category]
        found, todo = set(), list(node["childrenIds"])
        while todo:
            child = nodes[todo.pop()]
            if child["type"] == "tr":
                found.add(child["name"])
            todo += child.get("childrenIds", [])
        return found

    category_names = {n["name"] for n in nodes.values() if n["type"] == "category"}
    assert category_names == {f"Known issue: {BUG}", "Lab breakage"}
    assert tests_in(f"Known issue: {BUG}") == {"test_fails"}
    assert tests_in("Lab breakage") == {"test_breaks"}


def test_unknown_failure_is_a_product_failure(tmp_path: Path) -> None:
    run_tiny_tests(tmp_path)
    generate(tmp_path, history=tmp_path / "history.jsonl", title="no known issues",
             timeout=120)
    nodes = json.loads(
        (tmp_path / "allure-report" / "widgets" / "categories.json").read_text())["nodes"]
    categories = {n["name"]: n["statistic"] for n in nodes.values() if n["type"] == "category"}
    assert categories == {"Product failures": {"total": 1, "failed": 1},
                          "Lab breakage": {"total": 1, "broken": 1}}


def test_missing_install_says_make_setup(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allure_report, "ALLURE_CLI", tmp_path / "absent" / "cli.js")
    with pytest.raises(AllureReportError, match=r"run `make setup`"):
        generate(tmp_path, history=tmp_path / "history.jsonl", title="x")


def test_a_hung_cli_is_killed_at_its_deadline(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    with pytest.raises(AllureReportError, match=r"did not finish within 1 s:\nstarted"):
        allure_report._run(
            ["/bin/sh", "-c", f"echo started; sleep 60 & echo $! > {pid_file}; wait"],
            cwd=tmp_path, timeout=1)
    assert ends_within(int(pid_file.read_text()), seconds=5)


def ends_within(pid: int, *, seconds: float) -> bool:
    """Whether pid dies in time (SIGKILL lands asynchronously; a zombie counts as dead)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return True
        time.sleep(0.05)
    return False
