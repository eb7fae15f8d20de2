"""Work on several hosts at once, one thread each, with a deadline on the join.

Most of what the harness does to a host is waiting on that machine: a boot, a guest's
boot. Work on different hosts therefore runs side by side. Every step inside has its
own deadline; the join has one too, so work that somehow never returns is reported
instead of blocking the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping


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
