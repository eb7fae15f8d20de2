"""Headless Chromium driven over the DevTools protocol, with every request a page makes
recorded, and an HTTP proxy on loopback that refuses everything else.

Chromium itself phones home (component updates, network time, Google accounts) even
with its background networking switched off, so a proxy's log cannot tell the page's
requests from the browser's. The DevTools Network domain of the page's own target can;
the proxy only keeps all of it on this machine.
"""

from __future__ import annotations

import fcntl
import json
import os
import selectors
import shutil
import signal
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class RefusingProxy(socketserver.ThreadingTCPServer):
    """An HTTP proxy on loopback that answers every request 403 and forwards none."""

    daemon_threads = True

    def __init__(self) -> None:
        self.requests: list[str] = []  # request lines, "CONNECT host:443 HTTP/1.1"
        super().__init__(("127.0.0.1", 0), _Refuse)


class _Refuse(socketserver.StreamRequestHandler):
    server: RefusingProxy

    def handle(self) -> None:
        self.server.requests.append(self.rfile.readline(8192).decode(errors="replace").strip())
        self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")


@contextmanager
def refusing_proxy() -> Iterator[RefusingProxy]:
    proxy = RefusingProxy()
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(timeout=10)


class Page:
    """One loaded page: the URL of every request it made, and its text."""

    def __init__(self, requests: list[str], text: str) -> None:
        self.requests = requests
        self.text = text


def _pipe() -> tuple[int, int]:
    """A pipe whose ends are not fds 3 or 4, which the redirections for the child set."""
    ends = []
    for end in os.pipe():
        ends.append(fcntl.fcntl(end, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(end)
    return ends[0], ends[1]


class HeadlessChromium:
    """Chromium with --remote-debugging-pipe: DevTools messages on fds 3 and 4."""

    def __init__(self, binary: str, profile: Path, proxy: RefusingProxy) -> None:
        to_browser_read, self._to_browser = _pipe()
        self._from_browser, from_browser_write = _pipe()
        command = [
            binary, "--headless", "--disable-gpu", "--remote-debugging-pipe",
            f"--user-data-dir={profile}", "--no-first-run", "--disable-extensions",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-default-apps",
            # Loopback bypasses a proxy by Chromium's default rule; the rest is refused.
            f"--proxy-server=http://127.0.0.1:{proxy.server_address[1]}",
            "--window-size=1280,900", "about:blank",
        ]
        if os.geteuid() == 0:
            command.insert(1, "--no-sandbox")  # Chromium refuses to run as root otherwise
        # The protocol wants exactly fds 3 (commands in) and 4 (replies out); dash
        # cannot redirect fds above 9, bash can.
        self._process = subprocess.Popen(
            ["/bin/bash", "-c", f'exec "$0" "$@" 3<&{to_browser_read} 4>&{from_browser_write}',
             *command],
            pass_fds=(to_browser_read, from_browser_write), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._from_browser, selectors.EVENT_READ)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    def close(self) -> None:
        if self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()
        self._selector.close()
        os.close(self._to_browser)
        os.close(self._from_browser)

    def load(self, url: str, *, until_text: tuple[str, ...] = (),
             timeout: float = 30) -> Page:
        """Open url in a new tab; wait for its load event and, if given, the texts."""
        deadline = time.monotonic() + timeout
        target = self._call("Target.createTarget", {"url": "about:blank"},
                            deadline=deadline)["targetId"]
        session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True},
                             deadline=deadline)["sessionId"]
        self._call("Network.enable", session=session, deadline=deadline)
        self._call("Page.enable", session=session, deadline=deadline)
        self._events.clear()
        self._call("Page.navigate", {"url": url}, session=session, deadline=deadline)
        while not any(event.get("method") == "Page.loadEventFired"
                      and event.get("sessionId") == session for event in self._events):
            self._read(deadline)
        text = self._text(session, deadline)
        while not all(wanted in text for wanted in until_text):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not show {until_text} within {timeout} s")
            time.sleep(0.2)
            text = self._text(session, deadline)
        requests = [event["params"]["request"]["url"] for event in self._events
                    if event.get("method") == "Network.requestWillBeSent"
                    and event.get("sessionId") == session]
        return Page(requests, text)

    def _text(self, session: str, deadline: float) -> str:
        result = self._call("Runtime.evaluate", {"expression": "document.body.innerText",
                                                 "returnByValue": True},
                            session=session, deadline=deadline)
        return str(result["result"].get("value", ""))

    def _call(self, method: str, params: dict[str, Any] | None = None, *,
              session: str | None = None, deadline: float) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method,
                                   "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            for reply in self._read(deadline):
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return dict(reply["result"])

    def _read(self, deadline: float) -> list[dict[str, Any]]:
        """The next messages from the browser; events are also kept in self._events."""
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._selector.select(remaining):
                raise TimeoutError("Chromium did not answer on its DevTools pipe in time")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe (it exited)")
            self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\0")
        messages = [json.loads(raw) for raw in complete]
        self._events += [message for message in messages if "method" in message]
        return messages


@contextmanager
def headless_chromium(profile: Path, proxy: RefusingProxy) -> Iterator[HeadlessChromium]:
    binary = shutil.which("chromium")
    if binary is None:
        raise FileNotFoundError("Chromium is missing: `make test` installs it (apt: chromium)")
    browser = HeadlessChromium(binary, profile, proxy)
    try:
        yield browser
    finally:
        browser.close()
