"""Work on several hosts at once, one thread each, with a deadline on the join.

Most of what the harness does to a host is waiting on that machine: a boot, a guest's
boot. Work on different hosts therefore runs side by side. Every step inside has its
own deadline; the join has one too, so work that somehow never returns is reported
instead of blocking the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Protocol, TypeVar

from .health import HostBroken, HostHealth


class Unfinished(Exception):
    """Work still running at the deadline. Its thread is left running (a daemon), so
    what it acts on must be left alone."""


def side_by_side(calls: Mapping[str, Callable[[], object]], deadline: float,
                 purpose: str) -> dict[str, BaseException]:
    """Run each call in a thread of its own (named `purpose-key`) and wait for all of
    them at most `deadline` seconds in total; the errors by key (a key without one
    returned). A call still running then has an Unfinished error."""
    errors: dict[str, BaseException] = {}
    lock = threading.Lock()

    def run(key: str, call: Callable[[], object]) -> None:
        try:
            call()
        except BaseException as error:  # handed to the caller, which decides
            with lock:
                errors[key] = error

    threads = {key: threading.Thread(target=run, args=(key, call), name=f"{purpose}-{key}",
                                     daemon=True) for key, call in calls.items()}
    for thread in threads.values():
        thread.start()
    end = time.monotonic() + deadline
    for key, thread in threads.items():
        thread.join(max(0.0, end - time.monotonic()))
        if thread.is_alive():
            with lock:
                errors[key] = Unfinished(f"{purpose} {key} did not end within "
                                         f"{deadline:.0f} s")
    with lock:
        return dict(errors)


class WorkedOn(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def health(self) -> HostHealth: ...


def leave_unfinished_alone(errors: dict[str, BaseException], hosts: Mapping[str, WorkedOn],
                           what: Mapping[str, str], deadline: float) -> None:
    """The host of each call still running (`hosts` and `what` by the call's key) is
    broken: its thread may still act on it, so nothing else may. Its error becomes that
    HostBroken."""
    for key, host in hosts.items():
        if isinstance(errors.get(key), Unfinished):
            errors[key] = broken = HostBroken(
                f"{host.name}: {what[key]} did not end within {deadline:.0f} s; the host "
                "is left alone")
            host.health.fault(broken)


H = TypeVar("H", bound=WorkedOn)
T = TypeVar("T")


def on_each_host(hosts: Sequence[H], call: Callable[[H], T], deadline: float,
                 purpose: str) -> dict[str, T]:
    """`call(host)` for every host, side by side (a single host in this thread); the
    results by host name. Every call runs to its end, then the first error in the order
    of `hosts` is raised; a call still running after `deadline` s leaves its host broken."""
    if len(hosts) == 1:
        return {hosts[0].name: call(hosts[0])}
    results: dict[str, T] = {}

    def run(host: H) -> None:
        results[host.name] = call(host)

    errors = side_by_side({host.name: partial(run, host) for host in hosts}, deadline, purpose)
    leave_unfinished_alone(errors, {host.name: host for host in hosts},
                           {host.name: purpose for host in hosts}, deadline)
    for host in hosts:
        if host.name in errors:
            raise errors[host.name]
    return {host.name: results[host.name] for host in hosts}
