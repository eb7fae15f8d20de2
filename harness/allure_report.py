"""The run's Allure 3 HTML report, generated offline from its allure-results.

The npm package `allure` is pinned in tools/allure (`make setup` installs it with
`npm ci`). Every report of a lab appends to one history file (JSONL, one run a line),
so Allure shows each test's past statuses, new/fixed/regressed transitions and flaky
tests. Categories tell product failures (failed) from lab breakage (broken) and name
the known issues.

Allure 3 puts a Google Analytics loader into every report with no switch to turn it
off; generate() removes it, and refuses to hand back a report that would still call
googletagmanager.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from .errors import HarnessError
from .paths import PROJECT_ROOT

ALLURE_DIR = PROJECT_ROOT / "tools" / "allure"
ALLURE_CLI = ALLURE_DIR / "node_modules" / "allure" / "cli.js"
# One history line per run: two months of nightly runs.
HISTORY_LIMIT = 60
OUTPUT_TAIL_CHARS = 4000

# Exactly what the 3.x report templates inject (plugin-awesome, -classic, -dashboard,
# -allure2): the gtag.js loader and the inline script that configures it.
_ANALYTICS = re.compile(
    r'\s*<script async src="https://www\.googletagmanager\.com/gtag/js\?id=[\w-]+"></script>'
    r"\s*<script>\s*window\.dataLayer = window\.dataLayer \|\| \[\];.*?</script>",
    re.DOTALL)


class AllureReportError(HarnessError):
    """The Allure 3 report could not be made (not installed, failed, or would leak)."""


def generate(run_dir: Path, *, history: Path, title: str,
             known: list[tuple[str, str, str]] | None = None,
             variables: Mapping[str, str] | None = None, timeout: float = 300) -> Path:
    """Write run_dir/allure-report/ from run_dir/allure-results/ and return its index.html.

    history is the lab's JSONL history file; this run is appended to it. known holds
    (test id regex, message regex, bug URL): a failed or broken test whose id
    (`module::name`, as in index.html) and message match goes into that bug's
    category. variables (build, hosts, ...) are shown on the report's front page.
    """
    node = shutil.which("node")
    if node is None or not ALLURE_CLI.is_file():
        missing = "node" if node is None else str(ALLURE_CLI)
        raise AllureReportError(
            f"the Allure 3 CLI is not installed ({missing} is missing): run `make setup`")
    results = run_dir / "allure-results"
    output = run_dir / "allure-report"
    config = run_dir / "allurerc.json"
    history.parent.mkdir(parents=True, exist_ok=True)
    # A report generated again must not keep an earlier one's files.
    shutil.rmtree(output, ignore_errors=True)
    config.write_text(json.dumps(_config(
        title=title, output=output, history=history,
        known_categories=_known_categories(results, known or []),
        variables=dict(variables or {})), indent=2) + "\n")
    _run([node, str(ALLURE_CLI), "generate", "--config", str(config), str(results)],
         cwd=run_dir, timeout=timeout)
    _remove_analytics(output)
    return output / "index.html"


def _config(*, title: str, output: Path, history: Path,
            known_categories: list[dict[str, Any]],
            variables: dict[str, str]) -> dict[str, Any]:
    return {
        "name": title,
        "output": str(output),
        "historyPath": str(history.resolve()),
        "historyLimit": HISTORY_LIMIT,
        "variables": variables,
        "plugins": {
            "awesome": {"options": {"reportName": title, "singleFile": False}},
            # Added by default otherwise: it writes agent state under /tmp.
            "agent": {"enabled": False},
        },
        # The first matching category wins, so known issues come first.
        "categories": [
            *known_categories,
            {"id": "product-failures", "name": "Product failures",
             "matchers": {"statuses": ["failed"]}},
            {"id": "lab-breakage", "name": "Lab breakage",
             "matchers": {"statuses": ["broken"]}},
        ],
    }


def _known_categories(results: Path,
                      known: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """One category per bug, matching exactly this run's tests that the entry matches.

    Allure's matchers see a result's status, labels and message but not its name, so
    the test id regex is applied here; a matcher then pins each result down by its
    module (the `package` label), status and whole message.
    """
    failures = []
    for path in sorted(results.glob("*-result.json")):
        data = json.loads(path.read_text())
        if data.get("status") not in ("failed", "broken"):
            continue
        labels = {label["name"]: label["value"] for label in data.get("labels", [])}
        test_id = data.get("fullName", "?").split("#")[0] + "::" + data.get("name", "?")
        message = (data.get("statusDetails") or {}).get("message") or ""
        failures.append((test_id, data["status"], labels.get("package", ""), message))
    categories = []
    for test_pattern, message_pattern, bug_url in known:
        matchers = [
            {"statuses": [status], "labels": {"package": _exactly(package)},
             "message": _exactly(message)}
            for test_id, status, package, message in failures
            if re.search(test_pattern, test_id) and re.search(message_pattern, message)]
        if matchers:
            categories.append({"id": f"known:{bug_url}", "name": f"Known issue: {bug_url}",
                               "matchers": matchers})
    return categories


def _exactly(text: str) -> str:
    """A JavaScript regex that matches text and nothing else."""
    return "^" + re.sub(r"[.*+?^${}()|[\]\\/]", r"\\\g<0>", text) + "$"


def _run(command: list[str], *, cwd: Path, timeout: float) -> None:
    """Run the CLI with a deadline; its output is kept only to explain a failure."""
    env = {**os.environ, "NO_COLOR": "1"}
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AllureReportError(
                f"allure generate did not finish within {timeout:.0f} s:\n{_tail(log)}"
            ) from None
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if code != 0:
            raise AllureReportError(f"allure generate exited with {code}:\n{_tail(log)}")


def _tail(log: IO[bytes]) -> str:
    log.seek(0, os.SEEK_END)
    log.seek(max(0, log.tell() - OUTPUT_TAIL_CHARS))
    return log.read().decode(errors="replace")


def _remove_analytics(output: Path) -> None:
    for page in output.rglob("*.html"):
        text = page.read_text()
        cleaned = _ANALYTICS.sub("", text)
        if cleaned != text:
            page.write_text(cleaned)
    # What the browser runs on load; attachments (possibly large logs) are not read.
    leaking = [str(path.relative_to(output)) for path in output.rglob("*")
               if path.suffix in (".html", ".js", ".css")
               and b"googletagmanager" in path.read_bytes()]
    if leaking:
        raise AllureReportError(
            "the Allure report still loads Google Analytics after cleaning (has the "
            f"template changed?): {', '.join(leaking)}")
