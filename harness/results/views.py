"""The results database on a terminal: `xenhil runs` and `xenhil history` tables.

Every value is shown as plain text: names, messages and versions come from hosts and
tests, so rich markup in them ("[red]") and terminal control characters are not
interpreted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rich.table import Table
from rich.text import Text

from .records import Figure, ResultRecord, RunRecord

STATUS_STYLES = {"passed": "green", "failed": "red", "broken": "magenta",
                 "skipped": "yellow"}
MESSAGE_WIDTH = 80


def _text(value: str, style: str = "") -> Text:
    return Text("".join(ch for ch in value if ch.isprintable()), style=style)


def _time(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment is not None else ""


def _duration(run: RunRecord) -> str:
    if run.started is None or run.ended is None:
        return ""
    minutes = round((run.ended - run.started).total_seconds() / 60)
    return f"{minutes // 60}h{minutes % 60:02d}" if minutes >= 60 else f"{minutes} min"


def _figures(figures: Sequence[Figure]) -> str:
    return ", ".join(f"{figure.name} {figure.value:g} {figure.unit}" for figure in figures)


def _first_line(message: str) -> str:
    line = message.strip().partition("\n")[0]
    return line if len(line) <= MESSAGE_WIDTH else line[:MESSAGE_WIDTH - 3] + "..."


def format_runs(runs: Sequence[RunRecord]) -> Table:
    """Runs (newest first, as ResultsDB.runs gives them) with their verdicts."""
    table = Table(title="runs", title_justify="left")
    for column in ("run", "started (UTC)", "took", "kind", "profile", "lab", "build",
                   "hosts", "verdict"):
        table.add_column(column, overflow="fold")  # a narrow terminal wraps, never cuts
    for run in runs:
        hosts = ", ".join(f"{host.name} {host.xen_version}".strip() for host in run.hosts)
        verdict = run.verdict or ("running" if run.ended is None else "")
        table.add_row(_text(run.id), _text(_time(run.started)), _text(_duration(run)),
                      _text(run.kind), _text(run.profile), _text(run.lab),
                      _text(f"{run.build_label} ({run.build_hash})" if run.build_hash
                            else run.build_label), _text(hosts),
                      _text(verdict, STATUS_STYLES.get(run.verdict, "")))
    return table


def format_history(test_id: str,
                   history: Sequence[tuple[RunRecord, ResultRecord]]) -> Table:
    """One test's results over runs (newest first, as ResultsDB.history gives them):
    status, hosts, figures and the first line of its message."""
    table = Table(title=_text(f"history of {test_id}"), title_justify="left")
    for column in ("run", "started (UTC)", "build", "try", "status", "hosts", "took",
                   "figures", "message"):
        table.add_column(column, overflow="fold")
    for run, result in history:
        table.add_row(_text(run.id), _text(_time(run.started)), _text(run.build_label),
                      _text(str(result.attempt)),
                      _text(result.status, STATUS_STYLES.get(result.status, "")),
                      _text(", ".join(result.hosts)), _text(f"{result.duration_s:.1f} s"),
                      _text(_figures(result.figures)), _text(_first_line(result.message)))
    return table
