"""The runs and history tables, rendered as a terminal would show them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.table import Table

from harness.results.records import Figure, HostRecord, ResultRecord, RunRecord
from harness.results.views import format_history, format_runs

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


def render(table: Table) -> str:
    console = Console(record=True, width=250, force_terminal=False, color_system=None)
    console.print(table)
    return console.export_text()


def test_runs_show_verdicts_hosts_and_duration() -> None:
    runs = [
        RunRecord("20261102-020000", "default", "vlab", "nightly", started=T0 + timedelta(1),
                  build_label="Debian 4.17.7", hosts=(HostRecord("vlab1", "4.17.7"),)),
        RunRecord("20261101-020000", "default", "vlab", "nightly", started=T0,
                  ended=T0 + timedelta(minutes=77), verdict="failed",
                  build_label="Debian 4.17.5"),
    ]
    lines = render(format_runs(runs)).splitlines()
    newest = next(line for line in lines if "20261102-020000" in line)
    older = next(line for line in lines if "20261101-020000" in line)
    assert "vlab1 4.17.7" in newest and "running" in newest
    assert "2026-11-01 02:00" in older and "1h17" in older and "failed" in older


def test_history_shows_status_figures_and_the_message_start() -> None:
    run = RunRecord("r1", "default", "vlab", "nightly", started=T0, build_label="4.17.7")
    result = ResultRecord("t::live", "failed", hosts=("vlab1", "vlab2"), duration_s=12.34,
                          message="AssertionError: downtime " + "x" * 200 + "\nsecond line",
                          attempt=2, figures=(Figure("downtime", 0.25, "s"),))
    text = render(format_history("t::live", [(run, result)]))
    assert "history of t::live" in text
    row = next(line for line in text.splitlines() if "r1" in line)
    assert "failed" in row and "vlab1, vlab2" in row and "12.3 s" in row
    assert "downtime 0.25 s" in row and "AssertionError: downtime" in row
    assert "second line" not in text and "..." in row


def test_markup_and_control_characters_from_hosts_are_shown_as_plain_text() -> None:
    hostile = HostRecord("[bold red]evil[/]\x1b[2J", "4.17[/]")
    run = RunRecord("r[1]", "default", "vlab", "adhoc", hosts=(hostile,), started=T0)
    text = render(format_runs([run]))
    assert "[bold red]evil[/]" in text and "4.17[/]" in text and "r[1]" in text
    assert "\x1b" not in text
