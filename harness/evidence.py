"""The one way library and scenario code reports evidence: named steps, attachments,
labels and links.

Scenario helpers (migration, support bundles, ...) and scenario tests call these
functions; the pytest plugin installs the sink that files them in the running test's
allure result. Outside a test run (a CLI command) the default sink only logs. So no
module but the plugin imports allure, and a report format can change in one place.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, Protocol, TypeVar

log = logging.getLogger(__name__)


class EvidenceSink(Protocol):
    def step(self, title: str) -> contextlib.AbstractContextManager[None]: ...

    def attach(self, name: str, text: str, *, is_json: bool = False) -> None: ...

    def label(self, name: str, value: str) -> None: ...

    def link(self, url: str, name: str) -> None: ...

    def figure(self, name: str, value: float, unit: str) -> None: ...


class LogSink:
    """Evidence outside a test run: steps and links at INFO, attachments at DEBUG."""

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        log.info("step: %s", title)
        yield

    def attach(self, name: str, text: str, *, is_json: bool = False) -> None:
        log.debug("%s:\n%s", name, text)

    def label(self, name: str, value: str) -> None:
        log.debug("label %s=%s", name, value)

    def link(self, url: str, name: str) -> None:
        log.info("%s: %s", name, url)

    def figure(self, name: str, value: float, unit: str) -> None:
        log.info("figure %s: %g %s", name, value, unit)


_sink: EvidenceSink = LogSink()


def install(sink: EvidenceSink | None) -> None:
    """Make `sink` receive all evidence from now on (None: back to logging only)."""
    global _sink
    _sink = sink if sink is not None else LogSink()


def step(title: str) -> contextlib.AbstractContextManager[None]:
    """A named step of a procedure: `with step("migrate to vlab2"): ...`."""
    return _sink.step(title)


def attach_text(name: str, text: str) -> None:
    _sink.attach(name, text)


def attach_json(name: str, data: Any) -> None:
    _sink.attach(name, json.dumps(data, indent=2), is_json=True)


def label(name: str, value: str) -> None:
    """A label of the running test's result (e.g. the Xen version it ran on)."""
    _sink.label(name, value)


def link(url: str, name: str) -> None:
    _sink.link(url, name)


def figure(name: str, value: float, unit: str) -> None:
    """A figure the running test measured (e.g. a migration's downtime): in its report's
    figures table and in the results database, compared with the baseline's."""
    _sink.figure(name, value, unit)


P = ParamSpec("P")
R = TypeVar("R")


def action(title: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A method that is a step of every procedure using it (like labgrid's @step):
    `title` is formatted with the instance, e.g. "xl create {self.name}"."""

    def decorate(method: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(method)
        def stepped(*args: P.args, **kwargs: P.kwargs) -> R:
            with step(title.format(self=args[0])):
                return method(*args, **kwargs)

        return stepped

    return decorate
